"""The shared Trainer: loss, history, validation schedule, early stopping, seeds, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_validation, weights

from polyrec.data.dataset import Dataset
from polyrec.data.split import Split, ratio_split
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.torch_base import TorchRecommender

FAST = {"lr": 0.01, "batch_size": 512, "factors": 16, "progress": False}


@pytest.fixture(scope="module")
def split() -> Split:
    return ratio_split(make_synthetic(300, 150, 5000, seed=0), test=0.2, valid=0.1, seed=0)


def test_loss_decreases_and_history_is_recorded(split: Split) -> None:
    model = BPRMF(epochs=5, early_stopping=None, **FAST).fit(split.train)
    losses = [h["loss"] for h in model.history]
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4, 5]
    assert losses[0] == pytest.approx(np.log(2), abs=0.01)  # untrained: softplus(~0)
    assert (np.diff(losses) < 0).all()
    assert all(h["seconds"] > 0 for h in model.history)
    assert model.best_epoch is None
    assert "valid" not in model.history[0]


def test_real_validation_metrics_in_history(split: Split) -> None:
    model = BPRMF(epochs=2, **FAST).fit(split.train, split.valid)
    entry = model.history[-1]
    assert 0.0 <= entry["valid"]["ndcg@10"] <= 1.0
    assert {"recall@20", "ndcg@20"} <= set(entry["valid"])
    assert entry["eval_seconds"] > 0


def test_early_stopping_stops_and_restores_best(
    split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_validation(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.9])
    model = BPRMF(epochs=10, patience=2, **FAST).fit(split.train, split.valid)
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4]  # 2 evaluations without gain
    assert model.best_epoch == 2
    assert model.stop_reason == "early stopping after epoch 4"
    assert [h["valid"]["ndcg@10"] for h in model.history] == [0.1, 0.3, 0.2, 0.25]
    final = weights(model)
    for key, value in final.items():
        assert torch.equal(value, seen[1][key])  # the weights validated at epoch 2
    assert not torch.equal(final["user.weight"], seen[3]["user.weight"])


def test_eval_every_validates_on_schedule_and_last_epoch(
    split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_validation(monkeypatch, [0.5, 0.1, 0.2])
    model = BPRMF(epochs=7, eval_every=3, early_stopping=None, **FAST).fit(split.train, split.valid)
    assert [h["epoch"] for h in model.history if "valid" in h] == [3, 6, 7]
    assert model.best_epoch is None  # no metric: the last weights are kept
    assert torch.equal(weights(model)["item.weight"], seen[2]["item.weight"])


def test_epoch_callbacks_see_each_epoch_and_extend_its_entry(split: Split) -> None:
    model = BPRMF(epochs=3, early_stopping=None, **FAST)
    seen: list[tuple[int, bool]] = []

    def callback(entry: dict) -> dict:
        seen.append((entry["epoch"], model.module.training))
        return {"norm": float(model.module.state_dict()["item.weight"].norm())}

    model.epoch_callbacks.append(callback)
    model.fit(split.train)
    assert seen == [(1, False), (2, False), (3, False)]  # eval mode during the callback
    assert all("norm" in h for h in model.history)
    assert model.stop_reason == "3 epochs"


def test_max_seconds_stops_after_the_epoch_that_spends_it(split: Split) -> None:
    model = BPRMF(epochs=50, early_stopping=None, max_seconds=1e-9, **FAST).fit(split.train)
    assert [h["epoch"] for h in model.history] == [1]
    assert model.stop_reason.startswith("max_seconds")


def test_the_epoch_that_spends_max_seconds_is_validated(
    split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_validation(monkeypatch, [0.1, 0.3])
    model = BPRMF(epochs=50, eval_every=10, max_seconds=1e-9, **FAST)
    model.fit(split.train, split.valid)
    assert len(seen) == 1 and model.best_epoch == 1  # epoch 1 is not a multiple of 10
    assert model.history[-1]["valid"]["ndcg@10"] == 0.1


def test_unknown_early_stopping_metric(split: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_validation(monkeypatch, [0.1])
    with pytest.raises(PolyrecError, match="early_stopping metric 'auc' is not a validation"):
        BPRMF(epochs=2, early_stopping="auc", **FAST).fit(split.train, split.valid)


def test_same_seed_same_weights(split: Split) -> None:
    a = weights(BPRMF(epochs=2, seed=3, **FAST).fit(split.train))
    b = weights(BPRMF(epochs=2, seed=3, **FAST).fit(split.train))
    c = weights(BPRMF(epochs=2, seed=4, **FAST).fit(split.train))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["user.weight"], c["user.weight"])


def test_no_progress_output_without_terminal(split: Split, capsys: pytest.CaptureFixture) -> None:
    BPRMF(epochs=1, **{**FAST, "progress": True}).fit(split.train)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_config_errors_are_one_line() -> None:
    with pytest.raises(PolyrecError, match="unknown key 'epoch'"):
        BPRMF(epoch=3)
    with pytest.raises(PolyrecError, match="early_stopping"):
        BPRMF(early_stopping="NDCG@10")
    with pytest.raises(PolyrecError, match="device"):
        BPRMF(device="gpu0")


class _Toy(TorchRecommender):
    """The smallest TorchRecommender: one score per item; ``loss_scale`` breaks it on purpose."""

    name = "toy"
    loss_scale = 1.0
    n_batches = 1

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return torch.nn.Embedding(dims["n_items"], 1)

    def _batches(self, train: Dataset, rng: np.random.Generator) -> Iterator[dict]:
        for _ in range(self.n_batches):
            yield {"items": torch.from_numpy(rng.permutation(train.items))}

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return -self.train_module(batch["items"]).mean() * self.loss_scale

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self.module.weight.detach().T.expand(len(users), -1).clone()


def test_non_finite_loss_is_an_error(split: Split) -> None:
    model = _Toy(progress=False)
    model.loss_scale = float("nan")
    with pytest.raises(PolyrecError, match="training loss is nan at epoch 1"):
        model.fit(split.train)


def test_epoch_without_batches_is_an_error(split: Split) -> None:
    model = _Toy(progress=False)
    model.n_batches = 0
    with pytest.raises(PolyrecError, match="no training batch in epoch 1"):
        model.fit(split.train)


def test_minimal_model_trains_and_round_trips(split: Split, tmp_path: Path) -> None:
    model = _Toy(epochs=3, lr=0.1, progress=False).fit(split.train)
    assert model.dims == {"n_users": 300, "n_items": 150}
    assert model.history[-1]["loss"] < model.history[0]["loss"]
    restored = _Toy.load(model.save(tmp_path / "toy"))
    torch.testing.assert_close(restored.score([0, 1]), model.score([0, 1]), rtol=0, atol=0)
