"""Graph CF: normalized adjacency, LightGCN / NGCF propagation against hand-computed values,
training, accuracy against Pop and BPR-MF on synthetic data, save/load, GF-CF's formula."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from math import sqrt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from polyrec.data.dataset import Dataset
from polyrec.data.sampling import user_uniform_triples
from polyrec.data.split import Split, ratio_split
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.models.base import Recommender
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.classic.pop import Pop
from polyrec.models.graph import gfcf as gfcf_module
from polyrec.models.graph.adjacency import GraphOperator, bipartite_adjacency
from polyrec.models.graph.gfcf import GFCF
from polyrec.models.graph.lightgcn import LightGCN
from polyrec.models.graph.ngcf import NGCF

# 3 users x 4 items: u0 -> {i0, i1}, u1 -> {i1, i2}, u2 -> {i2, i3}.
# Degrees: users 2, 2, 2; items 1, 2, 2, 1.
R = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=np.float32)
H = 1 / sqrt(2)  # 1 / sqrt(2 * 1): a user of degree 2 and an item of degree 1
FAST = {"progress": False, "early_stopping": None}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny sparse products: one thread avoids OpenMP overhead on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frame_dataset(x: np.ndarray) -> Dataset:
    users, items = np.nonzero(x)
    return Dataset.from_frame(pd.DataFrame({"user": users, "item": items}))


@pytest.fixture(scope="module")
def hand() -> Dataset:
    return frame_dataset(R)


@pytest.fixture(scope="module")
def split() -> Split:
    # low temperature: choices follow user taste, so personalisation has signal to find
    return ratio_split(make_synthetic(300, 200, 8000, temperature=0.1, seed=0), test=0.2)


def recall_at_20(model: Recommender, split: Split) -> float:
    return evaluate(model, split.test, ks=(20,), beyond=False).summary["recall@20"]


# ------------------------------------------------------------------------- adjacency
def test_symmetric_adjacency_is_hand_computed() -> None:
    adj = bipartite_adjacency(sp.csr_matrix(R)).toarray()
    user_item = np.array([[H, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, H]])
    expected = np.block([[np.zeros((3, 3)), user_item], [user_item.T, np.zeros((4, 4))]])
    np.testing.assert_allclose(adj, expected, rtol=1e-6)


def test_symmetric_adjacency_with_isolated_nodes_has_no_nan() -> None:
    r = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=np.float32))
    adj = bipartite_adjacency(r).toarray()  # user 1 and item 1 have no edge
    assert np.isfinite(adj).all()
    assert not adj[1].any() and not adj[:, 1].any()  # user 1
    assert not adj[4].any() and not adj[:, 4].any()  # item 1 (node 3 + 1)
    # u0 (degree 2) - i0 (degree 2): 1/2; u0 - i2 (degree 1): 1/sqrt(2); u2 (1) - i0 (2)
    assert adj[0, 3] == pytest.approx(0.5)
    assert adj[0, 5] == pytest.approx(H)
    assert adj[2, 3] == pytest.approx(H)


def test_row_self_loop_adjacency_is_ngcf_code_norm() -> None:
    adj = bipartite_adjacency(sp.csr_matrix(R), "row_self_loop").toarray()
    np.testing.assert_allclose(adj.sum(axis=1), 1.0, rtol=1e-6)
    # u0: itself, i0, i1, each 1/3; i0 (node 3): itself and u0, each 1/2
    np.testing.assert_allclose(adj[0], [1 / 3, 0, 0, 1 / 3, 1 / 3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(adj[3], [0.5, 0, 0, 0.5, 0, 0, 0], rtol=1e-6)


def test_graph_operator_gradient_and_dropout_match_dense() -> None:
    a = sp.random(6, 5, density=0.5, random_state=0, format="csr", dtype=np.float32)
    op = GraphOperator(a)
    torch.manual_seed(0)
    mask = op.dropout_mask(0.5)
    kept = a.copy()
    kept.data = kept.data * mask.numpy()  # CSR order, as the operator stores them
    assert set(np.unique(mask.numpy())) <= {0.0, 2.0}
    for m, dense in ((None, a.toarray()), (mask, kept.toarray())):
        x = torch.randn(5, 3, requires_grad=True)
        grad = torch.randn(6, 3)
        y = op(x, m)
        y.backward(grad)
        np.testing.assert_allclose(y.detach().numpy(), dense @ x.detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(x.grad.numpy(), dense.T @ grad.numpy(), atol=1e-6)


# ---------------------------------------------------------------------- propagation
def test_lightgcn_propagation_is_hand_computed(hand: Dataset) -> None:
    model = LightGCN(factors=1, n_layers=2, epochs=1, **FAST).fit(hand)
    net = model.module
    with torch.no_grad():
        net.embedding.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0]]))
        e0 = net.embedding.clone()
        # layer 1: users from items (e_i = 4, 5, 6, 7), items from users (e_u = 1, 2, 3)
        e1 = torch.tensor([[4 * H + 2.5], [5.5], [3 + 7 * H], [H], [1.5], [2.5], [3 * H]])
        # layer 2 of users: u0 = H * e1[i0] + e1[i1] / 2 = 1/2 + 3/4, u1 = (1.5 + 2.5) / 2, ...
        e2_users = torch.tensor([[1.25], [2.0], [2.75]])
        # layer 2 of items: i0 = H * e1[u0] = 2 + 2.5 H, i1 = (e1[u0] + e1[u1]) / 2, ...
        e2_items = torch.tensor([[2 + 2.5 * H], [4 + 2 * H], [4.25 + 3.5 * H], [3.5 + 3 * H]])
        users, items = net.propagate()
        np.testing.assert_allclose(users, (e0[:3] + e1[:3] + e2_users) / 3, rtol=1e-6)
        np.testing.assert_allclose(items, (e0[3:] + e1[3:] + e2_items) / 3, rtol=1e-6)
        net.layer_weights = [0.0, 0.0, 1.0]
        np.testing.assert_allclose(net.propagate()[0], e2_users, rtol=1e-6)
        net.layer_weights = [0.0, 1.0, 0.0]
        np.testing.assert_allclose(net.propagate()[1], e1[3:], rtol=1e-6)


def test_ngcf_with_identity_weights_is_hand_computed(hand: Dataset) -> None:
    model = NGCF(factors=2, layer_sizes=[2], mess_dropout=[0.5], epochs=1, **FAST).fit(hand)
    net = model.module
    with torch.no_grad():
        emb = [[1, 2], [0, 1], [1, -1], [2, 0], [1, 1], [0, -2], [3, 1]]  # u0..u2, i0..i3
        net.embedding.copy_(torch.tensor(emb, dtype=torch.float32))
        for layer in (net.gc[0], net.bi[0]):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    # D^-1 (A + I): u0 averages itself, i0, i1: side = [4/3, 1], bi = e ⊙ side = [4/3, 2];
    # e1 = side + bi = [8/3, 3] -> [8, 9] / sqrt(145).
    # u2: side = ([1,-1] + [0,-2] + [3,1]) / 3 = [4/3, -2/3] -> LeakyReLU [4/3, -2/15];
    # bi = [4/3, 2/3]; e1 = [8/3, 8/15] -> [5, 1] / sqrt(26).
    # i0 averages itself and u0: side = [3/2, 1], bi = [3, 0]; e1 = [9/2, 1] -> [9, 2] / sqrt(85).
    with torch.no_grad():
        users, items = net.propagate()  # evaluation: no dropout
    s145, s26, s85 = sqrt(145), sqrt(26), sqrt(85)
    np.testing.assert_allclose(users[0], [1, 2, 8 / s145, 9 / s145], rtol=1e-5)
    np.testing.assert_allclose(users[2], [1, -1, 5 / s26, 1 / s26], rtol=1e-5)
    np.testing.assert_allclose(items[0], [2, 0, 9 / s85, 2 / s85], rtol=1e-5)
    model._final = None  # the weights were set by hand after fit
    score = model.score([0])[0, 0].item()
    assert score == pytest.approx(2 + (8 * 9 + 9 * 2) / (s145 * s85), rel=1e-5)


# -------------------------------------------------------------------------- training
def test_user_uniform_triples_follow_the_reference_sampler() -> None:
    x = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=np.float32))
    users, pos, neg = user_uniform_triples(x, 30_000, np.random.default_rng(0))
    counts = np.bincount(users, minlength=3)
    assert counts[1] == 0  # no positive: never drawn
    assert abs(counts[0] - counts[2]) < 600  # uniform over users, not over interactions
    dense = x.toarray().astype(bool)
    assert dense[users, pos].all() and not dense[users, neg].any()
    assert set(pos[users == 2]) == {0, 1, 2} and set(neg[users == 0]) == {1, 2}


def test_loss_decreases(split: Split) -> None:
    for model in (
        LightGCN(epochs=8, lr=0.01, **FAST),
        NGCF(epochs=8, lr=0.005, node_dropout=0.1, **FAST),
    ):
        losses = np.array([h["loss"] for h in model.fit(split.train).history])
        assert (np.diff(losses) < 0).all() and losses[-1] < 0.8 * losses[0], (model.name, losses)


def test_graph_models_beat_pop_and_bpr(split: Split) -> None:
    pop = recall_at_20(Pop().fit(split.train), split)
    bpr = recall_at_20(BPRMF(epochs=30, lr=0.01, **FAST).fit(split.train), split)
    lightgcn = recall_at_20(LightGCN(epochs=30, lr=0.01, **FAST).fit(split.train), split)
    ngcf = recall_at_20(NGCF(epochs=30, lr=0.005, **FAST).fit(split.train), split)
    assert bpr > pop + 0.2
    assert lightgcn > bpr + 0.02
    assert ngcf > bpr + 0.02


def test_scores_follow_kept_weights_after_early_stopping(split: Split) -> None:
    train, valid = split.train, split.test  # validation caches scores before best is restored
    model = LightGCN(epochs=6, lr=0.05, early_stopping="ndcg@10", patience=2, progress=False)
    model.fit(train, valid)
    users, items = model.module.propagate()
    expected = users[:5] @ items.T
    np.testing.assert_allclose(model.score(np.arange(5)), expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        LightGCN(epochs=2, lr=0.01, **FAST),
        NGCF(epochs=2, lr=0.01, normalization="symmetric", **FAST),
        GFCF(k=8),
    ],
    ids=["lightgcn", "ngcf", "gfcf"],
)
def test_save_load_round_trip(model: Recommender, split: Split, tmp_path: Path) -> None:
    model.fit(split.train)
    users = np.arange(20)
    loaded = type(model).load(model.save(tmp_path / model.name))
    assert type(loaded) is type(model) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.score(users), model.score(users))


def test_isolated_training_items_get_finite_scores() -> None:
    full = frame_dataset(R)
    train = full.with_interactions(full.items != 3)  # item 3 only outside training
    for model in (LightGCN(epochs=2, **FAST), NGCF(epochs=2, **FAST)):
        assert torch.isfinite(model.fit(train).score(np.arange(3))).all()


def test_bad_configs_are_one_line_errors() -> None:
    with pytest.raises(PolyrecError, match="layer_weights"):
        LightGCN(n_layers=2, layer_weights=[0.5, 0.5])
    with pytest.raises(PolyrecError, match="mess_dropout"):
        NGCF(layer_sizes=[64, 64], mess_dropout=[0.1])
    with pytest.raises(PolyrecError, match="normalization"):
        NGCF(normalization="left")


# ---------------------------------------------------------------------------- GF-CF
@pytest.mark.parametrize("dense_items", [gfcf_module.DENSE_ITEMS, 0], ids=["eigh", "svds"])
def test_gfcf_equals_dense_formula(dense_items: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gfcf_module, "DENSE_ITEMS", dense_items)
    rng = np.random.default_rng(3)
    x = (rng.random((8, 6)) < 0.5).astype(np.float64)
    x[x.sum(axis=1) == 0, 0] = 1
    x[0, x.sum(axis=0) == 0] = 1
    k, alpha = 3, 0.3
    du, di = x.sum(axis=1), x.sum(axis=0)
    norm = x / np.sqrt(du)[:, None] / np.sqrt(di)[None, :]
    v = np.linalg.svd(norm)[2][:k].T  # top-k right singular vectors
    expected = x @ norm.T @ norm + alpha * x @ np.diag(di**-0.5) @ v @ v.T @ np.diag(di**0.5)
    model = GFCF(k=k, alpha=alpha).fit(frame_dataset(x))
    np.testing.assert_allclose(model.score(np.arange(8)), expected, atol=1e-5)


def test_graph_operator_deep_copies() -> None:
    adj = sp.random(6, 6, density=0.4, random_state=0, format="csr", dtype=np.float32)
    op = GraphOperator(adj)
    dup = copy.deepcopy(op)
    x = torch.randn(6, 3)
    torch.testing.assert_close(dup(x), op(x))
    assert dup.values is not op.values
