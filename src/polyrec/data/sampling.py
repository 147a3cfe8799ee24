"""Negative sampling for implicit-feedback training, vectorised over whole batches.

A user's *positives* are the stored entries of their row in a user x item CSR matrix; a negative
is any other item. Every sampler works on all requested users at once with numpy: positives are
indexed once as sorted int64 keys ``user * n_items + item``, and one ``np.searchsorted`` over
those keys answers a whole batch.

- :class:`UniformNegativeSampler` draws uniformly from each user's non-positive items *exactly*
  (no rejection): with the user's sorted positives ``p_0 < p_1 < ...`` and a draw
  ``r ~ U{0, .., n_items - |P_u| - 1}``, the ``r``-th non-positive item is ``r + k`` where
  ``k = #{m : p_m - m <= r}``, counted by one ``searchsorted`` on the shifted keys
  ``user * n_items + p_m - m``. Cost is one binary search per draw, even for users who have
  seen almost the whole catalogue.
- :class:`PopularityNegativeSampler` draws ``P(j) ∝ pop_j ** alpha`` and rejects positives in
  bulk: membership of all draws is one ``searchsorted``, and only the collisions are redrawn.
- :func:`bpr_triples` makes one epoch of ``(user, positive, negative)`` training triples with
  every training interaction used once, in random order (as RecBole and the LightGCN code
  train BPR; Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback",
  UAI 2009).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp

from polyrec.errors import PolyrecError

_MAX_REJECTION_ROUNDS = 1000


class NegativeSampler(ABC):
    """Draws items a user has not interacted with (stored entries of ``csr`` are positives).

    Args:
        csr: user x item matrix; its sparsity pattern (not its values) defines the positives.
        seed: seed or generator of the sampler's own random stream.
    """

    def __init__(self, csr: sp.spmatrix, seed: int | np.random.Generator = 0) -> None:
        m = sp.csr_matrix(csr, copy=True)
        m.sum_duplicates()  # also sorts each row's indices
        self.n_users, self.n_items = m.shape
        self.indptr = m.indptr.astype(np.int64)
        self.degree = np.diff(self.indptr)
        self.rows = np.repeat(np.arange(self.n_users, dtype=np.int64), self.degree)
        self.positives = m.indices.astype(np.int64)
        self.keys = self.rows * self.n_items + self.positives  # sorted: by row, then item
        self.rng = np.random.default_rng(seed)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array (broadcast shape of ``users`` and ``items``): is the pair a positive?"""
        query = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        if len(self.keys) == 0:
            return np.zeros(query.shape, bool)
        pos = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return self.keys[pos] == query

    def sample(
        self,
        users: np.ndarray,
        n_neg: int | None = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Negatives for ``users``: shape ``(B,)`` when ``n_neg`` is None, else ``(B, n_neg)``.

        ``rng`` draws from the caller's generator instead of the sampler's own stream.
        """
        users = np.asarray(users, dtype=np.int64)
        if users.ndim != 1:
            raise PolyrecError(f"users must be a 1-d array, got shape {users.shape}")
        if n_neg is not None and n_neg < 1:
            raise PolyrecError(f"n_neg must be >= 1, got {n_neg}")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            bad = users[(users < 0) | (users >= self.n_users)][0]
            raise PolyrecError(f"user index {bad} out of range [0, {self.n_users})")
        shape = users.shape if n_neg is None else (len(users), n_neg)
        rows = np.broadcast_to(users if n_neg is None else users[:, None], shape)
        return self._draw(rows, rng if rng is not None else self.rng)

    @abstractmethod
    def _draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative per entry of ``users`` (any shape, validated indices)."""


class UniformNegativeSampler(NegativeSampler):
    """Uniform over each user's non-positive items, exact and rejection-free (see module doc)."""

    def __init__(self, csr: sp.spmatrix, seed: int | np.random.Generator = 0) -> None:
        super().__init__(csr, seed)
        within = np.arange(len(self.positives), dtype=np.int64) - np.repeat(
            self.indptr[:-1], self.degree
        )
        # user * n_items + (p_m - m): still sorted, since p_m - m is non-decreasing in a row
        self.shifted_keys = self.keys - within

    def _draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n_free = self.n_items - self.degree[users]
        if users.size and n_free.min() < 1:
            bad = users[n_free < 1][0]
            raise PolyrecError(f"user {bad} interacted with every item: no negative to sample")
        r = rng.integers(0, n_free)
        below = np.searchsorted(self.shifted_keys, users * self.n_items + r, side="right")
        return r + below - self.indptr[users]


class PopularityNegativeSampler(NegativeSampler):
    """``P(j) ∝ pop_j ** alpha`` over non-positive items.

    ``pop`` is the number of users per item in ``csr``, or ``popularity`` when given (e.g.
    event counts, as the DARE / SIM data pipelines draw CTR negatives). ``alpha=0`` is uniform
    over the catalogue, ``alpha=1`` proportional to popularity, ``alpha=0.75`` the word2vec
    smoothing. Positives are rejected in bulk and redrawn.
    """

    def __init__(
        self,
        csr: sp.spmatrix,
        seed: int | np.random.Generator = 0,
        *,
        alpha: float = 1.0,
        popularity: np.ndarray | None = None,
    ) -> None:
        super().__init__(csr, seed)
        if alpha < 0:
            raise PolyrecError(f"popularity sampler alpha must be >= 0, got {alpha}")
        if popularity is None:
            pop = np.bincount(self.positives, minlength=self.n_items).astype(np.float64)
        else:
            pop = np.asarray(popularity, dtype=np.float64)
            if pop.shape != (self.n_items,) or (pop < 0).any():
                raise PolyrecError(
                    f"popularity must be {self.n_items} non-negative weights, one per item"
                )
        weight = pop**alpha
        if weight.sum() <= 0:
            raise PolyrecError("popularity sampler needs at least one interaction")
        self.probability = weight / weight.sum()
        self.cdf = np.cumsum(self.probability)
        # probability mass of each user's positives; a user whose positives hold all of it
        # (up to rounding) would never get a negative
        self.positive_mass = np.bincount(
            self.rows, weights=self.probability[self.positives], minlength=self.n_users
        )

    def _draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        full = self.positive_mass[users] > 1 - 1e-9
        if full.any():
            raise PolyrecError(
                f"user {users[full][0]} interacted with every item of non-zero popularity: "
                "no negative to sample"
            )
        flat_users = users.ravel()
        out = self._from_cdf(flat_users.size, rng)
        todo = np.flatnonzero(self.contains(flat_users, out))
        for _ in range(_MAX_REJECTION_ROUNDS):
            if not len(todo):
                return out.reshape(users.shape)
            out[todo] = self._from_cdf(len(todo), rng)
            todo = todo[self.contains(flat_users[todo], out[todo])]
        raise PolyrecError(
            f"popularity sampler: {len(todo)} draws still hit positives after "
            f"{_MAX_REJECTION_ROUNDS} rounds (users whose positives hold nearly all the mass)"
        )

    def _from_cdf(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(
            np.searchsorted(self.cdf, rng.random(size) * self.cdf[-1], side="right"),
            self.n_items - 1,
        )


def bpr_triples(
    csr: sp.spmatrix,
    rng: np.random.Generator,
    sampler: NegativeSampler | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of BPR triples: every stored ``(user, item)`` of ``csr`` once, in random order,
    with a negative from ``sampler`` (built on ``csr``; uniform by default), all drawn from
    ``rng``. Returns int64 arrays ``(users, positives, negatives)`` of length ``csr.nnz``.
    """
    m = sp.csr_matrix(csr)
    sampler = sampler if sampler is not None else UniformNegativeSampler(m)
    if (sampler.n_users, sampler.n_items) != m.shape:
        raise PolyrecError(
            f"sampler is for a {sampler.n_users}x{sampler.n_items} matrix, "
            f"not {m.shape[0]}x{m.shape[1]}"
        )
    users = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    # negatives drawn in user order: the samplers' lookups in the sorted positive keys then
    # stay in cache (Gowalla: 0.04 s instead of 0.24 s per epoch)
    negatives = sampler.sample(users, rng=rng)
    order = rng.permutation(m.nnz)
    return users[order], m.indices[order].astype(np.int64), negatives[order]


def user_uniform_triples(
    csr: sp.csr_matrix, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` BPR triples as the LightGCN / NGCF codes draw them: a user uniformly among those
    with a positive, one of their positives uniformly, a uniform non-positive item."""
    m = sp.csr_matrix(csr)
    degree = np.diff(m.indptr)
    active = np.flatnonzero(degree)
    users = active[rng.integers(0, len(active), size=n)]
    positives = m.indices[m.indptr[users] + rng.integers(0, degree[users])].astype(np.int64)
    negatives = UniformNegativeSampler(m).sample(users, rng=rng)
    return users, positives, negatives
