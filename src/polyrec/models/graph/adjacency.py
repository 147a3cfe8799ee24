"""Normalized user-item graphs shared by the graph models (built once, scipy sparse).

- ``symmetric``: D^-1/2 A D^-1/2 over the bipartite graph A = [[0, R], [R^T, 0]], as written
  in the NGCF (Wang et al., SIGIR 2019) and LightGCN (He et al., SIGIR 2020) papers.
- ``row_self_loop``: D^-1 (A + I), the default ``norm`` adjacency of NGCF's released code
  (``NGCF/utility/load_data.py``), which differs from the paper.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

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
