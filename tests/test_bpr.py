"""BPR-MF: the loss by hand, scoring, quality against Pop, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polyrec.data.split import Split, ratio_split
from polyrec.data.synthetic import make_synthetic
from polyrec.eval import evaluate
from polyrec.models.base import Recommender
from polyrec.models.classic.bpr import BPRMF, bpr_loss_reference
from polyrec.models.classic.pop import Pop
from polyrec.models.registry import get_model_class

FAST = {"lr": 0.01, "batch_size": 512, "factors": 32, "reg": 1e-2, "progress": False}


@pytest.fixture(scope="module")
def split() -> Split:
    # temperature 0.1: choices follow the users' tastes sharply, so personalisation must show
    data = make_synthetic(400, 200, 8000, temperature=0.1, seed=0)
    return ratio_split(data, test=0.2, seed=0)


@pytest.fixture(scope="module")
def fitted(split: Split) -> BPRMF:
    return BPRMF(epochs=10, early_stopping=None, **FAST).fit(split.train)


def _set_weights(model: BPRMF, users: list[list[float]], items: list[list[float]]) -> None:
    model.dims = {"n_users": len(users), "n_items": len(items)}
    model.module = model._build(model.dims)
    model.train_module = model.module
    with torch.no_grad():
        model.module.user.weight.copy_(torch.tensor(users))
        model.module.item.weight.copy_(torch.tensor(items))


def test_loss_by_hand() -> None:
    model = BPRMF(factors=2, reg=0.1)
    _set_weights(model, users=[[1.0, 0.0], [0.0, 2.0]], items=[[1.0, 0.0], [0.0, 1.0]])
    batch = {
        "users": torch.tensor([0, 1]),
        "pos": torch.tensor([0, 1]),
        "neg": torch.tensor([1, 0]),
    }
    # x_ui - x_uj = 1 - 0 and 2 - 0; -ln sigmoid(d) = ln(1 + e^-d)
    bpr = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 2
    # reg/2 * (||U_u||^2 + ||V_i||^2 + ||V_j||^2) summed over the batch, / batch size
    l2 = 0.1 / 2 * ((1 + 1 + 1) + (4 + 1 + 1)) / 2
    assert model._loss(batch).item() == pytest.approx(bpr + l2, rel=1e-6)


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_closed_form_gradient_matches_autograd(reg: float) -> None:
    """The hand-written backward equals autograd's on the plain formula, repeated ids
    included (a user twice, an item as a positive and a negative)."""
    model = BPRMF(factors=5, reg=reg, seed=3)
    model.dims = {"n_users": 6, "n_items": 9}
    torch.manual_seed(0)
    mf = model._build(model.dims)
    users, pos, neg = (
        torch.tensor([0, 3, 3, 5]),
        torch.tensor([1, 2, 8, 4]),
        torch.tensor([2, 7, 1, 1]),
    )
    fast = mf(users, pos, neg, reg)
    fast_grads = torch.autograd.grad(fast, list(mf.parameters()))
    ref = bpr_loss_reference(mf, users, pos, neg, reg)
    ref_grads = torch.autograd.grad(ref, list(mf.parameters()))
    torch.testing.assert_close(fast, ref)
    for a, b in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_score_is_dot_product_and_items_embed() -> None:
    model = BPRMF(factors=2)
    _set_weights(model, users=[[1.0, 2.0], [0.0, -1.0]], items=[[3.0, 0.0], [1.0, 1.0], [0, 2]])
    torch.testing.assert_close(
        model._score(np.array([1, 0])), torch.tensor([[0.0, -1.0, -2.0], [3.0, 3.0, 4.0]])
    )
    torch.testing.assert_close(model._item_embeddings(), model.module.item.weight.detach())


def test_registered() -> None:
    assert get_model_class("bpr") is BPRMF


def test_beats_pop_on_recall(split: Split, fitted: BPRMF) -> None:
    bpr = evaluate(fitted, split.test, ks=(20,), beyond=False).summary["recall@20"]
    pop = evaluate(Pop().fit(split.train), split.test, ks=(20,), beyond=False).summary["recall@20"]
    assert bpr > pop + 0.15, (bpr, pop)


def test_save_load_round_trip(split: Split, fitted: BPRMF, tmp_path: Path) -> None:
    loaded = Recommender.load(fitted.save(tmp_path / "bpr"))
    assert isinstance(loaded, BPRMF)
    assert loaded.dims == fitted.dims
    users = np.arange(split.train.n_users)
    torch.testing.assert_close(loaded.score(users), fitted.score(users), rtol=0, atol=0)
    ext = split.train.user_ids.to_external(users[:5])
    assert loaded.recommend(ext, k=5).equals(fitted.recommend(ext, k=5))
    assert loaded.similar_items(split.train.item_ids.external[:2], k=3).equals(
        fitted.similar_items(split.train.item_ids.external[:2], k=3)
    )
