"""Benchmark suites, the published-results registry, reports and the scoreboard script."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from helpers import benchmark_script
from scipy import stats
from typer.testing import CliRunner

from polyrec.bench.published import (
    ProtocolDef,
    Published,
    Registry,
    load_registry,
    run_protocol,
)
from polyrec.bench.report import Report, Table, build_report, render_markdown, write_report
from polyrec.bench.suite import load_suite, run_suite
from polyrec.errors import PolyrecError
from polyrec.experiment import load_per_user
from polyrec.record import RunRecord

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TINY = {"n_users": 60, "n_items": 40, "n_interactions": 900, "seed": 0}


def write_suite(folder: Path, models: list[dict], seeds: tuple[int, ...] = (0,)) -> Path:
    spec = {
        "name": "tiny",
        "out_dir": "runs",
        "results": "results/bench_tiny.json",
        "datasets": ["synthetic"],
        "seeds": list(seeds),
        "ks": [5, 10],
        "set": {
            "dataset_options": TINY,
            "split": {"method": "ratio", "test": 0.2, "valid": 0.1, "seed": 0},
        },
        "models": models,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny suite: pop (1 seed), itemknn (2 seeds), bpr (1 seed, 2 epochs)."""
    folder = tmp_path_factory.mktemp("suite")
    models = [
        {"name": "pop", "seeds": [0]},
        {"name": "itemknn"},
        {"name": "bpr", "seeds": [0], "set": {"epochs": 2, "factors": 8}},
    ]
    path = write_suite(folder, models, (0, 1))
    outcomes = run_suite(load_suite(path), isolate=False, log=lambda _: None)
    assert [o.action for o in outcomes] == ["ran"] * 4
    return folder


# ---------------------------------------------------------------------- suites
def test_suite_resume_skips_finished_runs(suite_dir: Path) -> None:
    suite = load_suite(suite_dir / "tiny.yaml")
    assert [r.status for r in suite.runs] == ["done"] * 4
    record = Path(suite.runs[0].run_dir) / "record.json"
    before = record.stat().st_mtime_ns
    outcomes = run_suite(suite, isolate=False, log=lambda _: None)
    assert [o.action for o in outcomes] == ["skipped"] * 4
    assert record.stat().st_mtime_ns == before
    summary = json.loads((suite_dir / "results" / "bench_tiny.json").read_text())
    assert summary["finished"] == 4
    assert {r["run_id"] for r in summary["runs"]} == {r.run_id for r in suite.runs}


def test_suite_reruns_changed_config_and_interrupted_runs(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"name": "pop"}, {"name": "itemknn", "set": {"k": 5}}])
    run_suite(load_suite(path), isolate=False, log=lambda _: None)
    # an interrupted run: files but no record.json
    pop_dir = Path(load_suite(path).runs[0].run_dir)
    (pop_dir / "record.json").unlink()
    (pop_dir / "leftover.tmp").write_text("half written")
    path = write_suite(tmp_path, [{"name": "pop"}, {"name": "itemknn", "set": {"k": 10}}])
    suite = load_suite(path)
    assert [r.status for r in suite.runs] == ["todo", "stale"]
    outcomes = run_suite(suite, isolate=False, log=lambda _: None)
    assert [o.action for o in outcomes] == ["ran", "reran"]
    assert not (pop_dir / "leftover.tmp").exists()
    assert RunRecord.load(suite.runs[1].run_dir).config["k"] == 10


def test_an_interrupted_fit_continues_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polyrec.train import trainer

    bpr = {"name": "bpr", "set": {"epochs": 4, "factors": 8, "early_stopping": None}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = write_suite(tmp_path / "a", [bpr])
    run_epoch = trainer.Trainer._epoch

    def killed_at_epoch_3(self: trainer.Trainer, epoch: int, *args: Any) -> dict[str, Any]:
        if epoch == 3:
            raise RuntimeError("killed")
        return run_epoch(self, epoch, *args)

    monkeypatch.setattr(trainer.Trainer, "_epoch", killed_at_epoch_3)
    (outcome,) = run_suite(load_suite(path), isolate=False, log=lambda _: None)
    assert outcome.action == "failed"
    run_dir = Path(outcome.run_dir)
    (checkpoint,) = run_dir.glob("training-*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)["history"]
    assert [h["epoch"] for h in saved] == [1, 2]
    monkeypatch.undo()
    suite = load_suite(path)
    assert suite.runs[0].status == "resume"
    (outcome,) = run_suite(suite, isolate=False, log=lambda _: None)
    assert outcome.action == "resumed"
    assert not list(run_dir.glob("training-*.ckpt"))  # deleted once the run finished
    resumed = RunRecord.load(run_dir)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == saved  # epochs 1-2 were not trained again
    whole = write_suite(tmp_path / "b", [bpr])
    (outcome,) = run_suite(load_suite(whole), isolate=False, log=lambda _: None)
    assert RunRecord.load(outcome.run_dir).metrics == resumed.metrics


def test_suite_config_errors_before_any_training(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"name": "pop"}, {"name": "itemknn", "set": {"kk": 5}}])
    with pytest.raises(PolyrecError, match="unknown key 'kk'"):
        load_suite(path)
    assert not (tmp_path / "runs").exists()
    path = write_suite(tmp_path, [{"name": "pop"}, {"name": "pop"}])
    with pytest.raises(PolyrecError, match="appears twice"):
        load_suite(path)


def test_failing_run_is_reported_and_the_suite_goes_on(tmp_path: Path) -> None:
    path = write_suite(tmp_path, [{"name": "pop"}])
    spec = yaml.safe_load(path.read_text())
    spec["datasets"] = ["no-such-data", "synthetic"]
    path.write_text(yaml.safe_dump(spec))
    outcomes = run_suite(load_suite(path), isolate=False, log=lambda _: None)
    assert [o.action for o in outcomes] == ["failed", "ran"]
    assert "unknown dataset 'no-such-data'" in outcomes[0].error
    assert not (Path(outcomes[0].run_dir) / "record.json").exists()


def test_bench_cli_runs_then_skips(tmp_path: Path) -> None:
    import typer

    from polyrec.bench.cli import bench, report

    app = typer.Typer()
    app.command()(bench)
    app.command()(report)
    path = write_suite(tmp_path, [{"name": "pop"}])
    runner = CliRunner()
    first = runner.invoke(app, ["bench", str(path), "--no-isolate"])
    assert first.exit_code == 0, first.output
    assert "1 ran" in first.output
    second = runner.invoke(app, ["bench", str(path), "--no-isolate"])
    assert "0 ran" in second.output and "1 already finished" in second.output
    out = tmp_path / "r.html"
    rep = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out)])
    assert rep.exit_code == 0, rep.output
    assert out.read_text().count("<img ") == 2  # metric-vs-K and time/memory; pop has no history


# ---------------------------------------------------------------------- published
def registry_with(same: dict, other: dict) -> Registry:
    return Registry(
        protocols={
            "same": ProtocolDef(description="d", match=same),
            "other": ProtocolDef(description="d", match=other),
        }
    )


def pub(model: str, metric: str, value: float, protocol: str) -> Published:
    return Published("P", "T1", model, "synthetic", protocol, metric, value, "V", "src")


def test_published_value_with_another_protocol_is_refused(suite_dir: Path) -> None:
    record = RunRecord.load(suite_dir / "runs/synthetic/pop/seed-0").model_dump()
    assert run_protocol(record) == {
        "split": "ratio",
        "ranking": "full",
        "history_masked": True,
        "filtered": False,
    }
    reg = registry_with(
        {"split": "ratio", "ranking": "full"}, {"split": "ratio", "ranking": "sampled-uni100"}
    )
    ours = float(record["metrics"]["test"]["ndcg@10"])
    same, sampled = pub("pop", "ndcg@10", 0.2, "same"), pub("pop", "ndcg@10", 0.5, "other")
    reg.values = [same, sampled]
    assert reg.comparable(record) == [same]
    diff, rel = reg.gap(same, record)
    assert diff == pytest.approx(ours - 0.2) and rel == pytest.approx((ours - 0.2) / 0.2)
    with pytest.raises(PolyrecError, match=r"ranking=sampled-uni100.*ranking=full.*not comparable"):
        reg.gap(sampled, record)
    elsewhere = Published("P", "T", "pop", "ml-1m", "same", "ndcg@10", 0.2, "V", "s")
    with pytest.raises(PolyrecError, match="not comparable"):
        reg.check_comparable(elsewhere, record)


def test_registry_file_validation(tmp_path: Path) -> None:
    reg = load_registry(REPO / "benchmarks" / "published.yaml")
    gowalla = {(p.model, p.metric): p.value for p in reg.for_dataset("gowalla")}
    assert gowalla[("lightgcn", "recall@20")] > 0 and ("gfcf", "ndcg@20") in gowalla
    assert {p.tag for p in reg.values} <= {"V", "S", "I"}
    bad = tmp_path / "p.yaml"
    entry = {"paper": "p", "table": "t", "model": "m", "dataset": "d", "tag": "V", "source": "s"}
    bad.write_text(
        yaml.safe_dump(
            {
                "protocols": {"a": {"description": "x", "match": {"split": "given"}}},
                "results": [{**entry, "protocol": "b", "metrics": {"ndcg@10": 0.1}}],
            }
        )
    )
    with pytest.raises(PolyrecError, match="unknown protocol 'b'"):
        load_registry(bad)
    bad.write_text(
        yaml.safe_dump(
            {"protocols": {"a": {"description": "x", "match": {"splt": "g"}}}, "results": []}
        )
    )
    with pytest.raises(PolyrecError, match="unknown match key 'splt'"):
        load_registry(bad)


# ---------------------------------------------------------------------- report
def table(report: Report, section: int, title: str) -> Table:
    return next(t for t in report.sections[section].tables if t.title.startswith(title))


def test_report_numbers_trace_to_records(suite_dir: Path) -> None:
    report = build_report([suite_dir / "runs"], plots=False)
    acc = table(report, 0, "Test accuracy")
    rows = {r[0]: dict(zip(acc.headers, r, strict=True)) for r in acc.rows}
    pop = RunRecord.load(suite_dir / "runs/synthetic/pop/seed-0").metrics["test"]
    assert rows["pop"]["ndcg@10"] == f"{pop['ndcg@10']:.4f}"
    knn = [
        RunRecord.load(suite_dir / f"runs/synthetic/itemknn/seed-{s}").metrics["test"]["recall@5"]
        for s in (0, 1)
    ]
    mean, std = np.mean(knn), np.std(knn, ddof=1)
    assert rows["itemknn"]["recall@5"] == f"{mean:.4f} ± {std:.4f}"
    assert rows["itemknn"]["seeds"] == "2"
    cost = table(report, 0, "Time and memory")
    rec = RunRecord.load(suite_dir / "runs/synthetic/pop/seed-0")
    assert cost.rows[-1][0] == "pop" and cost.rows[-1][2] == f"{rec.timings.fit_seconds:.2f}"
    beyond = table(report, 0, "Beyond accuracy")
    assert "coverage@10" in beyond.headers and "gini@5" in beyond.headers
    assert len(report.runs.rows) == 4


def test_report_significance_matches_scipy_with_holm(suite_dir: Path) -> None:
    report = build_report([suite_dir / "runs"], significance_metrics=["ndcg@10"], plots=False)
    sig = table(report, 0, "Paired significance")
    assert len(sig.rows) == 3  # bpr-itemknn, bpr-pop, itemknn-pop
    rows = [dict(zip(sig.headers, r, strict=True)) for r in sig.rows]
    row = next(r for r in rows if {r["A"], r["B"]} == {"itemknn", "pop"})
    users_p, pop = load_per_user(suite_dir / "runs/synthetic/pop/seed-0")
    knn_runs = [load_per_user(suite_dir / f"runs/synthetic/itemknn/seed-{s}") for s in (0, 1)]
    assert all(np.array_equal(u, users_p) for u, _ in knn_runs)
    knn = np.mean([v["ndcg@10"] for _, v in knn_runs], axis=0)
    a, b = (knn, pop["ndcg@10"]) if row["A"] == "itemknn" else (pop["ndcg@10"], knn)
    t_p = stats.ttest_rel(a, b).pvalue
    w_p = stats.wilcoxon(a, b).pvalue
    fmt = lambda p: f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"  # noqa: E731
    assert row["t p"] == fmt(t_p) and row["Wilcoxon p"] == fmt(w_p)
    assert row["users"] == str(len(users_p))


def test_holm_over_the_whole_table(suite_dir: Path) -> None:
    report = build_report(
        [suite_dir / "runs"], significance_metrics=["ndcg@10", "recall@10"], plots=False
    )
    sig = table(report, 0, "Paired significance")
    raw = np.array([float(r[7]) for r in sig.rows])
    adjusted = np.array([float(r[8]) for r in sig.rows])
    m = len(raw)
    order = np.argsort(raw)
    expected = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * raw[order]))
    np.testing.assert_allclose(adjusted[order], expected, rtol=2e-2, atol=3e-3)


def test_report_published_same_protocol_only(suite_dir: Path) -> None:
    reg = registry_with({"split": "ratio", "ranking": "full"}, {"split": "leave_one_out"})
    reg.values = [pub("pop", "ndcg@10", 0.25, "same"), pub("pop", "hr@10", 0.9, "other")]
    report = build_report([suite_dir / "runs"], registry=reg, plots=False)
    same = table(report, 0, "Published results under the same protocol")
    other = table(report, 0, "Published results under another protocol")
    ours = RunRecord.load(suite_dir / "runs/synthetic/pop/seed-0").metrics["test"]["ndcg@10"]
    row = dict(zip(same.headers, same.rows[0], strict=True))
    assert row["published"] == "0.2500" and row["ours"] == f"{ours:.4f}"
    assert row["gap"] == f"{ours - 0.25:+.4f}"
    assert len(same.rows) == 1 and len(other.rows) == 1 and other.rows[0][1] == "hr@10"


def test_report_markdown_and_html_outputs(suite_dir: Path, tmp_path: Path) -> None:
    report = build_report([suite_dir / "runs"])
    written = write_report(report, tmp_path / "r.html", markdown=tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# polyrec benchmark report")
    assert "## synthetic" in md and "| itemknn | 2 |" in md and "| bpr | 1 |" in md
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(images) == len(report.sections[0].figures) == 3
    assert [i.rsplit("-", 2)[-2:] for i in images][1] == ["learning", "curves.png"]
    for img in images:
        assert (tmp_path / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html_text = (tmp_path / "r.html").read_text()
    assert html_text.count('src="data:image/png;base64,') == len(images)
    assert all(p.exists() for p in written)
    assert render_markdown(report, "imgs").count("](imgs/") == len(images)


def test_report_from_result_json_files(suite_dir: Path, tmp_path: Path) -> None:
    single = tmp_path / "graph_synthetic_pop.json"
    shutil.copy(suite_dir / "runs/synthetic/pop/seed-0/record.json", single)
    report = build_report([suite_dir / "results" / "bench_tiny.json", single], plots=False)
    acc = table(report, 0, "Test accuracy")
    assert [r[0] for r in acc.rows] == ["bpr", "graph_synthetic_pop", "itemknn", "pop"]
    assert dict(zip(acc.headers, acc.rows[2], strict=True))["seeds"] == "2"
    # no per-user values next to JSON records: no significance table
    assert not any(t.title.startswith("Paired") for t in report.sections[0].tables)


def test_report_keeps_other_data_and_split_fractions_apart(suite_dir: Path, tmp_path: Path) -> None:
    """Runs are averaged and paired only on the same data split the same way."""
    record = json.loads((suite_dir / "runs/synthetic/pop/seed-0/record.json").read_text())
    variants = {
        "other_fractions": ("split", {"split": "ratio", "test": 0.3, "valid": 0.1, "seed": 0}),
        "other_data": ("fp", "0" * 16),
    }
    for name, (what, value) in variants.items():
        changed = json.loads(json.dumps(record))
        if what == "split":
            changed["protocol"]["split"] = value
        else:
            changed["dataset_fingerprint"] = value
        (tmp_path / f"{name}.json").write_text(json.dumps(changed))
    paths = [suite_dir / "runs", tmp_path / "other_fractions.json", tmp_path / "other_data.json"]
    report = build_report(paths, plots=False)
    assert len(report.sections) == 3
    assert sorted(len(s.models) for s in report.sections) == [1, 1, 3]
    assert {s.protocol.get("split_test") for s in report.sections} == {0.2, 0.3}


def test_report_names_the_bad_run_of_a_suite_summary(suite_dir: Path, tmp_path: Path) -> None:
    summary = json.loads((suite_dir / "results" / "bench_tiny.json").read_text())
    del summary["runs"][1]["record"]["metrics"]
    bad = tmp_path / "bench_bad.json"
    bad.write_text(json.dumps(summary))
    with pytest.raises(PolyrecError, match=r"bench_bad\.json: runs\.1\.record: metrics: Field"):
        build_report([bad], plots=False)
    del summary["runs"][0]["record"]
    bad.write_text(json.dumps(summary))
    with pytest.raises(PolyrecError, match=r"bench_bad\.json: runs\.0: missing 'record'"):
        build_report([bad], plots=False)


def test_report_refuses_missing_runs(tmp_path: Path) -> None:
    with pytest.raises(PolyrecError, match=r"no record\.json found"):
        build_report([tmp_path])


# ---------------------------------------------------------------------- scoreboard
def test_scoreboard_rewrites_only_its_block(suite_dir: Path, tmp_path: Path) -> None:
    mod = benchmark_script("make_scoreboard")
    results = tmp_path / "results"
    shutil.copytree(suite_dir / "results", results)
    (results / "timing_only.json").write_text(json.dumps({"benchmark": "x", "seconds": 1}))
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nHand-written intro.\n\n## Notes\n\nKeep me.\n")
    pubs = tmp_path / "published.yaml"
    pubs.write_text(
        yaml.safe_dump(
            {
                "protocols": {"p": {"description": "d", "match": {"split": "ratio"}}},
                "results": [
                    {
                        "paper": "P",
                        "table": "T",
                        "model": "pop",
                        "dataset": "synthetic",
                        "protocol": "p",
                        "metrics": {"ndcg@10": 0.2},
                        "tag": "S",
                        "source": "s",
                    }
                ],
            }
        )
    )
    args = ["--results", str(results), "--readme", str(readme), "--published", str(pubs)]
    assert mod.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n\n## Notes\n\nKeep me.\n")
    block = text[text.index(mod.BEGIN) : text.index(mod.END)]
    assert "| itemknn |" in block and "| pop |" in block and "published 0.2000 [S]" in block
    assert mod.main([*args, "--check"]) == 0
    readme.write_text(text.replace("Keep me.", "Edited by a person."))
    assert mod.main(args) == 0
    assert "Edited by a person." in readme.read_text()
    assert readme.read_text().count(mod.BEGIN) == 1


def test_scoreboard_pools_seed_files_of_one_configuration(tmp_path: Path) -> None:
    mod = benchmark_script("make_scoreboard")

    def sequential(name: str, seed: int, hr: float, status: str, **config: Any) -> None:
        (tmp_path / name).write_text(
            json.dumps(
                {
                    "benchmark": "sequential",
                    "model": "sasrec",
                    "dataset": "d",
                    "protocol": {"split": {"split": "leave_one_out"}, "ranking": "full"},
                    "config": {"seed": seed, "dim": 50, **config},
                    "status": status,
                    "test_at_best_valid": {"hr@10": hr},
                }
            )
        )

    sequential("a.json", 42, 0.10, "finished")
    sequential("b.json", 43, 0.20, "finished")
    sequential("c.json", 42, 0.30, "finished")  # same seed as a.json: not pooled with it
    sequential("d.json", 44, 0.90, "finished", dim=64)  # another configuration
    sequential("e.json", 45, 0.90, "running")
    entries, _ = mod.read_entries(tmp_path)
    for entry, mtime in zip(entries, (1, 2, 3, 0, 4), strict=True):
        entry.mtime = mtime
    [row] = mod.latest_rows([e for e in entries if e.source != "e.json"])
    assert row.source == "c.json, b.json"
    assert sorted(r["metrics"]["test"]["hr@10"] for r in row.records) == [0.2, 0.3]
    [running] = mod.latest_rows(entries)  # a running newest file stands alone
    assert running.source == "e.json" and running.status == "running"
