"""Scoring kernels shared by ``recommend`` and the evaluator: inner-product scores on the
faster CPU BLAS, masking of seen items, deterministic batched top-k, and the exact top-k of
inner products that skips items whose norm rules them out (:class:`NormSortedItems`)."""

from __future__ import annotations

import functools
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

# Users per score block: ~4M floats (16 MB). glibc serves blocks up to its mmap threshold
# (32 MB at most) from reused heap memory; bigger ones are mmapped and page-faulted afresh every
# batch, which costs more than the scoring itself (Gowalla Pop evaluation: 19.7 s with 4,096
# users per batch, 5.8 s with 102).
SCORE_BLOCK_FLOATS = 1 << 22


# Users ranked at once by :class:`NormSortedItems`, whose memory the block budget bounds.
FACTOR_BATCH_USERS = 4096


def auto_batch_size(n_items: int) -> int:
    """Users to score at once so that a ``(users, n_items)`` block stays near 16 MB."""
    return max(1, min(FACTOR_BATCH_USERS, SCORE_BLOCK_FLOATS // max(n_items, 1)))


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
    """``queries @ items.T``: every item's score for each query row (``queries`` may have
    leading dimensions), differentiable.

    Float32 CPU tensors of a single-threaded process (``torch.get_num_threads() == 1``, e.g.
    ``OMP_NUM_THREADS=1``) are multiplied by numpy's BLAS where it is the faster one
    (:func:`numpy_blas_is_faster`), the gradient's two products included (:class:`_BlasProduct`);
    anything else (GPU, other dtypes, several threads) by torch. With several threads,
    OpenBLAS's worker pool keeps spinning after the product while torch's OpenMP pool works on
    the same cores: a 1M-interaction evaluation on 2 threads took 2.2 s through numpy against
    1.85 s through torch.
    """
    if (
        queries.device.type == items.device.type == "cpu"
        and queries.dtype == items.dtype == torch.float32
        and torch.get_num_threads() == 1
        and numpy_blas_is_faster()
    ):
        if torch.is_grad_enabled() and (queries.requires_grad or items.requires_grad):
            return _BlasProduct.apply(queries, items)
        return _numpy_product(queries.detach(), items.detach())
    return queries @ items.T


def _numpy_product(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.matmul(queries.numpy(), items.numpy().T))


class _BlasProduct(torch.autograd.Function):
    """``queries @ items.T`` with forward and backward products through numpy's BLAS."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, queries: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(queries, items)
        return _numpy_product(queries.detach(), items.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        queries, items = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad.detach().reshape(-1, grad.shape[-1]).numpy()
        q = queries.detach().reshape(-1, queries.shape[-1]).numpy()
        need_q, need_items = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_q = grad_items = None
        if need_q:
            grad_q = torch.from_numpy(g @ items.detach().numpy()).view(queries.shape)
        if need_items:
            grad_items = torch.from_numpy(g.T @ q)
        return grad_q, grad_items


def seen_entries(seen: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(b, i)`` int64 arrays of the entries stored in ``seen[rows[b], i]``."""
    sub = seen[rows]
    r = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(sub.indptr))
    return r, sub.indices.astype(np.int64)


def mask_seen_(scores: torch.Tensor, seen: sp.csr_matrix | None, rows: np.ndarray) -> torch.Tensor:
    """Set ``scores[b, i] = -inf`` where ``seen[rows[b], i]`` is stored; in place, returns it."""
    if seen is None:
        return scores
    r, c = seen_entries(seen, rows)
    if len(r):
        scores[torch.from_numpy(r), torch.from_numpy(c)] = -torch.inf
    return scores


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` (clipped to the number of columns), sorted descending; ties by lower index."""
    k = min(k, scores.shape[1])
    return _rank(*torch.topk(scores, k, dim=1, sorted=False))


def _rank(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates ``(vals, idx)`` of each row sorted by value descending, ties by lower index."""
    # torch.topk's order among equal scores is unspecified: order candidates by index, then
    # stable-sort by score, so equal scores rank the lower item index first.
    by_index = torch.argsort(idx, dim=1)
    vals, idx = torch.gather(vals, 1, by_index), torch.gather(idx, 1, by_index)
    order = torch.argsort(vals, dim=1, descending=True, stable=True)
    return torch.gather(vals, 1, order), torch.gather(idx, 1, order)


# A dot product computed in float32 may exceed |q| |v| (the Cauchy-Schwarz bound computed in
# float32) by rounding: about d * 2^-24 of it for d dimensions. The bound is widened by more.
BOUND_SLACK = 1e-3


class NormSortedItems:
    """Item vectors sorted by decreasing norm, for the exact top-k of inner products.

    ``q . v <= |q| |v|`` (Cauchy-Schwarz), so once a query's k-th best score exceeds ``|q|``
    times the largest norm among the items not yet scored, none of them can enter its top-k.
    :meth:`topk` scores the items in blocks of decreasing norm: a first block of
    ``max(k, first_block)`` items gives each query a k-th best score, and every later block, as
    wide as ``block_floats`` scores allow for the queries still open, only contributes the
    scores above it. A query closes as soon as its top-k is settled. The result is the one
    scoring every item and taking :func:`topk` gives (up to which of several items tied at the
    k-th score makes the cut): the bound errs on the side of scoring more (``BOUND_SLACK``), a
    query with fewer than ``k`` unmasked items scores them all, and non-finite vectors are
    scored in full, in blocks, so that NaN reaches the caller (as are queries whose scores fit
    in one block: skipping items pays only beyond that). On trained embeddings popular items
    have the largest norms and most queries settle early (BPR-MF on Gowalla: a median of 2% of
    the items scored; ``benchmarks/README.md``, "Scoring kernel"). ``scored`` counts the
    ``(query, item)`` scores computed so far.
    """

    def __init__(
        self, items: torch.Tensor, block_floats: int = SCORE_BLOCK_FLOATS, first_block: int = 256
    ) -> None:
        self.items = items
        self.block_floats, self.first_block = block_floats, first_block
        self.scored = 0

    @functools.cached_property
    def _sorted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(order, position, sorted items, sorted norms)``, sorted on first use."""
        norms = self.items.norm(dim=1)
        order = torch.argsort(norms, descending=True, stable=True)
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order), device=order.device)
        return order, position, self.items[order].contiguous(), norms[order]

    def topk(
        self,
        queries: torch.Tensor,
        k: int,
        exclude: Sequence[sp.csr_matrix] = (),
        rows: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top ``k`` items (indices into the unsorted item rows) of ``queries @ items.T``,
        the items stored in ``exclude[m][rows[b]]`` masked for query ``b``: ``(values, items)``
        as :func:`topk` returns them for the masked score matrix."""
        n, device = len(self.items), queries.device
        k = min(k, n)
        query_norms = queries.norm(dim=1)
        if k == 0 or len(queries) * n <= self.block_floats:
            return self._dense_topk(queries, k, exclude, rows)
        if not _finite(query_norms, self._sorted[3]):
            step = max(1, self.block_floats // n)
            parts = [
                self._dense_topk(
                    queries[s : s + step], k, exclude, None if rows is None else rows[s : s + step]
                )
                for s in range(0, len(queries), step)
            ]
            return torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])
        order, position, items, norms = self._sorted
        mask_q, mask_pos = _masked_positions(exclude, rows, position)
        vals = torch.empty((len(queries), k), dtype=queries.dtype, device=device)
        idx = torch.empty((len(queries), k), dtype=torch.long, device=device)
        active = torch.arange(len(queries), device=device)
        start = 0
        while len(active) and start < n:
            width = self.first_block if start == 0 else self.block_floats // len(active)
            end = min(n, start + max(k, width))
            scores = inner_products(queries[active], items[start:end])
            self.scored += scores.numel()
            if mask_q is not None and mask_pos is not None:
                local = torch.full((len(queries),), -1, dtype=torch.long, device=device)
                local[active] = torch.arange(len(active), device=device)
                hit = (mask_pos >= start) & (mask_pos < end) & (local[mask_q] >= 0)
                scores[local[mask_q[hit]], mask_pos[hit] - start] = -torch.inf
            if start == 0:
                best, pick = torch.topk(scores, k, dim=1)
                vals[active], idx[active] = best, pick
            else:
                best = _merge_above_kth(vals, idx, active, scores, start)
            if end < n:
                bound = query_norms[active] * norms[end] * (1 + BOUND_SLACK)
                active = active[~(best.min(dim=1).values > bound)]
            start = end
        return _rank(vals, order[idx])

    def _dense_topk(
        self,
        queries: torch.Tensor,
        k: int,
        exclude: Sequence[sp.csr_matrix],
        rows: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item scored: the reference the pruned search reproduces."""
        scores = inner_products(queries, self.items)
        self.scored += scores.numel()
        for m in exclude if rows is not None else ():
            mask_seen_(scores, m, rows)
        return topk(scores, k)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _merge_above_kth(
    vals: torch.Tensor, idx: torch.Tensor, active: torch.Tensor, scores: torch.Tensor, start: int
) -> torch.Tensor:
    """Merge the block ``scores`` (columns ``start...``) of the ``active`` rows into their
    top-k ``vals`` / ``idx`` (in place), looking only at the scores above each row's k-th
    value; returns the active rows' new top-k values."""
    current = vals[active]
    hit_r, hit_c = torch.nonzero(scores > current.min(dim=1, keepdim=True).values, as_tuple=True)
    if len(hit_r) == 0:
        return current
    k = current.shape[1]
    counts = torch.bincount(hit_r, minlength=len(active))
    slot = k + torch.arange(len(hit_r), device=scores.device) - (counts.cumsum(0) - counts)[hit_r]
    cand_v = scores.new_full((len(active), k + int(counts.max())), -torch.inf)
    cand_i = torch.zeros(cand_v.shape, dtype=torch.long, device=scores.device)
    cand_v[:, :k], cand_i[:, :k] = current, idx[active]
    cand_v[hit_r, slot], cand_i[hit_r, slot] = scores[hit_r, hit_c], hit_c + start
    best, pick = torch.topk(cand_v, k, dim=1)
    vals[active], idx[active] = best, torch.gather(cand_i, 1, pick)
    return best


def _masked_positions(
    exclude: Sequence[sp.csr_matrix], rows: np.ndarray | None, position: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The masked ``(query, item)`` entries as tensors, items as positions in norm order."""
    if rows is None or not exclude:
        return None, None
    entries = [seen_entries(m, rows) for m in exclude]
    queries = torch.from_numpy(np.concatenate([r for r, _ in entries])).to(position.device)
    items = torch.from_numpy(np.concatenate([c for _, c in entries])).to(position.device)
    return queries, position[items]
