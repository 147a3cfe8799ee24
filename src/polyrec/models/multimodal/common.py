"""Pieces shared by the multimodal models: the modality options and item-feature access."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from polyrec.data.dataset import Dataset
from polyrec.features.matrix import select_modalities


def item_features(train: Dataset, modalities: list[str]) -> dict[str, torch.Tensor]:
    """The selected modality matrices of ``train`` as float32 tensors (clear error if absent)."""
    return {m: torch.from_numpy(x) for m, x in select_modalities(train, modalities).items()}


def knn_item_graph(features: np.ndarray | torch.Tensor, k: int, chunk: int = 2048) -> sp.csr_matrix:
    """Symmetrically normalised kNN graph of items by cosine similarity of ``features``.

    Row ``i`` links item ``i`` to its ``k`` most similar items (itself included, as top-k of
    the similarity matrix in the FREEDOM/LATTICE code), values ``d_i^-1/2 d_j^-1/2`` with ``d``
    the row degrees. Items whose feature row is all zero (no feature, or a forgotten item whose
    features were wiped) get no edges and are nobody's neighbour. Similarities are computed in
    row chunks so memory stays ``chunk x n_items``.
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    norm = x.norm(dim=1, keepdim=True)
    valid = norm.squeeze(1) > 0
    x = torch.where(norm > 0, x / norm.clamp_min(1e-12), torch.zeros_like(x))
    n = x.shape[0]
    k = min(k, int(valid.sum()))
    rows, cols = [], []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T
        sim[:, ~valid] = -torch.inf
        top = torch.topk(sim, k, dim=1).indices
        src = torch.arange(start, start + len(sim)).unsqueeze(1).expand_as(top)
        keep = valid[start : start + len(sim)].unsqueeze(1).expand_as(top)
        rows.append(src[keep])
        cols.append(top[keep])
    r = torch.cat(rows).numpy()
    c = torch.cat(cols).numpy()
    adj = sp.csr_matrix((np.ones(len(r), np.float64), (r, c)), shape=(n, n))
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.zeros_like(degree)
    inv[degree > 0] = degree[degree > 0] ** -0.5
    return (sp.diags(inv) @ adj @ sp.diags(inv)).tocsr().astype(np.float32)
