"""The preference-discerning benchmark of Mender (Paischer et al., TMLR 2025, Section 5),
built from item and preference embeddings for any dataset with generated preferences.

For every test user ``u`` with test item ``i`` (leave-one-out) the preferences are those
written from ``u``'s history before ``i`` (the window ends at the item before ``i``; in the
official code the preferences keyed by item ``j-2`` go with target ``j-1``), and the *matched*
preference is the positive one closest to ``i`` (:func:`matched_preferences`, the official
``match_preferences_to_items.py``; Mender trains and validates on the same choice).

- ``recommendation``: history of ``u`` + matched preference -> ``i``.
- ``sentiment``: the matched preference in positive form ("Prefers X") must retrieve ``i`` and
  its negative form ("Avoid X") must keep ``i`` out of the top K; the metric is the paper's
  ``combined_recall@K`` (both hold).
- ``fine`` / ``coarse`` steering: ``v`` is the test user whose item is the most (fine) / least
  (coarse) similar to ``i``, other than ``i`` itself; the sample keeps ``u``'s history but gives
  ``v``'s matched preference and expects ``v``'s item (the history says one thing, the
  preference another). Over all ``u`` this yields both crosswise samples of the paper.
- ``consolidation``: history of ``u`` + every preference accumulated over ``u``'s history
  (only some relevant; the first :data:`ACCUMULATED_LIMIT`) -> ``i``.

Simplifications (stated, not hidden): samples come from the test split only (the paper also
builds training/validation variants and tags seen/unseen preferences); the negative form of a
preference is made by a template (the paper has an LLM invert it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from polyrec.models.generative.preferences import is_negative

AXES = ("recommendation", "sentiment", "fine", "coarse", "consolidation")
ACCUMULATED_LIMIT = 20  # accumulated preferences in a history-consolidation context


@dataclass
class Sample:
    """One benchmark query: the history of ``history_user``, ``preferences`` in the context,
    the ``target`` item; ``avoid`` holds the negative-form preferences (sentiment axis)."""

    history_user: int
    preferences: list[str]
    target: int
    avoid: list[str] = field(default_factory=list)


def invert(preference: str) -> str:
    """The opposite-sentiment form of a preference: "Avoid X" <-> "Prefers X"."""
    text = preference.strip()
    if is_negative(text):
        rest = text.split(" ", 1)[1] if " " in text else ""
        return f"Prefers {rest}".strip()
    rest = text
    for verb in ("Prefers ", "Likes ", "Loves ", "Enjoys "):
        if rest.startswith(verb):
            rest = rest[len(verb) :]
    return f"Avoid {rest}"


def steering_partner(targets: np.ndarray, item_emb: np.ndarray, coarse: bool) -> np.ndarray:
    """Per sample ``s`` the sample whose target is the most (fine) / least (coarse) similar to
    ``targets[s]``, never one with the same item; ``-1`` when every target is the same item.
    Ties go to the lower index."""
    vec = item_emb[targets]
    sims = vec @ vec.T
    same = targets[:, None] == targets[None, :]
    sims = np.where(same, np.inf if coarse else -np.inf, sims)
    pick = sims.argmin(1) if coarse else sims.argmax(1)
    return np.where(same.all(1), -1, pick)


def matched_preferences(
    preferences: Sequence[Sequence[str]],
    targets: np.ndarray,
    item_emb: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
) -> list[str | None]:
    """Per sample the *matched* preference, as the official ``match_preferences_to_items.py``
    picks it: among the positive ones of ``preferences[s]`` (or, when all are negative, their
    inverted forms, :func:`invert`) the one whose embedding has the largest dot product with
    the target item's ``item_emb`` row (first on ties); ``None`` when there is none. A negative
    preference never describes the item it is matched to. ``embed`` maps preference texts to
    vectors in the item embedding's space."""
    candidates = [positive_candidates(p) for p in preferences]
    texts = sorted({t for c in candidates for t in c})
    vecs = embed(texts) if texts else np.zeros((0, item_emb.shape[1]), np.float32)
    lookup = {t: i for i, t in enumerate(texts)}
    matched: list[str | None] = []
    for cands, item in zip(candidates, np.asarray(targets).tolist(), strict=True):
        if not cands:
            matched.append(None)
            continue
        sims = vecs[[lookup[p] for p in cands]] @ item_emb[item]
        matched.append(cands[int(sims.argmax())])
    return matched


def positive_candidates(preferences: Sequence[str]) -> list[str]:
    """The positive preferences, else (all negative) their inverted forms."""
    positive = [p for p in preferences if not is_negative(p)]
    return positive or [invert(p) for p in preferences]


def build_benchmark(
    users: np.ndarray,
    targets: np.ndarray,
    preferences: Sequence[Sequence[str]],
    accumulated: Sequence[Sequence[str]],
    item_emb: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
) -> dict[str, list[Sample]]:
    """Samples per axis (see module docstring) from test ``users``, their ``targets``, the
    ``preferences`` written just before the target and all ``accumulated`` ones up to there
    (at most :data:`ACCUMULATED_LIMIT` are kept); ``embed`` maps preference texts to vectors
    in the item embedding's space."""
    matched = matched_preferences(preferences, targets, item_emb, embed)
    has = np.array([m is not None for m in matched])
    out: dict[str, list[Sample]] = {axis: [] for axis in AXES}
    for s in np.flatnonzero(has):
        u, item, pref = int(users[s]), int(targets[s]), str(matched[s])
        out["recommendation"].append(Sample(u, [pref], item))
        out["sentiment"].append(Sample(u, [pref], item, avoid=[invert(pref)]))
        out["consolidation"].append(Sample(u, list(accumulated[s])[:ACCUMULATED_LIMIT], item))
    idx = np.flatnonzero(has)
    for axis, coarse in (("fine", False), ("coarse", True)):
        partner = steering_partner(targets[idx], item_emb, coarse)
        for s, p in zip(idx.tolist(), partner.tolist(), strict=True):
            if p >= 0:
                v = idx[p]
                out[axis].append(Sample(int(users[s]), [str(matched[v])], int(targets[v])))
    return out


def rank_metrics(ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K and NDCG@K of one target per row among ``ranked`` item rows (``-1`` = empty)."""
    hit = ranked == targets[:, None]
    found = hit.any(1)
    rank = np.where(found, hit.argmax(1), np.iinfo(np.int64).max)
    out: dict[str, float] = {}
    for k in ks:
        inside = rank < k
        out[f"recall@{k}"] = float(inside.mean()) if len(rank) else 0.0
        gain = np.where(inside, 1.0 / np.log2(np.minimum(rank, k) + 2.0), 0.0)
        out[f"ndcg@{k}"] = float(gain.mean()) if len(rank) else 0.0
    return out


def combined_recall(
    ranked_pos: np.ndarray, ranked_neg: np.ndarray, targets: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """``combined_recall@K``: the target is in the top K under the positive preference and not
    under the negative one (Mender's sentiment-following metric)."""
    out = {}
    for k in ks:
        pos = (ranked_pos[:, :k] == targets[:, None]).any(1)
        neg = (ranked_neg[:, :k] == targets[:, None]).any(1)
        out[f"combined_recall@{k}"] = float((pos & ~neg).mean()) if len(targets) else 0.0
    return out
