"""Scoring kernels shared by ``recommend`` and the evaluator: inner-product scores on the
faster CPU BLAS, masking of seen items, and deterministic batched top-k."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

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


@functools.cache
def numpy_blas_is_faster() -> bool:
    """Whether float32 matrix products should go through numpy's OpenBLAS instead of torch.

    PyTorch's x86 wheels multiply with MKL, whose fast kernels are dispatched on Intel CPUs
    only: on this project's AMD EPYC machine torch's ``sgemm`` reaches ~21 GFLOP/s per core,
    numpy's OpenBLAS ~50-64 (``benchmarks/README.md``, "Scoring kernel"). Decided once per
    process from the CPU vendor, so scores never depend on a timing race.
    """
    if not torch.backends.mkl.is_available() or platform.machine() not in ("x86_64", "AMD64"):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("vendor_id"):
            return "GenuineIntel" not in line
    return False


def inner_products(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``queries @ items.T`` for scoring: every item's score for each query row.

    Without autograd, float32 CPU tensors of a single-threaded process (``torch.get_num_threads()
    == 1``, e.g. ``OMP_NUM_THREADS=1``) are multiplied by numpy's BLAS where it is the faster one
    (:func:`numpy_blas_is_faster`); anything else (GPU, gradients, other dtypes, several threads)
    by torch. With several threads, OpenBLAS's worker pool keeps spinning after the product
    while torch's OpenMP pool masks and ranks the scores on the same cores: a 1M-interaction
    evaluation on 2 threads took 2.2 s through numpy against 1.85 s through torch.
    """
    if (
        queries.device.type == items.device.type == "cpu"
        and queries.dtype == items.dtype == torch.float32
        and not (torch.is_grad_enabled() and (queries.requires_grad or items.requires_grad))
        and torch.get_num_threads() == 1
        and numpy_blas_is_faster()
    ):
        return torch.from_numpy(np.matmul(queries.detach().numpy(), items.detach().numpy().T))
    return queries @ items.T


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
