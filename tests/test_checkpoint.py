"""Resumable training: a fit stopped and continued from its checkpoint equals one that ran
through, for dense Adam, RowSparseAdam, dropout and a model that builds semantic IDs before
training (TIGER); finished fits stay finished; a checkpoint of another run is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TINY_SEQ2SEQ, fake_validation, weights

from polyrec.data.split import Split, leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.generative.tiger import TIGER
from polyrec.models.graph.lightgcn import LightGCN
from polyrec.models.sequential.sasrec import SASRec
from polyrec.models.torch_base import TorchRecommender

QUIET = {"progress": False, "early_stopping": None}


@pytest.fixture(scope="module")
def split() -> Split:
    return leave_one_out(make_synthetic(200, 120, 4000, seed=0))


def _assert_same_fit(a: TorchRecommender, b: TorchRecommender) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert [h["epoch"] for h in a.history] == [h["epoch"] for h in b.history]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


MODELS: list[tuple[type[TorchRecommender], dict[str, Any], str]] = [
    (BPRMF, {"factors": 8, "batch_size": 512, "lr": 0.01}, "Adam"),
    (BPRMF, {"factors": 8, "batch_size": 16, "lr": 0.01}, "RowSparseAdam"),
    (LightGCN, {"factors": 8, "batch_size": 512, "lr": 0.01, "n_layers": 2}, "Adam"),
    (SASRec, {"dim": 16, "heads": 1, "blocks": 1, "max_len": 20, "dropout": 0.3}, "Adam"),
    (TIGER, {**TINY_SEQ2SEQ, "dropout": 0.3}, "Adam"),
]


@pytest.mark.parametrize(("cls", "options", "optimizer"), MODELS)
def test_resumed_fit_equals_the_uninterrupted_one(
    cls: type[TorchRecommender],
    options: dict[str, Any],
    optimizer: str,
    split: Split,
    tmp_path: Path,
) -> None:
    path = tmp_path / "fit.ckpt"
    through = cls(epochs=4, **(options | QUIET)).fit(split.train)
    first = cls(epochs=2, checkpoint=str(path), **(options | QUIET)).fit(split.train)
    assert first.optimizer_name == optimizer
    assert path.is_file() and not path.with_name("fit.ckpt.tmp").exists()
    resumed = cls(epochs=4, checkpoint=str(path), **(options | QUIET)).fit(split.train)
    _assert_same_fit(resumed, through)


def test_an_early_stopped_fit_stays_stopped_unless_patience_grows(
    split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_validation(monkeypatch, [0.3, 0.5, 0.4, 0.2, 0.6, 0.1, 0.1, 0.1])
    options = {"factors": 8, "batch_size": 512, "epochs": 10, "progress": False}
    path = str(tmp_path / "fit.ckpt")
    stopped = BPRMF(patience=2, checkpoint=path, **options).fit(split.train, split.valid)
    assert stopped.stop_reason == "early stopping after epoch 4" and stopped.best_epoch == 2
    again = BPRMF(patience=2, checkpoint=path, **options).fit(split.train, split.valid)
    assert len(seen) == 4  # nothing trained or validated
    assert again.stop_reason == stopped.stop_reason and again.best_epoch == 2
    _assert_same_fit(again, stopped)  # the best epoch's weights, restored from the file
    longer = BPRMF(patience=3, checkpoint=path, **options).fit(split.train, split.valid)
    assert [h["epoch"] for h in longer.history] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert longer.best_epoch == 5 and longer.stop_reason == "early stopping after epoch 8"


def test_a_spent_time_budget_is_kept_and_a_larger_one_continues(
    split: Split, tmp_path: Path
) -> None:
    options = {"factors": 8, "batch_size": 512, "epochs": 3, **QUIET}
    path = str(tmp_path / "fit.ckpt")
    cut = BPRMF(max_seconds=1e-9, checkpoint=path, **options).fit(split.train)
    assert cut.stop_reason.startswith("max_seconds") and len(cut.history) == 1
    same = BPRMF(max_seconds=1e-9, checkpoint=path, **options).fit(split.train)
    assert len(same.history) == 1 and same.stop_reason == cut.stop_reason
    more = BPRMF(checkpoint=path, **options).fit(split.train)
    assert [h["epoch"] for h in more.history] == [1, 2, 3] and more.stop_reason == "3 epochs"
    _assert_same_fit(more, BPRMF(**options).fit(split.train))


def test_a_checkpoint_of_another_run_is_refused(split: Split, tmp_path: Path) -> None:
    path = str(tmp_path / "fit.ckpt")
    BPRMF(factors=8, epochs=1, checkpoint=path, **QUIET).fit(split.train)
    with pytest.raises(PolyrecError, match=r"another run \(factors: 8 -> 16\)"):
        BPRMF(factors=16, epochs=2, checkpoint=path, **QUIET).fit(split.train)
    with pytest.raises(PolyrecError, match="training data differ"):
        BPRMF(factors=8, epochs=2, checkpoint=path, **QUIET).fit(split.valid)
    with pytest.raises(PolyrecError, match="model: bpr -> lightgcn"):
        LightGCN(factors=8, epochs=2, checkpoint=path, **QUIET).fit(split.train)
    Path(path).write_text("not a checkpoint")
    with pytest.raises(PolyrecError, match="not a readable polyrec checkpoint"):
        BPRMF(factors=8, epochs=2, checkpoint=path, **QUIET).fit(split.train)
