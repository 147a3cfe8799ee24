"""``polyrec bench preferences``: the preference-discerning benchmark end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SEQ2SEQ
from typer.testing import CliRunner

import polyrec.bench.preferences as prefbench
from polyrec.cli import app
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.models.generative.benchmark import AXES


@pytest.fixture()
def tiny(monkeypatch, tmp_path: Path):
    """Tiny models and a tiny sentence encoder in place of the benchmark's defaults."""
    from test_text_features import tiny_sentence_model

    torch.set_num_threads(1)
    encoder = tiny_sentence_model(tmp_path / "enc")
    config = {**TINY_SEQ2SEQ, "preference_model": encoder, "epochs": 2, "eval_every": 1}
    monkeypatch.setattr(prefbench, "MENDER_CONFIG", config)
    return make_synthetic(40, 30, 400, n_categories=4, seed=0)


def test_run_preference_benchmark_scores_every_axis(tiny) -> None:
    names = ("sasrec", "tiger", "mender_emb_data")
    out = prefbench.run_preference_benchmark(tiny, names, max_minutes=0.01)
    assert set(out["models"]) == set(names)
    for record in out["models"].values():
        assert record["epochs_run"] >= 1 and record["stop_reason"]
        assert 0.0 <= record["test"]["recall@10"] <= 1.0
    assert set(out["axes"]) == set(AXES)
    assert all(out["benchmark_sizes"][axis] > 0 for axis in AXES)
    for axis, row in out["axes"].items():
        assert set(row) == set(names) | set(prefbench.REFERENCES)
        for metrics in row.values():
            assert 0.0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= 1.0
            assert ("combined_recall@10" in metrics) == (axis == "sentiment")
            if axis == "sentiment":
                assert metrics["combined_recall@10"] <= metrics["recall@10"]
    # a ranking that ignores preferences is the same for "Prefers X" and "Avoid X"
    assert out["axes"]["sentiment"]["sasrec"]["combined_recall@10"] == 0.0
    assert out["axes"]["sentiment"]["popularity"]["combined_recall@10"] == 0.0
    # popularity ignores the history and the preference: one list, so the same scores on
    # every axis whose targets are the test items
    popular = out["axes"]["recommendation"]["popularity"]
    for axis in ("consolidation", "sentiment"):
        scores = out["axes"][axis]["popularity"]
        assert (scores["recall@10"], scores["ndcg@10"]) == (
            popular["recall@10"],
            popular["ndcg@10"],
        )


def test_preference_match_ranks_items_by_cosine_to_the_mean_preference() -> None:
    items = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "ab": [3.0, 3.0]}
    embed = lambda texts: np.array([vectors[t] for t in texts])  # noqa: E731
    ranked = prefbench.preference_match([["a"], ["b"], ["a", "b"], ["ab"]], items, embed)
    # mean of unit vectors: "a" + "b" points along (1, 1), as "ab" does; ties to the lower index
    np.testing.assert_array_equal(ranked, [[0, 2, 1], [1, 2, 0], [2, 0, 1], [2, 0, 1]])
    with pytest.raises(PolyrecError, match="at least one preference"):
        prefbench.preference_match([["a"], []], items, embed)


def test_run_preference_benchmark_refuses_bad_input(tiny) -> None:
    with pytest.raises(PolyrecError, match="unknown model 'bert'"):
        prefbench.run_preference_benchmark(tiny, ["bert"])
    no_reviews = make_synthetic(40, 30, 400, reviews=False, seed=0)
    with pytest.raises(PolyrecError, match="no review text"):
        prefbench.run_preference_benchmark(no_reviews, ["sasrec"])


def test_cli_bench_preferences_writes_results(tiny, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prefbench, "benchmark_dataset", lambda name, data_dir=None: tiny)
    runner = CliRunner()
    out_dir = str(tmp_path / "out")
    args = ["bench", "preferences", "--only", "sasrec", "--max-minutes", "0.01"]
    res = runner.invoke(app, [*args, "--out-dir", out_dir])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "out" / "preferences_synthetic.json").read_text())
    assert list(saved["models"]) == ["sasrec"] and set(saved["axes"]) == set(AXES)
    assert "sentiment       combined_recall@10  sasrec 0.000" in res.output
    # polyrec.cli.main prints a PolyrecError as one line, exit code 2
    bad = runner.invoke(app, ["bench", "preferences", "--only", "nothing"])
    assert isinstance(bad.exception, PolyrecError) and "matches no model" in str(bad.exception)
    suite = runner.invoke(app, ["bench", "benchmarks/suites/smoke.yaml", "--dataset", "ml-1m"])
    assert isinstance(suite.exception, PolyrecError) and "--dataset" in str(suite.exception)
