"""Run records: required keys, lower-case metric names, save / load, and what a run writes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from polyrec.errors import PolyrecError
from polyrec.experiment import load_item_titles, load_per_user, run_experiment
from polyrec.record import RECORD_FILE, RunRecord, peak_rss_mb, versions

REQUIRED = {
    "model",
    "dataset",
    "dataset_fingerprint",
    "protocol",
    "config",
    "history",
    "optimizer",
    "metrics",
    "timings",
    "peak_rss_mb",
    "versions",
    "seed",
    "command",
    "created_at",
}
METRIC_KEY = re.compile(r"^[a-z_]+(@[0-9]+)?$")
SMALL = {"n_users": 120, "n_items": 60, "n_interactions": 2000}


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": "pop",
        "dataset": "synthetic",
        "dataset_fingerprint": "abc",
        "protocol": {"mode": "full", "ks": [10]},
        "config": {"seed": 1},
        "metrics": {"test": {"Recall@10": 0.5, "NDCG@10": 0.25}},
        "timings": {"fit_seconds": 1.0, "eval_seconds": 0.5},
        "peak_rss_mb": 100.0,
        "versions": {"python": "3.11"},
        "seed": 1,
        "command": "polyrec train pop",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    return data | changes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "itemknn"
    run_experiment(
        "itemknn",
        "synthetic",
        overrides={"dataset_options": SMALL, "k": 20},
        out_dir=out,
        ks=(5, 10),
        progress=False,
        command="polyrec train itemknn",
    )
    return out


def test_record_json_has_required_keys_and_lower_case_metrics(run_dir: Path) -> None:
    data = json.loads((run_dir / RECORD_FILE).read_text())
    assert set(data) == REQUIRED
    assert set(data["metrics"]) == {"valid", "test"}
    for part in data["metrics"].values():
        assert part and all(METRIC_KEY.match(key) for key in part)
    assert {"recall@10", "ndcg@10", "recall@5", "coverage@10"} <= set(data["metrics"]["test"])
    assert set(data["timings"]) == {"fit_seconds", "epoch_seconds", "eval_seconds"}
    assert {"polyrec", "python", "torch", "numpy", "scipy", "pandas", "implicit"} <= set(
        data["versions"]
    )
    assert data["config"]["k"] == 20 and data["seed"] == 42
    assert data["config"]["split"] == {"method": "ratio", "test": 0.1, "valid": 0.1, "seed": 0}
    assert data["protocol"]["split"]["split"] == "ratio"
    assert data["protocol"]["mode"] == "full" and data["protocol"]["ks"] == [5, 10]
    assert data["command"] == "polyrec train itemknn"
    assert data["peak_rss_mb"] > 0


def test_per_user_metrics_average_to_the_recorded_summary(run_dir: Path) -> None:
    record = RunRecord.load(run_dir)
    users, per_user = load_per_user(run_dir)
    assert len(users) == len(np.unique(users)) == record.protocol["n_users"]
    for key in ("recall@10", "ndcg@5", "hr@10"):
        assert per_user[key].mean() == pytest.approx(record.metrics["test"][key])
    titles = load_item_titles(run_dir)
    assert titles is not None and len(titles) == SMALL["n_items"]


def test_save_load_round_trip_and_lower_cases(tmp_path: Path) -> None:
    record = RunRecord.model_validate(minimal())
    assert record.metrics["test"] == {"recall@10": 0.5, "ndcg@10": 0.25}
    record.save(tmp_path)
    assert RunRecord.load(tmp_path) == record
    assert RunRecord.load(tmp_path / RECORD_FILE) == record
    assert not list(tmp_path.glob("*.tmp"))


def test_multi_seed_summary_values() -> None:
    record = RunRecord.model_validate(
        minimal(metrics={"test": {"recall@10": {"mean": 0.5, "std": 0.01}}})
    )
    assert record.metrics["test"]["recall@10"].mean == 0.5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"valid": {"recall@10": 0.1}}, "'test' section"),
        ({"test": {"recall@10": 0.1, "Recall@10": 0.2}}, "differ only in case"),
    ],
)
def test_invalid_metrics_rejected(metrics: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunRecord.model_validate(minimal(metrics=metrics))


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolyrecError, match="not a polyrec run directory"):
        RunRecord.load(tmp_path)
    (tmp_path / RECORD_FILE).write_text('{"model": "pop",\n oops}')
    with pytest.raises(PolyrecError, match=r"record.json:2: invalid JSON"):
        RunRecord.load(tmp_path)
    (tmp_path / RECORD_FILE).write_text(json.dumps(minimal(seed="x")))
    with pytest.raises(PolyrecError, match="seed"):
        RunRecord.load(tmp_path)


def test_environment_helpers() -> None:
    assert peak_rss_mb() > 1.0
    found = versions()
    assert found["numpy"] == np.__version__ and found["pandas"] == pd.__version__
