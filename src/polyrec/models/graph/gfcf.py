"""GF-CF: training-free graph filtering for collaborative filtering.

Shen et al., "How Powerful is Graph Convolution for Recommendation?", CIKM 2021. With the
normalized rating matrix R~ = D_U^-1/2 R D_I^-1/2, a user's scores are

    s_u = r_u R~^T R~  +  alpha * r_u D_I^-1/2 V_k V_k^T D_I^1/2

the first term a linear low-pass filter on the normalized item-item graph, the second an
ideal low-pass filter keeping the top-k right singular vectors V_k of R~ (the paper and its
code use k = 256 and alpha = 0.3 on Gowalla). ``fit`` computes the filter; ``score`` works in
user batches and never forms the dense item-item matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.models.base import ModelConfig, Recommender, sparse_from_state
from polyrec.models.graph.adjacency import inverse_sqrt, normalized_rating_matrix, torch_csr

DENSE_ITEMS = 5000  # up to this many items, the item Gram matrix is decomposed densely


class GFCFConfig(ModelConfig):
    """GF-CF hyperparameters (defaults from the paper's Gowalla setting)."""

    k: int = Field(256, ge=1)
    alpha: float = Field(0.3, ge=0)


def top_right_singular_vectors(norm_r: sp.csr_matrix, k: int, seed: int) -> np.ndarray:
    """V_k^T (k x n_items): the right singular vectors of the ``k`` largest singular values.

    Up to ``DENSE_ITEMS`` items, the top eigenvectors of the dense item Gram matrix R~^T R~
    (LAPACK, seconds); beyond, ARPACK's ``svds`` on the sparse R~ as in the GF-CF code.
    """
    n_items = norm_r.shape[1]
    if n_items <= DENSE_ITEMS:
        gram = (norm_r.T @ norm_r).toarray()
        _, vectors = scipy.linalg.eigh(gram, subset_by_index=[n_items - k, n_items - 1])
        return vectors.T
    # svds' start vector is random: fix it so fit is deterministic for a seed
    v0 = np.random.default_rng(seed).random(min(norm_r.shape))
    return spla.svds(norm_r, k=k, v0=v0)[2]


class GFCF(Recommender):
    """Linear + ideal low-pass graph filter; no training."""

    name = "gfcf"
    Config = GFCFConfig
    config: GFCFConfig

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        r = train.binary_csr
        norm_r = normalized_rating_matrix(r)
        k = min(self.config.k, min(r.shape) - 1)
        vt = top_right_singular_vectors(norm_r, k, self.config.seed)
        self.norm_r = norm_r.astype(np.float32)
        self.vt = torch.from_numpy(vt.astype(np.float32))
        di = np.asarray(r.sum(axis=0)).ravel()
        self.d_inv_sqrt = torch.from_numpy(inverse_sqrt(di).astype(np.float32))
        self.d_sqrt = torch.from_numpy(np.sqrt(di).astype(np.float32))
        self._prepare()

    def _prepare(self) -> None:
        """Operands of ``_score``: R~^T in both layouts and the ideal filter's two factors."""
        self.norm_r_t = self.norm_r.T.tocsr()
        self.norm_r_t_torch = torch_csr(self.norm_r_t)
        self.ideal_in = (self.vt * self.d_inv_sqrt).T.contiguous().numpy()  # D^-1/2 V_k
        self.ideal_out = self.vt * self.d_sqrt  # V_k^T D^1/2

    def _score(self, users: np.ndarray) -> torch.Tensor:
        rows = self.seen[users]
        # r_u R~^T R~: the user-user product is sparse x sparse, the rest one CSR x dense product
        user_user = torch.from_numpy((rows @ self.norm_r_t).toarray().astype(np.float32))
        linear = (self.norm_r_t_torch @ user_user.T).T
        ideal = torch.from_numpy(np.asarray(rows @ self.ideal_in, dtype=np.float32))
        return linear + self.config.alpha * (ideal @ self.ideal_out)

    def _get_state(self) -> dict[str, Any]:
        return {
            "norm_r": self.norm_r,
            "vt": self.vt,
            "d_inv_sqrt": self.d_inv_sqrt,
            "d_sqrt": self.d_sqrt,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.norm_r = sparse_from_state(state["norm_r"])
        self.vt, self.d_inv_sqrt, self.d_sqrt = state["vt"], state["d_inv_sqrt"], state["d_sqrt"]
        self._prepare()
