"""EASE: the closed-form shallow linear autoencoder of Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019.

With ``X`` the binary user x item matrix, EASE solves
``min_B ||X - X B||_F^2 + l2 ||B||_F^2`` subject to ``diag(B) = 0``, whose solution is::

    P = (X^T X + l2 I)^-1,    B = I - P diag(1 / diag(P))    (B_ij = -P_ij / P_jj, B_ii = 0)

and a user's scores are ``x_u B``. The item x item Gram matrix is built in row blocks and
inverted in place in float64 (Cholesky, LAPACK ``potrf`` + ``potri``), then ``B`` is kept in
float32: about ``12 * n_items^2`` bytes at the peak, which is checked before anything is
allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psutil
import scipy.sparse as sp
import torch
from pydantic import Field
from scipy.linalg import lapack

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.models.base import ModelConfig, Recommender

_BLOCK_ELEMENTS = 1 << 23  # dense entries per block when building / symmetrising the Gram
_BYTES_PER_ENTRY = 12  # float64 Gram (inverted in place) + float32 B


class EASEConfig(ModelConfig):
    """EASE options: the L2 penalty and a guard on the dense item x item size."""

    l2: float = Field(500.0, gt=0.0)
    max_items: int = Field(50_000, ge=1)


class EASE(Recommender):
    """Closed-form item-item linear model with a zero diagonal."""

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        n = train.n_items
        need = _BYTES_PER_ENTRY * n * n
        available = psutil.virtual_memory().available
        if n > self.config.max_items or need > available:
            raise PolyrecError(
                f"ease: {n} items need ~{need / 2**30:.1f} GiB for the dense item x item matrix "
                f"({available / 2**30:.1f} GiB available, max_items={self.config.max_items}); "
                "filter rare items or use itemknn / als"
            )
        self.weights = ease_weights(train.binary_csr, self.config.l2)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        assert self.seen is not None
        return torch.from_numpy(np.asarray(self.seen[users] @ self.weights))

    def _similar(self, items: np.ndarray) -> torch.Tensor:
        # row i of B: the scores of a user whose history is exactly item i
        return torch.from_numpy(self.weights[items])

    def _get_state(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.weights = state["weights"].numpy()


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """The EASE matrix ``B`` (float32, items x items, zero diagonal) for interactions ``x``."""
    x = sp.csr_matrix(x, dtype=np.float64)
    n = x.shape[1]
    xt = x.T.tocsr()
    block = max(1, _BLOCK_ELEMENTS // max(1, n))
    p = np.empty((n, n), dtype=np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        p[start:stop] = (xt[start:stop] @ x).toarray()
    p[np.diag_indices(n)] += l2
    _spd_inverse_(p, block)
    p /= -np.diag(p)[None, :]
    p[np.diag_indices(n)] = 0.0
    return p.astype(np.float32)


def _spd_inverse_(a: np.ndarray, block: int) -> None:
    """Invert the symmetric positive definite, C-contiguous ``a`` in place (Cholesky)."""
    # a.T is the same symmetric matrix in Fortran order, so LAPACK works on a's memory without
    # a copy; its lower triangle is a's upper triangle.
    c, info = lapack.dpotrf(a.T, lower=True, overwrite_a=True, clean=False)
    if info == 0:
        c, info = lapack.dpotri(c, lower=True, overwrite_c=True)
    if info != 0:
        raise PolyrecError(f"ease: X^T X + l2 I is not positive definite (LAPACK info={info})")
    assert np.shares_memory(c, a), "LAPACK copied the matrix instead of working in place"
    # only a's upper triangle holds the inverse: mirror it into the lower one, block by block
    n = a.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        a[start:stop, :start] = a[:start, start:stop].T
        diag = a[start:stop, start:stop]
        diag[...] = np.triu(diag) + np.triu(diag, 1).T
