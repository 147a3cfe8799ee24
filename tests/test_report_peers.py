"""``polyrec report`` on peer-comparison files (benchmarks/bench_vs_recbole.py's JSON)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from polyrec.bench.peers import is_peer_file, read_peer_file, speedups
from polyrec.bench.report import Report, Table, build_report
from polyrec.errors import PolyrecError

REPO = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10")


def _run(
    lib: str,
    seed: int,
    metrics: list[float],
    fit: float,
    ev: float,
    epochs: list[float],
    loader: float | None = None,
) -> dict[str, Any]:
    timings: dict[str, Any] = {"fit_seconds": fit, "epoch_seconds": epochs, "eval_seconds": ev}
    if loader is not None:
        timings["test_loader_seconds"] = loader
    return {
        "library": lib,
        "seed": seed,
        "metrics": dict(zip(METRICS, metrics, strict=True)),
        "timings": timings,
    }


def peer_data() -> dict[str, Any]:
    """A vs_recbole-shaped result: bpr (3 seeds, 2 epochs), pop (1 run), ease skipped."""
    bpr_ours = [
        _run("polyrec", 0, [0.20, 0.25], 5.0, 0.04, [0.30, 0.28]),
        _run("polyrec", 1, [0.21, 0.26], 5.5, 0.05, [0.29, 0.31]),
        _run("polyrec", 2, [0.205, 0.24], 4.5, 0.03, [0.27, 0.33]),
    ]
    bpr_theirs = [
        _run("recbole", 0, [0.18, 0.26], 15.0, 0.12, [0.62, 0.66], loader=0.10),
        _run("recbole", 1, [0.17, 0.24], 16.0, 0.11, [0.60, 0.64], loader=0.12),
        _run("recbole", 2, [0.175, 0.245], 14.0, 0.13, [0.70, 0.58], loader=0.08),
    ]
    pop_ours = [_run("polyrec", 0, [0.115, 0.140], 0.001, 0.019, [])]
    pop_theirs = [_run("recbole", 0, [0.090, 0.140], 2.6, 0.078, [0.39], loader=0.09)]
    return {
        "dataset": "tiny",
        "protocol": {"split": "ratio", "seed": 0, "users": 10, "items": 20},
        "hyperparameters": {"embedding_size": 8},
        "environment": {
            "versions": {"polyrec": "0.1.0", "torch": "2.13.0"},
            "torch_threads": 1,
            "command": "python benchmarks/bench_vs_recbole.py --threads 1",
            "date": "2026-11-30 03:30:55",
            "recbole_versions": {"recbole": "1.2.1"},
        },
        "results": [
            {
                "model": "bpr",
                "epochs": 2,
                "polyrec": {"runs": bpr_ours},
                "recbole": {"runs": bpr_theirs},
                "comparison": {"checks": {"epoch_speedup>=3": False}},
            },
            {
                "model": "pop",
                "epochs": 1,
                "polyrec": {"runs": pop_ours},
                "recbole": {"runs": pop_theirs},
            },
            {"model": "ease", "skipped": "does not fit"},
        ],
    }


def write_peer_file(folder: Path, data: dict[str, Any] | None = None) -> Path:
    """Write the tiny peer file (or ``data``) as ``vs_recbole_tiny.json`` under ``folder``."""
    path = folder / "vs_recbole_tiny.json"
    path.write_text(json.dumps(data if data is not None else peer_data()))
    return path


def table(report: Report, title: str) -> Table:
    return next(t for s in report.sections for t in s.tables if t.title.startswith(title))


def cell(tab: Table, row: dict[str, str], column: str) -> str:
    """The ``column`` cell of the first row whose cells match ``row``."""
    for r in tab.rows:
        cells = dict(zip(tab.headers, r, strict=True))
        if all(cells[k] == v for k, v in row.items()):
            return cells[column]
    raise AssertionError(f"no row {row} in {tab.title}")


def test_peer_file_detected_by_structure(tmp_path: Path) -> None:
    assert is_peer_file(write_peer_file(tmp_path))
    other = tmp_path / "record.json"
    other.write_text(json.dumps({"benchmark": "suite", "runs": []}))
    assert not is_peer_file(other) and not is_peer_file(tmp_path)


def test_peer_numbers_equal_the_file(tmp_path: Path) -> None:
    data = peer_data()
    report = build_report([write_peer_file(tmp_path, data)], plots=False)
    assert [s.heading for s in report.sections] == ["tiny: polyrec vs RecBole 1.2.1"]
    bpr = data["results"][0]
    ours = [r["metrics"]["recall@10"] for r in bpr["polyrec"]["runs"]]
    theirs = [r["metrics"]["recall@10"] for r in bpr["recbole"]["runs"]]
    acc = table(report, "Test accuracy")
    key = {"model": "bpr", "metric": "recall@10"}
    assert cell(acc, key, "polyrec") == f"{np.mean(ours):.4f} ± {np.std(ours, ddof=1):.4f}"
    assert cell(acc, key, "RecBole") == f"{np.mean(theirs):.4f} ± {np.std(theirs, ddof=1):.4f}"
    assert cell(acc, key, "difference") == f"{np.mean(ours) - np.mean(theirs):+.4f}"
    welch = stats.ttest_ind(ours, theirs, equal_var=False).pvalue
    assert cell(acc, key, "Welch p") == f"{welch:.3f}"
    assert welch < 0.05 and cell(acc, key, "verdict") == "polyrec higher"
    # ndcg@10: overlapping seeds -> within noise; pop: single runs, equal to 4 decimals
    assert cell(acc, {"model": "bpr", "metric": "ndcg@10"}, "verdict") == "within noise"
    assert cell(acc, {"model": "pop", "metric": "ndcg@10"}, "verdict").startswith("equal")
    assert cell(acc, {"model": "pop", "metric": "recall@10"}, "Welch p") == "—"
    assert "ease (does not fit)" in acc.note

    times = table(report, "Time")
    speed = "speed-up (RecBole / polyrec)"
    epochs = [s for r in bpr["polyrec"]["runs"] for s in r["timings"]["epoch_seconds"]]
    epochs_peer = [s for r in bpr["recbole"]["runs"] for s in r["timings"]["epoch_seconds"]]
    epoch_ratio = np.median(epochs_peer) / np.median(epochs)
    assert cell(times, {"model": "bpr", "what": "training epoch"}, speed) == f"{epoch_ratio:.2f}x"
    ev = [r["timings"]["eval_seconds"] for r in bpr["polyrec"]["runs"]]
    ev_peer = [r["timings"]["eval_seconds"] for r in bpr["recbole"]["runs"]]
    row = {"model": "bpr", "what": "test evaluation"}
    assert cell(times, row, "polyrec s") == f"{np.median(ev):.4f}"
    assert cell(times, row, speed) == f"{np.median(ev_peer) / np.median(ev):.2f}x"
    with_loader = np.median(
        [
            e + r["timings"]["test_loader_seconds"]
            for e, r in zip(ev_peer, bpr["recbole"]["runs"], strict=True)
        ]
    )
    row = {"model": "bpr", "what": "test evaluation incl. test-loader build"}
    assert cell(times, row, speed) == f"{with_loader / np.median(ev):.2f}x"
    # pop trains no epochs in polyrec: no epoch row, fit ratio 2.6 / 0.001
    assert cell(times, {"model": "pop", "what": "fit"}, speed) == "2600.00x"
    assert not any(r[:2] == ["pop", "training epoch"] for r in times.rows)

    checks = table(report, "Targets")
    assert checks.rows == [["bpr", "epoch_speedup>=3", "FAIL"]]
    env = dict(table(report, "Protocol").rows)  # type: ignore[arg-type]
    assert env["command"] == data["environment"]["command"]
    assert env["date"] == data["environment"]["date"] and env["torch_threads"] == "1"
    assert env["RecBole versions"] == "recbole=1.2.1"
    assert len(table(report, "Runs in the file").rows) == 8


def test_time_plot_skips_a_time_only_one_side_measured(tmp_path: Path) -> None:
    data = peer_data()
    pop = data["results"][1]
    pop["polyrec"]["runs"][0]["timings"]["epoch_seconds"] = [0.01]
    pop["recbole"]["runs"][0]["timings"]["epoch_seconds"] = []
    report = build_report([write_peer_file(tmp_path, data)], plots=True)
    assert any(f.name.endswith("-time") for f in report.sections[0].figures)


def test_peer_report_html_and_markdown_through_the_cli(tmp_path: Path) -> None:
    import typer

    from polyrec.bench.cli import bench, report

    app = typer.Typer()  # mounted as in polyrec.cli
    app.command()(bench)
    app.command()(report)
    path = write_peer_file(tmp_path)
    out, md = tmp_path / "out" / "peers.html", tmp_path / "out" / "peers.md"
    result = CliRunner().invoke(
        app, ["report", str(path), "--out", str(out), "--markdown", str(md), "--title", "Peers"]
    )
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert text.startswith("# Peers") and "## tiny: polyrec vs RecBole 1.2.1" in text
    assert "1 peer-comparison file(s)" in text and "Runs (every number" not in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert [Path(i).name for i in images] == [
        "vs_recbole_tiny-time.png",
        "vs_recbole_tiny-metric-agreement.png",
    ]
    for img in images:
        assert (md.parent / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (md.parent / "peers_files").iterdir()) == sorted(
        Path(i).name for i in images
    )
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == len(images)
    assert all(f'id="{Path(i).stem}"' in page for i in images)
    assert "speed-up (RecBole / polyrec)" in page and str(path) in page


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("environment", "date"), "environment.date"),
        (
            ("results", 0, "recbole", "runs", 1, "timings", "eval_seconds"),
            "results[0].recbole.runs[1].timings.eval_seconds",
        ),
        (
            ("results", 1, "polyrec", "runs", 0, "metrics", "ndcg@10"),
            "results[1].polyrec.runs[0].metrics.ndcg@10",
        ),
        (("results", 0, "polyrec"), "results[0].polyrec"),
    ],
)
def test_malformed_peer_file_names_file_and_field(
    tmp_path: Path, path: tuple[Any, ...], field: str
) -> None:
    data = copy.deepcopy(peer_data())
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    target = write_peer_file(tmp_path, data)
    with pytest.raises(PolyrecError) as err:
        build_report([target], plots=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{target}: missing field {field} ")


def test_mistyped_field_is_named(tmp_path: Path) -> None:
    data = peer_data()
    data["results"][0]["polyrec"]["runs"][2]["timings"]["fit_seconds"] = "slow"
    target = write_peer_file(tmp_path, data)
    with pytest.raises(
        PolyrecError,
        match=r"results\[0\]\.polyrec\.runs\[2\]\.timings\."
        r"fit_seconds is not a number",
    ):
        read_peer_file(target)


@pytest.mark.parametrize("dataset", ["ml-100k", "gowalla"])
def test_committed_results_agree_with_the_benchmark_summary(dataset: str) -> None:
    """The report's definitions are the benchmark's: its stored means and speed-ups."""
    path = REPO / "benchmarks" / "results" / f"vs_recbole_{dataset}.json"
    if not path.is_file():
        pytest.skip(f"{path} not committed")
    raw = {r["model"]: r for r in json.loads(path.read_text())["results"]}
    for res in read_peer_file(path).results:
        if res.skipped is not None:
            continue
        assert res.ours is not None and res.theirs is not None
        stored = raw[res.model]["comparison"]
        ratios = speedups(res)
        for key, name in (
            ("eval", "eval_speedup"),
            ("fit", "fit_speedup"),
            ("eval_loader", "eval_with_loader_speedup"),
            ("epoch", "epoch_speedup"),
        ):
            if name in stored:
                assert ratios[key] == pytest.approx(stored[name], rel=1e-12)
        summary = raw[res.model]["polyrec"]["summary"]["metrics"]
        for metric, values in res.ours.metrics.items():
            assert np.mean(values) == pytest.approx(summary[metric]["mean"], rel=1e-12)
