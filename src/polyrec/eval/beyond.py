"""Beyond-accuracy metrics of top-K lists, accumulated across evaluation batches.

- ``coverage@K``: distinct items recommended to anyone / catalogue size (catalogue coverage,
  Ge, Delgado-Battenfeld & Jannach, RecSys 2010).
- ``novelty@K``: mean self-information ``-log2(pop_i / |U|)`` of the recommended items, where
  ``pop_i`` = training users who interacted with item i and ``|U|`` = users with a training
  interaction (Zhou et al., PNAS 2010). Items unseen in training use ``pop_i = 1`` (the
  largest finite value, ``log2 |U|``). Per user, then averaged.
- ``gini@K``: Gini index of how often each item of the catalogue is recommended (0 = every item
  equally often, towards 1 = a few items take all slots; Fleder & Hosanagar, Management
  Science 2009; RecBole's ``GiniIndex``).
- ``ild@K``: intra-list diversity, the mean over pairs of a user's list of ``1 - cos(v_i, v_j)``
  for given item feature vectors (Ziegler et al., WWW 2005). Lists with fewer than two items
  score 0; an all-zero vector has cosine 0 with everything.

Only real recommendations count: slots flagged invalid (masked items, filled in only because a
user has fewer than K candidates) are left out of every statistic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from polyrec.errors import PolyrecError

BEYOND_METRICS: tuple[str, ...] = ("coverage", "novelty", "gini", "ild")


def self_information(train: sp.csr_matrix) -> np.ndarray:
    """``-log2(pop_i / |U|)`` per item from a binary user x item training matrix (float64)."""
    pop = np.bincount(train.indices, minlength=train.shape[1])
    n_users = max(1, int((np.diff(train.indptr) > 0).sum()))
    return -np.log2(np.maximum(pop, 1) / n_users)


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts over the whole catalogue (0.0 when all are zero)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(c), c.sum()
    if n == 0 or total == 0:
        return 0.0
    j = np.arange(1, n + 1)
    return float(((2 * j - n - 1) * c).sum() / (n * total))


def intra_list_diversity(
    items: np.ndarray, valid: np.ndarray, unit_vectors: np.ndarray, ks: Sequence[int]
) -> dict[int, np.ndarray]:
    """Per-user ILD@K for each K from rank-ordered ``items`` (B, L) and ``valid`` (B, L).

    ``unit_vectors`` rows are L2-normalised (or zero). Uses
    ``sum_{i != j} cos_ij = ||sum_i v_i||^2 - sum_i ||v_i||^2``: O(B x K x d), no K x K matrix.
    """
    emb = unit_vectors[items] * valid[..., None]
    sq_norms = np.einsum("bkd,bkd->bk", emb, emb, dtype=np.float64)
    out = {}
    for k in ks:
        s = emb[:, :k].sum(axis=1, dtype=np.float64)
        n = valid[:, :k].sum(axis=1).astype(np.float64)
        pair_sim = np.einsum("bd,bd->b", s, s) - sq_norms[:, :k].sum(axis=1)
        pairs = n * (n - 1)
        out[k] = np.where(pairs > 0, 1.0 - pair_sim / np.maximum(pairs, 1.0), 0.0)
    return out


class BeyondAccuracy:
    """Accumulates coverage / novelty / Gini / ILD over batches of top-K lists.

    Args:
        ks: cut-offs (ascending).
        train: binary user x item training matrix (for popularity / novelty).
        item_vectors: optional (n_items, d) item features; enables ``ild@K``.
    """

    def __init__(
        self,
        ks: Sequence[int],
        train: sp.csr_matrix,
        item_vectors: np.ndarray | None = None,
    ) -> None:
        self.ks = tuple(ks)
        self.n_items = train.shape[1]
        self.info = self_information(train)
        self.counts = np.zeros((len(self.ks), self.n_items), dtype=np.int64)
        self.unit: np.ndarray | None = None
        if item_vectors is not None:
            vec = np.asarray(item_vectors, dtype=np.float32)
            if vec.ndim != 2 or vec.shape[0] != self.n_items:
                raise PolyrecError(
                    f"item_vectors must have shape (n_items={self.n_items}, d), got {vec.shape}"
                )
            norms = np.linalg.norm(vec, axis=1, keepdims=True)
            self.unit = vec / np.where(norms > 0, norms, 1.0)

    @property
    def names(self) -> tuple[str, ...]:
        """Metric names this accumulator reports."""
        return BEYOND_METRICS if self.unit is not None else BEYOND_METRICS[:3]

    def update(self, items: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Add a batch of rank-ordered lists (B, L); returns per-user ``novelty@K`` / ``ild@K``."""
        per_user: dict[str, np.ndarray] = {}
        info = self.info[items] * valid
        cum_info = np.cumsum(info, axis=1)
        cum_valid = np.cumsum(valid, axis=1)
        for j, k in enumerate(self.ks):
            last = min(k, items.shape[1]) - 1
            self.counts[j] += np.bincount(items[:, :k][valid[:, :k]], minlength=self.n_items)
            per_user[f"novelty@{k}"] = cum_info[:, last] / np.maximum(cum_valid[:, last], 1)
        if self.unit is not None:
            for k, val in intra_list_diversity(items, valid, self.unit, self.ks).items():
                per_user[f"ild@{k}"] = val
        return per_user

    def summary(self) -> dict[str, float]:
        """Catalogue-level ``coverage@K`` and ``gini@K`` over everything added so far."""
        out: dict[str, float] = {}
        for j, k in enumerate(self.ks):
            out[f"coverage@{k}"] = float((self.counts[j] > 0).sum() / self.n_items)
            out[f"gini@{k}"] = gini(self.counts[j])
        return out
