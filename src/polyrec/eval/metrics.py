"""Top-K ranking metrics from a hit matrix, per user, for every K at once.

Input is ``hits`` (B, L) bool, ``hits[b, r]`` = the item at rank ``r + 1`` of user ``b``'s ranked
list is relevant, and ``n_relevant`` (B,) = how many relevant (test) items the user has. All
cut-offs are read from one top-``max(ks)`` list through cumulative sums, so the cost is
O(B x max K) whatever the number of cut-offs.

Definitions (binary relevance, ``hits@K`` = relevant items in the first K, ``|R|`` =
``n_relevant``), as in RecBole (Zhao et al., CIKM 2021) and the NGCF / LightGCN evaluation code
(Wang et al., SIGIR 2019; He et al., SIGIR 2020):

- ``recall@K    = hits@K / |R|``  (not ``/ min(|R|, K)``: a user with more than K relevant
  items cannot reach 1);
- ``ndcg@K      = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<=K} hit_r / log2(r + 1)`` and IDCG the
  DCG of ``min(|R|, K)`` hits at the top (Jarvelin & Kekalainen, TOIS 2002);
- ``hr@K        = 1 if hits@K > 0 else 0``;
- ``mrr@K       = 1 / rank of the first hit if it is within K, else 0``;
- ``precision@K = hits@K / K``;
- ``map@K       = sum_{r<=K} hit_r * precision@r / min(|R|, K)``.

A list shorter than K (a catalogue smaller than K, or fewer than K unmasked candidates) counts
as padded with non-relevant items: ``precision@K`` still divides by K and ``ndcg@K`` / ``map@K``
still normalise by ``min(|R|, K)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polyrec.errors import PolyrecError

RANKING_METRICS: tuple[str, ...] = ("recall", "ndcg", "hr", "mrr", "precision", "map")


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validated, de-duplicated, ascending cut-offs."""
    out = tuple(sorted({int(k) for k in ks}))
    if not out or out[0] < 1:
        raise PolyrecError(f"ks must be a non-empty list of integers >= 1, got {list(ks)}")
    return out


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """Validated lower-case metric names in the given order."""
    out = tuple(dict.fromkeys(m.lower() for m in metrics))
    unknown = [m for m in out if m not in RANKING_METRICS]
    if unknown:
        raise PolyrecError(f"unknown metric {unknown[0]!r}; known: {', '.join(RANKING_METRICS)}")
    return out


def ranking_metrics(
    hits: np.ndarray | torch.Tensor,
    n_relevant: np.ndarray | torch.Tensor,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
) -> dict[str, np.ndarray]:
    """Per-user metrics ``{"recall@10": (B,) float64, ...}`` from a hit matrix.

    Args:
        hits: (B, L) bool, rank-ordered; L may be smaller than ``max(ks)`` (padded with misses).
        n_relevant: (B,) number of relevant items per user, each >= 1 and >= the user's hits.
        ks: cut-offs.
        metrics: names among :data:`RANKING_METRICS`.
    """
    ks, metrics = check_ks(ks), check_metrics(metrics)
    h = (hits.cpu().numpy() if isinstance(hits, torch.Tensor) else np.asarray(hits)).astype(bool)
    n_rel = np.asarray(
        n_relevant.cpu().numpy() if isinstance(n_relevant, torch.Tensor) else n_relevant,
        dtype=np.float64,
    )
    if h.ndim != 2 or n_rel.shape != (h.shape[0],):
        raise PolyrecError(
            f"hits must be (B, K) and n_relevant (B,), got {h.shape} and {n_rel.shape}"
        )
    if n_rel.size and n_rel.min() < 1:
        raise PolyrecError("n_relevant must be >= 1 for every user (skip users with no test item)")
    max_k = ks[-1]
    if h.shape[1] < max_k:
        h = np.pad(h, ((0, 0), (0, max_k - h.shape[1])))
    h = h[:, :max_k]
    ranks = np.arange(1, max_k + 1, dtype=np.float64)
    cum_hits = np.cumsum(h, axis=1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    # idcg[n] = DCG of n hits at the top; indexed by min(|R|, K).
    idcg = np.concatenate(([0.0], np.cumsum(discount)))
    dcg = np.cumsum(h * discount, axis=1)
    ap = np.cumsum(h * (cum_hits / ranks), axis=1)  # sum of precision@r over hit ranks r
    first = np.where(h.any(axis=1), h.argmax(axis=1), max_k)  # 0-based rank of first hit

    out: dict[str, np.ndarray] = {}
    for m in metrics:
        for k in ks:
            hits_k = cum_hits[:, k - 1]
            ideal = np.minimum(n_rel, k)
            if m == "recall":
                val = hits_k / n_rel
            elif m == "ndcg":
                val = dcg[:, k - 1] / idcg[ideal.astype(np.int64)]
            elif m == "hr":
                val = (hits_k > 0).astype(np.float64)
            elif m == "mrr":
                val = np.where(first < k, 1.0 / (first + 1.0), 0.0)
            elif m == "precision":
                val = hits_k / k
            else:  # map
                val = ap[:, k - 1] / ideal
            out[f"{m}@{k}"] = val
    return out
