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
import scipy.sparse.linalg as spla
import torch

from polyrec.data.dataset import Dataset
from polyrec.models.base import ModelConfig, Recommender, sparse_from_state
from polyrec.models.graph.adjacency import inverse_sqrt, normalized_rating_matrix


class GFCFConfig(ModelConfig):
    """GF-CF hyperparameters (defaults from the paper's Gowalla setting)."""

    k: int = 256
    alpha: float = 0.3


class GFCF(Recommender):
    """Linear + ideal low-pass graph filter; no training."""

    name = "gfcf"
    Config = GFCFConfig
    config: GFCFConfig

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        r = train.binary_csr
        self.norm_r = normalized_rating_matrix(r).astype(np.float32)
        k = min(self.config.k, min(r.shape) - 1)
        # svds' start vector is random: fix it so fit is deterministic for a seed
        v0 = np.random.default_rng(self.config.seed).random(min(r.shape))
        _, _, vt = spla.svds(normalized_rating_matrix(r), k=k, v0=v0)
        self.vt = torch.from_numpy(vt.astype(np.float32))
        di = np.asarray(r.sum(axis=0)).ravel()
        self.d_inv_sqrt = torch.from_numpy(inverse_sqrt(di).astype(np.float32))
        self.d_sqrt = torch.from_numpy(np.sqrt(di).astype(np.float32))

    def _score(self, users: np.ndarray) -> torch.Tensor:
        rows = self.seen[users]
        linear = (rows @ self.norm_r.T) @ self.norm_r
        dense = torch.from_numpy(rows.toarray())
        ideal = ((dense * self.d_inv_sqrt) @ self.vt.T) @ self.vt * self.d_sqrt
        return torch.from_numpy(np.asarray(linear.todense(), dtype=np.float32)) + (
            self.config.alpha * ideal
        )

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
