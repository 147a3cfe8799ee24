"""Normalized user-item graphs shared by the graph models (built once, scipy sparse), and the
sparse propagation operator the trained graph models multiply embeddings by.

- ``symmetric``: D^-1/2 A D^-1/2 over the bipartite graph A = [[0, R], [R^T, 0]], as written
  in the NGCF (Wang et al., SIGIR 2019) and LightGCN (He et al., SIGIR 2020) papers and as the
  LightGCN code builds it. Isolated nodes (degree 0) get an all-zero row and column.
- ``row_self_loop``: D^-1 (A + I), the ``norm`` adjacency of NGCF's released code (the default
  ``--adj_type``, built in ``NGCF/utility/load_data.py``), which differs from the paper.

:class:`GraphOperator` holds Â as a torch CSR tensor together with Â^T, so that the backward
pass of ``Â @ X`` is one more CSR product (``Â^T @ G``) instead of autograd's generic sparse
backward; it also implements the NGCF code's edge ("node") dropout on the stored entries.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

Normalization = Literal["symmetric", "row_self_loop"]


def inverse_sqrt(degree: np.ndarray) -> np.ndarray:
    """d^-1/2 with 0 for isolated nodes (instead of inf)."""
    out = np.zeros_like(degree, dtype=np.float64)
    nz = degree > 0
    out[nz] = degree[nz] ** -0.5
    return out


def normalized_rating_matrix(r: sp.csr_matrix) -> sp.csr_matrix:
    """R~ = D_U^-1/2 R D_I^-1/2 (the user-item block of the symmetric bipartite adjacency)."""
    r = r.tocsr().astype(np.float64)
    du = inverse_sqrt(np.asarray(r.sum(axis=1)).ravel())
    di = inverse_sqrt(np.asarray(r.sum(axis=0)).ravel())
    return (sp.diags(du) @ r @ sp.diags(di)).tocsr()


def bipartite_adjacency(
    r: sp.csr_matrix, normalization: Normalization = "symmetric"
) -> sp.csr_matrix:
    """The (n_users + n_items) square normalized adjacency of the interaction graph."""
    r = r.tocsr().astype(np.float64)
    r.data[:] = 1.0
    n_users, n_items = r.shape
    if normalization == "symmetric":
        rn = normalized_rating_matrix(r)
        adj = sp.bmat([[None, rn], [rn.T, None]], format="csr")
    else:
        a = sp.bmat([[None, r], [r.T, None]], format="csr") + sp.identity(n_users + n_items)
        deg = np.asarray(a.sum(axis=1)).ravel()
        adj = (sp.diags(1.0 / deg) @ a).tocsr()
    return adj.astype(np.float32)


def torch_csr(m: sp.spmatrix) -> torch.Tensor:
    """A float32 torch CSR tensor with the entries of ``m`` (duplicates summed)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    return _csr_tensor(_index(m.indptr), _index(m.indices), torch.from_numpy(m.data), m.shape)


class _SparseMatmul(torch.autograd.Function):
    """``a @ x`` for a constant sparse ``a``; the gradient of ``x`` is ``a_t @ grad``."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.a_t @ grad


class GraphOperator(torch.nn.Module):
    """Multiplication by a fixed sparse matrix Â (no parameters, nothing in ``state_dict``).

    ``forward(x)`` is ``Â @ x``; ``forward(x, dropout_mask(p))`` keeps every stored entry of Â
    with probability ``1 - p`` and scales it by ``1 / (1 - p)`` (the NGCF code's
    ``_dropout_sparse``); passing one mask to several calls shares one draw between layers.
    ``.to(device)`` moves the matrices with the module.
    """

    def __init__(self, adj: sp.spmatrix) -> None:
        super().__init__()
        m = sp.csr_matrix(adj, dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        # position in m.data of each stored entry of m^T, in m^T's CSR order
        order = sp.csr_matrix(
            (np.arange(1, m.nnz + 1, dtype=np.int64), m.indices, m.indptr), shape=m.shape
        ).T.tocsr()
        order.sort_indices()
        self.shape = m.shape
        self.nnz = m.nnz
        self.crow, self.col = _index(m.indptr), _index(m.indices)
        self.crow_t, self.col_t = _index(order.indptr), _index(order.indices)
        self.to_transpose = torch.from_numpy(order.data - 1)
        self.values = torch.from_numpy(m.data)
        self.a = self._csr(self.values)
        self.a_t = self._csr_t(self.values)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``Â @ x``, or with the entries kept by ``mask`` (see :meth:`dropout_mask`)."""
        if mask is None:
            return _SparseMatmul.apply(self.a, self.a_t, x)
        values = self.values * mask
        return _SparseMatmul.apply(self._csr(values), self._csr_t(values), x)

    def dropout_mask(self, p: float) -> torch.Tensor:
        """Entry weights: 0 with probability ``p``, else ``1 / (1 - p)`` (torch's global RNG)."""
        keep = torch.rand(self.nnz, device=self.values.device) >= p
        return keep.to(self.values.dtype) / (1.0 - p)

    def _csr(self, values: torch.Tensor) -> torch.Tensor:
        return _csr_tensor(self.crow, self.col, values, self.shape)

    def _csr_t(self, values: torch.Tensor) -> torch.Tensor:
        shape = (self.shape[1], self.shape[0])
        return _csr_tensor(self.crow_t, self.col_t, values[self.to_transpose], shape)

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphOperator:
        # torch cannot deep-copy sparse CSR tensors: copy the parts, rebuild the two matrices
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key not in ("a", "a_t"):
                new.__dict__[key] = copy.deepcopy(value, memo)
        new.a, new.a_t = new._csr(new.values), new._csr_t(new.values)
        return new

    def _apply(self, fn: Any, recurse: bool = True) -> GraphOperator:
        super()._apply(fn, recurse)
        self.values = fn(self.values)
        for name in ("crow", "col", "crow_t", "col_t", "to_transpose"):
            setattr(self, name, getattr(self, name).to(self.values.device))
        self.a, self.a_t = self._csr(self.values), self._csr_t(self.values)
        return self


def _index(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.int64))


def _csr_tensor(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on CSR @ dense
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
