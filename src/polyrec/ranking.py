"""Masked batched top-k: the one implementation behind ``recommend`` and the evaluator."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

# Users per score block: ~4M floats (16 MB). glibc serves blocks up to its mmap threshold
# (32 MB at most) from reused heap memory; bigger ones are mmapped and page-faulted afresh every
# batch, which costs more than the scoring itself (Gowalla Pop evaluation: 19.7 s with 4,096
# users per batch, 5.8 s with 102).
SCORE_BLOCK_FLOATS = 1 << 22


def auto_batch_size(n_items: int) -> int:
    """Users to score at once so that a ``(users, n_items)`` block stays near 16 MB."""
    return max(1, min(4096, SCORE_BLOCK_FLOATS // max(n_items, 1)))


def mask_seen_(scores: torch.Tensor, seen: sp.csr_matrix | None, rows: np.ndarray) -> torch.Tensor:
    """Set ``scores[b, i] = -inf`` where ``seen[rows[b], i]`` is stored; in place, returns it."""
    if seen is None:
        return scores
    sub = seen[rows]
    if sub.nnz:
        r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        scores[torch.from_numpy(r), torch.from_numpy(sub.indices.astype(np.int64))] = -torch.inf
    return scores


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` (clipped to the number of columns), sorted descending; ties by lower index."""
    k = min(k, scores.shape[1])
    vals, idx = torch.topk(scores, k, dim=1, sorted=False)
    # torch.topk's order among equal scores is unspecified: order candidates by index, then
    # stable-sort by score, so equal scores rank the lower item index first.
    by_index = torch.argsort(idx, dim=1)
    vals, idx = torch.gather(vals, 1, by_index), torch.gather(idx, 1, by_index)
    order = torch.argsort(vals, dim=1, descending=True, stable=True)
    return torch.gather(vals, 1, order), torch.gather(idx, 1, order)
