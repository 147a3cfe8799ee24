"""ItemKNN, EASE and ALS: hand-computed math, accuracy against Pop, reproducibility, save/load."""

from __future__ import annotations

import warnings
from math import sqrt

import implicit.utils
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from polyrec.data.dataset import Dataset
from polyrec.data.split import Split, ratio_split
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.models.base import Recommender
from polyrec.models.classic import ease as ease_module
from polyrec.models.classic import itemknn as itemknn_module
from polyrec.models.classic.als import ALS
from polyrec.models.classic.ease import EASE
from polyrec.models.classic.itemknn import ItemKNN, item_similarity
from polyrec.models.classic.pop import Pop

# 4 users x 3 items. Columns: r0 = (1,1,0,1), r1 = (1,0,1,1), r2 = (0,0,1,1), so
# <r0,r1> = 2, <r0,r2> = 1, <r1,r2> = 2, ||r0|| = ||r1|| = sqrt(3), ||r2|| = sqrt(2).
X = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=np.float32)
SHRINK = 1.0
S01 = 2 / (3 + SHRINK)
S02 = 1 / (sqrt(6) + SHRINK)
S12 = 2 / (sqrt(6) + SHRINK)
# Small models sized for the tiny data (ALS's library defaults overfit 300 x 200).
SMALL_ALS = {"factors": 8, "regularization": 10.0, "alpha": 5.0}


def frame_dataset(x: np.ndarray) -> Dataset:
    users, items = np.nonzero(x)
    return Dataset.from_frame(pd.DataFrame({"user": users, "item": items}))


@pytest.fixture(scope="module")
def hand() -> Dataset:
    return frame_dataset(X)


@pytest.fixture(scope="module")
def split() -> Split:
    # low temperature: choices follow user taste, so personalisation has signal to find
    return ratio_split(make_synthetic(300, 200, 8000, temperature=0.1, seed=0), test=0.2)


def recall_at_20(model: Recommender, split: Split) -> float:
    """Full-ranking Recall@20 on the test part, training items masked."""
    return evaluate(model, split.test, ks=(20,), beyond=False).summary["recall@20"]


# ---------------------------------------------------------------------------- ItemKNN
def test_itemknn_similarity_is_shrunk_cosine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(itemknn_module, "_BLOCK_ELEMENTS", 3)  # one item per block
    w = item_similarity(sp.csr_matrix(X), k=2, shrink=SHRINK).toarray()
    expected = np.array([[0, S01, S02], [S01, 0, S12], [S02, S12, 0]])
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_itemknn_keeps_top_k_and_scores_by_neighbours(hand: Dataset) -> None:
    model = ItemKNN(k=1, shrink=SHRINK).fit(hand)
    # each item's single nearest neighbour: 0 -> 1, 1 -> 2 (S12 > S01), 2 -> 1
    expected = np.array([[0, S01, 0], [0, 0, S12], [0, S12, 0]])
    np.testing.assert_allclose(model.neighbors.toarray(), expected, rtol=1e-6)
    # score_u[j] = sum of sim(j, i) over i in u's history that are neighbours of j
    np.testing.assert_allclose(model.score(np.arange(4)).numpy(), X @ expected.T, rtol=1e-6)


def test_itemknn_similar_items(hand: Dataset) -> None:
    sim = ItemKNN(k=2, shrink=SHRINK).fit(hand).similar_items([1], k=2)
    assert sim["item"].tolist() == [2, 0]
    np.testing.assert_allclose(sim["score"], [S12, S01], rtol=1e-6)


def test_itemknn_item_without_interactions_has_no_neighbours() -> None:
    x = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0]], dtype=np.float32))
    w = item_similarity(x, k=5, shrink=0.0)
    assert np.isfinite(w.data).all()
    assert w[1].nnz == 0
    assert w[:, 1].nnz == 0
    np.testing.assert_allclose(w.toarray()[0, 2], 1 / sqrt(2), rtol=1e-6)


def test_itemknn_ties_keep_lower_item_index() -> None:
    w = item_similarity(sp.csr_matrix(np.ones((1, 3), np.float32)), k=1)  # all cosines are 1
    np.testing.assert_array_equal(w.toarray(), [[0, 1, 0], [1, 0, 0], [1, 0, 0]])


# ---------------------------------------------------------------------------- EASE
def test_ease_matches_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease_module, "_BLOCK_ELEMENTS", 10)  # 2 rows per block of 5 items
    x = (np.random.default_rng(3).random((12, 5)) < 0.5).astype(np.float64)
    x[0] = 1.0  # no empty column
    l2 = 2.0
    p = np.linalg.inv(x.T @ x + l2 * np.eye(5))
    b = np.eye(5) - p @ np.diag(1 / np.diag(p))
    model = EASE(l2=l2).fit(frame_dataset(x))
    np.testing.assert_allclose(model.weights, b, rtol=1e-5, atol=1e-7)
    assert (np.diag(model.weights) == 0).all()
    np.testing.assert_allclose(model.score(np.arange(12)).numpy(), x @ b, rtol=1e-5, atol=1e-6)


def test_ease_refuses_catalogue_too_large(hand: Dataset) -> None:
    with pytest.raises(PolyrecError, match=r"ease: 3 items .*max_items=2"):
        EASE(max_items=2).fit(hand)


# ---------------------------------------------------------------------------- ALS
def test_als_same_seed_same_factors(split) -> None:
    a = ALS(seed=7, **SMALL_ALS).fit(split.train)
    b = ALS(seed=7, **SMALL_ALS).fit(split.train)
    c = ALS(seed=8, **SMALL_ALS).fit(split.train)
    assert a.item_factors.dtype == torch.float32
    assert a.item_factors.shape == (split.train.n_items, 8)
    assert torch.equal(a.user_factors, b.user_factors)
    assert torch.equal(a.item_factors, b.item_factors)
    assert not torch.equal(a.item_factors, c.item_factors)
    users = np.array([0, 5, 9])
    expected = a.user_factors[users] @ a.item_factors.T
    torch.testing.assert_close(a.score(users), expected)


@pytest.mark.parametrize("alpha", [0.0, 4.0])
def test_als_item_factors_solve_the_papers_weighted_least_squares(hand, alpha) -> None:
    """Hu et al. eq. (4) for the last half-step: y_i = (X^T C^i X + lambda I)^-1 X^T C^i p(i)
    with confidence c_ui = 1 + alpha on observed pairs and 1 elsewhere."""
    reg = 0.5
    model = ALS(factors=2, regularization=reg, alpha=alpha, use_cg=False, iterations=3)
    model.fit(hand)
    x, y = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    p = hand.binary_csr.toarray().astype(np.float64)
    for i in range(hand.n_items):
        c = 1 + alpha * p[:, i]
        expected = np.linalg.solve(x.T @ (c[:, None] * x) + reg * np.eye(2), x.T @ (c * p[:, i]))
        np.testing.assert_allclose(y[i], expected, rtol=1e-4, atol=1e-5)


def test_als_fit_raises_no_blas_thread_warning(hand: Dataset, monkeypatch) -> None:
    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ALS(factors=2, iterations=2).fit(hand)


def test_als_similar_items_by_factor_cosine(split) -> None:
    model = ALS(**SMALL_ALS).fit(split.train)
    sim = model.similar_items(split.train.item_ids.to_external([3]), k=5)
    emb = torch.nn.functional.normalize(model.item_factors, dim=1)
    cos = (emb @ emb[3]).numpy()
    cos[3] = -np.inf
    assert (
        sim["item"].tolist()
        == split.train.item_ids.to_external(np.argsort(-cos, kind="stable")[:5]).tolist()
    )


# ---------------------------------------------------------------------------- all three
MODELS = [
    pytest.param(ItemKNN, {"k": 50}, id="itemknn"),
    pytest.param(EASE, {"l2": 50.0}, id="ease"),
    pytest.param(ALS, SMALL_ALS, id="als"),
]


@pytest.mark.parametrize(("cls", "config"), MODELS)
def test_beats_popularity(split, cls: type[Recommender], config: dict) -> None:
    pop = recall_at_20(Pop().fit(split.train), split)
    ours = recall_at_20(cls(config).fit(split.train), split)
    assert ours > 1.5 * pop, (ours, pop)


@pytest.mark.parametrize(("cls", "config"), MODELS)
def test_save_load_round_trip(split, tmp_path, cls: type[Recommender], config: dict) -> None:
    model = cls(config).fit(split.train)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert type(loaded) is cls and loaded.config == model.config
    users = np.arange(split.train.n_users)
    assert torch.equal(loaded.score(users), model.score(users))
    ext = split.train.user_ids.to_external(users[:20])
    pd.testing.assert_frame_equal(loaded.recommend(ext, k=10), model.recommend(ext, k=10))
    items = split.train.item_ids.to_external([0, 1])
    pd.testing.assert_frame_equal(loaded.similar_items(items), model.similar_items(items))


@pytest.mark.parametrize(
    ("cls", "bad"),
    [(ItemKNN, {"k": 0}), (ItemKNN, {"shrink": -1}), (EASE, {"l2": 0}), (ALS, {"factors": 0})],
)
def test_bad_config_is_one_line_error(cls: type[Recommender], bad: dict) -> None:
    with pytest.raises(PolyrecError, match=f"{cls.name} config: {next(iter(bad))}"):
        cls(bad)
