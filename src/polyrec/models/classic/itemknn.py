"""ItemKNN: item-based collaborative filtering with shrunk cosine similarity.

Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001;
Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004; the variant is
RecBole's ``ItemKNN`` (options ``k`` and ``shrink``, binary interactions).

With ``X`` the binary user x item matrix and ``r_i`` its column ``i``::

    sim(i, j) = <r_i, r_j> / (||r_i|| ||r_j|| + shrink),   sim(i, i) = 0

Each item keeps its ``k`` most similar items (its neighbours), stored as the sparse matrix
``N`` (row ``i`` = neighbours of ``i``). A user's score for item ``i`` sums the similarities of
the neighbours of ``i`` that the user interacted with: ``score_u = x_u N^T``.

``X^T X`` is computed as a sparse product one block of item rows at a time and each row's
top-``k`` is selected on its stored co-occurrences, so memory is bounded by one block (at most
``_BLOCK_ELEMENTS`` entries) plus ``N``, never ``n_items^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.models.base import ModelConfig, Recommender, sparse_from_state

_BLOCK_ELEMENTS = 1 << 23  # bound on the item-item entries of one block


class ItemKNNConfig(ModelConfig):
    """ItemKNN options (as RecBole's): neighbours per item and the cosine shrinkage term."""

    k: int = Field(100, ge=1)
    shrink: float = Field(0.0, ge=0.0)


class ItemKNN(Recommender):
    """Item-item shrunk cosine kNN; scores are sums of neighbour similarities."""

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self._set_neighbors(
            item_similarity(train.binary_csr, k=self.config.k, shrink=self.config.shrink)
        )

    def _set_neighbors(self, neighbors: sp.csr_matrix) -> None:
        self.neighbors = neighbors
        # score_u = x_u N^T: keep N^T in CSR once, not converted at every scoring batch
        self._neighbors_t = neighbors.T.tocsr()

    def _score(self, users: np.ndarray) -> torch.Tensor:
        assert self.seen is not None
        return torch.from_numpy((self.seen[users] @ self._neighbors_t).toarray())

    def _similar(self, items: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.neighbors[items].toarray())

    def _get_state(self) -> dict[str, Any]:
        return {"neighbors": self.neighbors}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._set_neighbors(sparse_from_state(state["neighbors"]))


def item_similarity(x: sp.csr_matrix, *, k: int, shrink: float = 0.0) -> sp.csr_matrix:
    """Top-``k`` shrunk cosine similarities between the columns of ``x`` (users x items).

    Returns an items x items float32 CSR matrix whose row ``i`` holds the (at most) ``k`` most
    similar items to ``i`` with their similarities; the diagonal and zero similarities are not
    stored, and ties at the ``k``-th place keep the lower item index.
    """
    x = sp.csr_matrix(x, dtype=np.float32)
    n_items = x.shape[1]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0), dtype=np.float32).ravel())
    xt = x.T.tocsr()
    block = max(1, _BLOCK_ELEMENTS // max(1, n_items))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        # co-occurrences of this block of items with all items, kept sparse
        dots = xt[start : start + block] @ x
        r = np.repeat(np.arange(start, start + dots.shape[0]), np.diff(dots.indptr))
        c = dots.indices
        v = dots.data / (norms[r] * norms[c] + np.float32(shrink))
        keep = (r != c) & (v != 0)
        r, c, v = r[keep], c[keep], v[keep]
        # per row: by similarity descending, then item index; keep the first k
        order = np.lexsort((c, -v, r))
        r, c, v = r[order], c[order], v[order]
        first = np.searchsorted(r, r, side="left")
        top = np.arange(len(r)) - first < k
        rows.append(r[top])
        cols.append(c[top])
        vals.append(v[top])
    w = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    w.sort_indices()
    return w
