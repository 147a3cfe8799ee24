"""``synthetic``: realistic interaction data of any size, generated offline and reproducibly.

The generative story, vectorised end to end (no Python loop over users or interactions):

1. Items belong to categories; an item's latent vector is its category centroid plus noise,
   and its base popularity follows a Zipf law (a few blockbusters, a long tail).
2. Each user has a taste vector at the start and one at the end of their history; the taste at
   relative time ``t`` moves linearly between them (``drift`` sets how far), so recent behaviour
   predicts the future better than old behaviour.
3. History lengths are heavy-tailed (log-normal, at least ``min_history``).
4. Each interaction draws candidates by popularity and picks one with probability
   proportional to ``exp(taste . item / temperature)`` (popularity proposal, taste choice).
5. Ratings 1-5 grow with the user-item affinity; review text carries a sentiment that agrees
   with the rating; items get titles and category names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from polyrec.data.dataset import Dataset, IdMap
from polyrec.errors import PolyrecError

_ADJECTIVES = np.array(
    "classic compact deluxe essential gentle bold vintage smart organic premium "
    "travel everyday silky rugged bright quiet".split()
)
_NOUNS = np.array("kit set bundle edition pack collection series model box sampler".split())
_CATEGORIES = np.array(
    "skincare haircare fragrance makeup tools outdoor fitness camping cycling toys "
    "puzzles games books music kitchen garden office audio lighting storage".split()
)
_REVIEWS = np.array(
    [
        "",
        "Terrible, it broke quickly and I regret buying this",
        "Disappointed, it did not work as described",
        "It is okay, nothing special about this",
        "I like it, good value and works well",
        "I love it, excellent quality and exactly what I wanted",
    ]
)
_START = 1_577_836_800.0  # 2020-01-01 UTC
_SPAN = 3 * 365 * 86_400.0


def make_synthetic(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    *,
    n_categories: int = 10,
    n_factors: int = 16,
    zipf: float = 1.0,
    drift: float = 0.5,
    temperature: float = 0.3,
    min_history: int = 5,
    reviews: bool = True,
    seed: int = 0,
) -> Dataset:
    """Generate a dataset; interactions are unique (user, item) pairs, about ``n_interactions``.

    Args:
        n_users, n_items: id-space sizes (every user gets at least ``min_history`` events).
        n_interactions: target number of interactions (capped by what the users can hold).
        n_categories: item categories (names cycle through a fixed vocabulary).
        n_factors: dimension of the latent taste space.
        zipf: exponent of the item popularity law (0 = uniform).
        drift: how far tastes move over a user's history (0 = static).
        temperature: lower = choices follow taste more sharply.
        reviews: add ``interaction_data["review"]`` with rating-consistent sentiment.
        seed: the only source of randomness.
    """
    if min(n_users, n_items, n_interactions, n_categories, n_factors) < 1:
        raise PolyrecError("synthetic sizes must all be >= 1")
    if n_items < min_history:
        raise PolyrecError(f"synthetic needs n_items >= min_history ({min_history})")
    rng = np.random.default_rng(seed)

    # 1. items: categories, latent vectors, Zipf popularity over a random permutation
    category = rng.integers(0, n_categories, n_items)
    centroids = rng.normal(size=(n_categories, n_factors))
    item_vec = centroids[category] + 0.5 * rng.normal(size=(n_items, n_factors))
    item_vec /= np.linalg.norm(item_vec, axis=1, keepdims=True)
    pop = 1.0 / np.arange(1, n_items + 1) ** zipf
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()

    # 2. users: start and end tastes, each anchored on a favourite category
    fav = rng.choice(
        n_categories, size=n_users, p=np.bincount(category, minlength=n_categories) / n_items
    )
    taste0 = centroids[fav] + 0.7 * rng.normal(size=(n_users, n_factors))
    taste1 = (1 - drift) * taste0 + drift * (
        centroids[rng.integers(0, n_categories, n_users)]
        + 0.7 * rng.normal(size=(n_users, n_factors))
    )

    # 3. heavy-tailed history lengths summing to about n_interactions
    raw = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    budget = max(n_interactions - min_history * n_users, 0)
    lengths = min_history + np.floor(raw / raw.sum() * budget).astype(np.int64)
    lengths = np.minimum(lengths, n_items // 2 if n_items >= 2 * min_history else n_items)
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    rel_t = rng.random(len(users))
    order = np.lexsort((rel_t, users))
    rel_t = rel_t[order]

    # 4. choices: popularity-proposed candidates, taste-weighted pick; repeated (user, item)
    #    pairs are redrawn a few rounds, and the few left after that are dropped
    items = np.empty(len(users), np.int64)
    affinity = np.empty(len(users), np.float64)
    todo = np.arange(len(users))
    for _ in range(8):
        _choose(
            todo, users, rel_t, taste0, taste1, item_vec, pop, temperature, rng, items, affinity
        )
        key = users * n_items + items
        first = np.zeros(len(key), bool)
        first[np.unique(key, return_index=True)[1]] = True
        todo = np.flatnonzero(~first)
        if len(todo) == 0:
            break
    keep = np.flatnonzero(first)
    users, items, rel_t, affinity = users[keep], items[keep], rel_t[keep], affinity[keep]

    # 5. ratings, timestamps, text
    z = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    ratings = np.clip(np.rint(3.4 + 1.1 * z + 0.6 * rng.normal(size=len(z))), 1, 5)
    user_start = _START + rng.random(n_users) * _SPAN * 0.5
    user_span = _SPAN * 0.5 * rng.beta(2, 2, n_users) + 86_400.0
    timestamps = np.floor(user_start[users] + rel_t * user_span[users])

    n_voc = len(_CATEGORIES)
    cat_names = np.array(
        [
            _CATEGORIES[c % n_voc] + (f"-{c // n_voc}" if c >= n_voc else "")
            for c in range(n_categories)
        ]
    )
    title_rng = np.random.default_rng(seed + 1)
    titles = np.char.add(
        np.char.add(_ADJECTIVES[title_rng.integers(0, len(_ADJECTIVES), n_items)], " "),
        np.char.add(
            np.char.add(cat_names[category], " "),
            _NOUNS[title_rng.integers(0, len(_NOUNS), n_items)],
        ),
    )
    titles = np.char.add(np.char.add(titles, " #"), np.arange(n_items).astype(str))
    item_data = pd.DataFrame({"title": titles.astype(object), "category": cat_names[category]})
    interaction_data = None
    if reviews:
        interaction_data = pd.DataFrame(
            {"review": _REVIEWS[ratings.astype(np.int64)].astype(object)}
        )
    return Dataset(
        users=users,
        items=items,
        timestamps=timestamps,
        ratings=ratings.astype(np.float32),
        user_ids=IdMap(np.arange(n_users, dtype=np.int64)),
        item_ids=IdMap(np.arange(n_items, dtype=np.int64)),
        item_data=item_data,
        item_vectors={"latent": item_vec.astype(np.float32)},
        interaction_data=interaction_data,
        name="synthetic",
    )


def _choose(
    idx: np.ndarray,
    users: np.ndarray,
    rel_t: np.ndarray,
    taste0: np.ndarray,
    taste1: np.ndarray,
    item_vec: np.ndarray,
    pop: np.ndarray,
    temperature: float,
    rng: np.random.Generator,
    items: np.ndarray,
    affinity: np.ndarray,
) -> None:
    """Draw the item of interactions ``idx`` in place (chunked to bound memory)."""
    n_cand, chunk = 32, 200_000
    for start in range(0, len(idx), chunk):
        sl = idx[start : start + chunk]
        u, t = users[sl], rel_t[sl, None]
        taste = (1 - t) * taste0[u] + t * taste1[u]
        taste /= np.linalg.norm(taste, axis=1, keepdims=True)
        cand = rng.choice(len(pop), size=(len(u), n_cand), p=pop)
        logits = np.einsum("bd,bcd->bc", taste, item_vec[cand]) / temperature
        pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        rows = np.arange(len(u))
        items[sl] = cand[rows, pick]
        affinity[sl] = logits[rows, pick] * temperature
