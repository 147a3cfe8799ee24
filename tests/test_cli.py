"""The ``polyrec`` console script, run as a user runs it (subprocess), on small synthetic data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from polyrec.errors import PolyrecError
from polyrec.experiment import resolve_config

POLYREC = shutil.which("polyrec")
CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*/*.yaml"))
pytestmark = pytest.mark.skipif(POLYREC is None, reason="polyrec console script not installed")

SMALL = [
    "--dataset",
    "synthetic",
    "--set",
    "dataset_options.n_users=150",
    "--set",
    "dataset_options.n_items=80",
    "--set",
    "dataset_options.n_interactions=2500",
]
COMMANDS = ["train", "evaluate", "recommend", "compare", "models", "quickstart", "datasets"]


def polyrec(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "COLUMNS": "200", **(env or {})}
    environ.pop("POLYREC_DATA_DIR", None)
    return subprocess.run(
        [POLYREC, *map(str, args)], capture_output=True, text=True, env=environ, timeout=120
    )


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2 and exactly one ``error: ...`` line on stderr, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trained runs on the same small synthetic split: pop and a 2-epoch BPR."""
    root = tmp_path_factory.mktemp("runs")
    pop = polyrec("train", "pop", *SMALL, "--out", root / "pop", "--k", "5", "--k", "10")
    assert pop.returncode == 0, pop.stderr
    bpr = polyrec(
        "train", "bpr", *SMALL, "--set", "epochs=2", "--set", "progress=false",
        "--out", root / "bpr", "--k", "5", "--k", "10", "--seed", "7",
    )  # fmt: skip
    assert bpr.returncode == 0, bpr.stderr
    (root / "pop.stdout").write_text(pop.stdout)
    return root


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_examples(command: str | None) -> None:
    result = polyrec(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: polyrec" in result.stdout
    if command is not None:
        assert "Example" in result.stdout


def test_train_writes_a_complete_run(runs: Path) -> None:
    out = (runs / "pop.stdout").read_text()
    assert "pop on synthetic" in out and "recall" in out and "ndcg" in out
    for name in ("record.json", "per_user.parquet", "items.parquet", "model/model.json"):
        assert (runs / "pop" / name).is_file(), name
    record = json.loads((runs / "pop" / "record.json").read_text())
    assert record["model"] == "pop" and record["dataset"] == "synthetic"
    assert record["command"].startswith("polyrec train pop --dataset synthetic")
    assert record["config"]["dataset_options"] == {
        "n_users": 150,
        "n_items": 80,
        "n_interactions": 2500,
    }
    assert record["protocol"]["ks"] == [5, 10]
    assert record["protocol"]["exclude"][0].startswith("train(")
    assert record["protocol"]["exclude"][1].startswith("valid(")
    per_user = pd.read_parquet(runs / "pop" / "per_user.parquet")
    assert len(per_user) == record["protocol"]["n_users"]
    assert per_user["ndcg@10"].mean() == pytest.approx(record["metrics"]["test"]["ndcg@10"])
    items = pd.read_parquet(runs / "pop" / "items.parquet")
    assert items["title"].str.len().gt(0).all()


def test_train_torch_model_records_history_and_seed(runs: Path) -> None:
    record = json.loads((runs / "bpr" / "record.json").read_text())
    assert record["seed"] == 7 and record["config"]["seed"] == 7
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert all("loss" in h and "ndcg@10" in h["valid"] for h in record["history"])
    assert len(record["timings"]["epoch_seconds"]) == 2


def test_evaluate_reproduces_recorded_metrics(runs: Path) -> None:
    result = polyrec("evaluate", runs / "pop")
    assert result.returncode == 0, result.stderr
    assert "match the recorded ones" in result.stdout
    assert "valid: pop on synthetic" in result.stdout


def test_recommend_shows_titles_and_matches_the_model(runs: Path) -> None:
    from polyrec.models.base import Recommender

    result = polyrec("recommend", runs / "bpr", "--user", "3", "--user", "10", "--k", "3")
    assert result.returncode == 0, result.stderr
    expected = Recommender.load(runs / "bpr" / "model").recommend([3, 10], 3)
    titles = pd.read_parquet(runs / "bpr" / "items.parquet").set_index("item")["title"]
    for item in expected["item"]:
        assert titles[item] in result.stdout


def test_compare_reports_paired_tests(runs: Path) -> None:
    result = polyrec("compare", runs / "pop", runs / "bpr", "--metric", "NDCG@10")
    assert result.returncode == 0, result.stderr
    assert "ndcg@10" in result.stdout
    assert "p t-test (Holm)" in result.stdout and "p Wilcoxon (Holm)" in result.stdout


def test_models_lists_defaults() -> None:
    result = polyrec("models")
    assert result.returncode == 0, result.stderr
    for name in ("pop", "itemknn", "ease", "bpr", "als"):
        assert name in result.stdout
    assert "l2=500.0" in result.stdout


def test_datasets_lists_and_describes(tmp_path: Path) -> None:
    env = {"POLYREC_CACHE_DIR": str(tmp_path / "cache")}
    listing = polyrec("datasets", "--data-dir", tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if line.startswith("│")}
    assert "missing" in rows["gowalla"] and "yes" in rows["gowalla"]
    assert "generated" in rows["synthetic"]
    info = polyrec("datasets", "info", "synthetic", "--set", "n_users=60", "--set", "n_items=40")
    assert info.returncode == 0, info.stderr
    assert "title, category" in info.stdout and "density" in info.stdout


def test_unknown_model_is_one_line() -> None:
    assert_user_error(polyrec("train", "nope", *SMALL, "--out", "x"), "unknown model 'nope'")


def test_unknown_config_key_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "pop.yaml"
    config.write_text("dataset: synthetic\nneighbours: 5\n")
    result = polyrec("train", "pop", "--config", config, "--out", tmp_path / "run")
    assert_user_error(result, str(config), "unknown key 'neighbours'")
    assert not (tmp_path / "run").exists()


def test_malformed_config_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: synthetic\nsplit: [ratio\n")
    result = polyrec("train", "pop", "--config", config, "--out", tmp_path / "run")
    assert_user_error(result, f"{config}:", "invalid YAML")


def test_unknown_user_and_existing_run_are_one_line(runs: Path) -> None:
    assert_user_error(polyrec("recommend", runs / "pop", "--user", "123456"), "unknown user")
    again = polyrec("train", "pop", *SMALL, "--out", runs / "pop")
    assert_user_error(again, "already holds a run", "--overwrite")
    assert_user_error(polyrec("evaluate", runs / "nothing"), "not a polyrec run directory")


def test_python_dash_m_runs_the_same_app() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polyrec", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("polyrec ")


# ------------------------------------------------------------------------------ config resolution
def test_config_precedence_file_then_set_then_seed(tmp_path: Path) -> None:
    config = tmp_path / "ease.yaml"
    config.write_text(
        "model: ease\ndataset: ml-100k\nl2: 100\nsplit: {method: ratio, test: 0.2}\n"
        "filter: {min_rating: 4}\n"
    )
    spec = resolve_config(
        "ease", config_path=config, overrides={"l2": 300, "split": {"valid": 0.05}}, seed=3
    )
    assert spec.dataset == "ml-100k"
    assert spec.model_config.l2 == 300 and spec.model_config.seed == 3
    assert spec.split is not None
    assert (spec.split.method, spec.split.test, spec.split.valid) == ("ratio", 0.2, 0.05)
    assert spec.filter.min_rating == 4
    again = resolve_config("ease", overrides=spec.to_dict())  # a record's config round-trips
    assert again.to_dict() == spec.to_dict()
    loo = resolve_config("ease", "synthetic", config_path=config, split="leave_one_out")
    assert loo.dataset == "synthetic" and loo.split is not None
    assert loo.split.method == "leave_one_out"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "bpr"}, "config is for model 'bpr'"),
        ({"l2": -1}, "l2"),
        ({"split": {"method": "random"}}, "split"),
        ({"filter": {"k_core": 0}}, "filter"),
    ],
)
def test_config_errors_are_polyrec_errors(overrides: dict, message: str) -> None:
    with pytest.raises(PolyrecError, match=message):
        resolve_config("ease", "synthetic", overrides=overrides)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_resolve(path: Path) -> None:
    from polyrec.config import build, load_yaml
    from polyrec.models.ranking.base import RANKERS, get_ranker_class

    if load_yaml(path).get("model") in RANKERS:  # CTR ranking configs (their own layout)
        from polyrec.models.ranking.experiment import CTRRunConfig

        cfg = build(CTRRunConfig, load_yaml(path), where=str(path))
        get_ranker_class(cfg.model)(cfg.params)
        return
    spec = resolve_config(path.stem, config_path=path)
    assert spec.dataset == path.parent.name and spec.model == path.stem


@pytest.mark.realdata
def test_ease_config_on_ml100k(tmp_path: Path) -> None:
    data_dir = os.environ.get("POLYREC_DATA_DIR")
    if not data_dir:
        pytest.skip("POLYREC_DATA_DIR not set")
    config = Path(__file__).parents[1] / "configs" / "ml-100k" / "ease.yaml"
    result = polyrec(
        "train", "ease", "--config", config, "--data-dir", data_dir, "--out", tmp_path / "ease"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "ease" / "record.json").read_text())
    assert record["protocol"]["n_items"] == 1682 and record["protocol"]["n_users"] == 943
    assert 0.30 < record["metrics"]["test"]["ndcg@10"] < 0.36  # 0.331 when the config was tuned


@pytest.mark.slow
def test_quickstart_falls_back_to_synthetic(tmp_path: Path) -> None:
    env = {"POLYREC_CACHE_DIR": str(tmp_path / "cache")}
    result = polyrec("quickstart", "--data-dir", tmp_path, "--out", tmp_path / "qs", env=env)
    assert result.returncode == 0, result.stderr
    assert "Using the synthetic dataset instead" in result.stdout
    assert "p t-test (Holm)" in result.stdout and "top 5 for user" in result.stdout
    assert (tmp_path / "qs" / "ease" / "record.json").is_file()
    assert (tmp_path / "qs" / "bpr" / "record.json").is_file()


def test_unlearn_forgets_items_and_records_the_report(runs: Path, tmp_path: Path) -> None:
    from polyrec.models.base import Recommender
    from polyrec.record import RunRecord

    recs = Recommender.load(runs / "bpr" / "model").recommend(["0", "1", "2"], k=5)
    forgotten = sorted(set(recs["item"].astype(str)))[:2]
    request = tmp_path / "forget.json"
    request.write_text(json.dumps({"items": forgotten}))
    out = tmp_path / "unlearned"
    result = polyrec(
        "unlearn", runs / "bpr", "--forget", request, "--method", "mmrecun",
        "--set", "epochs=1", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = RunRecord.load(out)
    assert record.protocol["unlearning"]["method"] == "mmrecun"
    assert record.protocol["unlearning"]["stopping_reference"] == "valid"
    assert record.protocol["unlearning"]["forget_interactions"] > 0
    assert {"retain_recall@20", "forget_recall@20", "seconds"} <= set(record.metrics["test"])
    assert record.metrics["test"]["forget_recall@20"] == 0.0  # forgotten items never ranked
    model = Recommender.load(out / "model")
    top = model.recommend(["0", "1", "2"], k=20)
    assert not set(top["item"].astype(str)) & set(forgotten)


def test_unlearn_retrain_early_stops_like_the_run(runs: Path, tmp_path: Path, monkeypatch) -> None:
    """The gold model is fitted as the run was: on validation, less the forgotten rows."""
    from polyrec import unlearn as unlearning
    from polyrec.unlearn.run import unlearn_run

    seen = {}
    real = unlearning.METHODS["retrain"]

    def spy(model, train, request, **kwargs):
        seen.update(kwargs)
        return real(model, train, request, **kwargs)

    monkeypatch.setitem(unlearning.METHODS, "retrain", spy)
    request = tmp_path / "forget.json"
    request.write_text(json.dumps({"users": ["0"]}))
    unlearn_run(runs / "bpr", request, "retrain", tmp_path / "gold")
    valid = seen["valid"]
    assert valid.n_interactions > 0 and "0" not in set(
        valid.user_ids.to_external(valid.users).astype(str)
    )


def test_unlearn_bad_forget_file_is_one_line(runs: Path, tmp_path: Path) -> None:
    result = polyrec(
        "unlearn", runs / "bpr", "--forget", tmp_path / "missing.json", "--out", tmp_path / "u"
    )
    assert_user_error(result, "forget file not found")
