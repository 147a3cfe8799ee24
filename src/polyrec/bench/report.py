"""``polyrec report``: run records -> one HTML (and Markdown) report with tables and plots.

Runs are grouped by dataset and protocol (:func:`polyrec.bench.published.run_protocol`); within a
group by model label (a suite's label from ``bench.json``, else the model name), whose seeds are
summarised as mean +- sample std (:func:`polyrec.eval.significance.summarize_seeds`). Per
group the report holds:

- test accuracy, beyond-accuracy metrics, time and memory, each mean +- std over seeds;
- the published values of ``benchmarks/published.yaml`` measured under the same protocol, with
  ours and the gap beside each; values under another protocol are listed as not compared;
- paired significance between every two models on per-user test metrics (each user's value
  averaged over seeds, users common to both): paired t-test and Wilcoxon signed-rank test
  (:func:`polyrec.eval.significance.paired_tests`), Holm-adjusted over every comparison of the
  group (:func:`polyrec.eval.significance.holm`);
- plots (matplotlib PNGs): metric vs K, learning curves from the records' training history,
  time and memory per model.

Every number comes from the ``record.json`` / ``per_user.parquet`` of the runs listed in the
report's last table; nothing is typed in by hand.

A peer-comparison file among the inputs (``benchmarks/results/vs_recbole_<dataset>.json``,
recognised by its structure) adds a section of its own, polyrec beside the other library:
see :mod:`polyrec.bench.peers`.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from polyrec.bench.published import Published, Registry, describe, run_protocol
from polyrec.bench.suite import read_bench_info
from polyrec.errors import PolyrecError
from polyrec.eval.significance import holm, paired_tests, summarize_seeds
from polyrec.experiment import PER_USER_FILE, load_per_user
from polyrec.record import RECORD_FILE, RunRecord, now_utc

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

ACCURACY_FAMILIES = ("recall", "ndcg", "hr", "mrr")
BEYOND_FAMILIES = ("coverage", "gini", "novelty", "ild")
DEFAULT_SIGNIFICANCE = ("ndcg@10", "recall@10")
DPI = 72


@dataclass
class RunInfo:
    """One run directory: its record and the label it is grouped under."""

    run_dir: Path
    record: RunRecord
    label: str

    @property
    def seed(self) -> int:
        """The model seed of the run."""
        return self.record.seed


@dataclass
class Table:
    """A rendered-agnostic table: a title, column headers, rows of strings, a note."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    """One plot: a file-safe name, a caption and the PNG bytes."""

    name: str
    caption: str
    png: bytes


@dataclass
class Section:
    """One dataset under one protocol (or one peer-comparison file)."""

    dataset: str
    protocol: dict[str, Any]
    models: list[str]
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    heading: str = ""  # the section title; the dataset name when empty
    note: str = ""  # a line under the protocol, e.g. where the numbers come from


@dataclass
class Report:
    """Everything the renderers print."""

    title: str
    created_at: str
    sections: list[Section]
    runs: Table
    peer_files: list[str] = field(default_factory=list)

    def sources(self) -> str:
        """What the report was built from, for its first line."""
        parts = []
        if self.runs.rows or not self.peer_files:
            parts.append(f"{len(self.runs.rows)} run records (listed at the end)")
        if self.peer_files:
            parts.append(
                f"{len(self.peer_files)} peer-comparison file(s) (named in their sections)"
            )
        return " and ".join(parts)


# ---------------------------------------------------------------------- collecting
def collect_runs(paths: Iterable[str | Path]) -> list[RunInfo]:
    """The runs under ``paths``: run directories, folders searched for them recursively, and
    JSON files holding one run record (``benchmarks/results/*.json``, labelled by file name)
    or a ``polyrec bench`` suite summary. Runs known only from JSON have no per-user values, so
    they take no part in the significance tests."""
    found: dict[tuple[Path, str], RunInfo] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.name == RECORD_FILE:
            p = p.parent
        if not p.exists():
            raise PolyrecError(f"{p}: no such run directory, folder or JSON file")
        if p.is_file():
            for key, info in _runs_from_json(p):
                found.setdefault((p.resolve(), key), info)
            continue
        dirs = (
            [p] if (p / RECORD_FILE).is_file() else sorted(r.parent for r in p.rglob(RECORD_FILE))
        )
        if not dirs:
            raise PolyrecError(f"{p}: no {RECORD_FILE} found (not a run or a folder of runs)")
        for d in dirs:
            if (d.resolve(), "") not in found:
                bench = read_bench_info(d) or {}
                record = RunRecord.load(d)
                found[d.resolve(), ""] = RunInfo(d, record, str(bench.get("label") or record.model))
    return list(found.values())


def _runs_from_json(path: Path) -> list[tuple[str, RunInfo]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PolyrecError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict) and data.get("benchmark") == "suite":
        out = []
        for i, run in enumerate(data.get("runs", [])):
            try:
                run_id, label, raw = str(run["run_id"]), str(run["label"]), run["record"]
            except (KeyError, TypeError) as exc:
                raise PolyrecError(f"{path}: runs.{i}: missing {exc}") from None
            record = RunRecord.parse(raw, f"{path}: runs.{i}.record")
            out.append((run_id, RunInfo(path, record, label)))
        return out
    return [("", RunInfo(path, RunRecord.load(path), path.stem))]


def build_report(
    paths: Iterable[str | Path],
    *,
    registry: Registry | None = None,
    significance_metrics: Sequence[str] = DEFAULT_SIGNIFICANCE,
    alpha: float = 0.05,
    title: str = "polyrec benchmark report",
    plots: bool = True,
) -> Report:
    """Read the runs under ``paths`` and compute every table and plot of the report; a
    peer-comparison file among ``paths`` becomes a section of its own."""
    # imported here: polyrec.bench.peers builds on this module's tables and plots
    from polyrec.bench.peers import is_peer_file, peer_section, read_peer_file

    paths = [Path(p) for p in paths]
    peer_paths = [p for p in paths if is_peer_file(p)]
    runs = collect_runs([p for p in paths if p not in peer_paths])
    groups: dict[tuple[str, tuple[tuple[str, Any], ...]], list[RunInfo]] = {}
    for run in runs:
        proto: dict[str, Any] = run_protocol(run.record.model_dump())
        # runs are only averaged and paired on the same data split the same way
        proto.update(_split_options(run.record.protocol))
        if run.record.dataset_fingerprint:
            proto["data"] = run.record.dataset_fingerprint
        groups.setdefault((run.record.dataset, tuple(proto.items())), []).append(run)
    sections = []
    for (dataset, proto_items), members in sorted(groups.items(), key=lambda kv: kv[0][0]):
        by_label: dict[str, list[RunInfo]] = {}
        for run in sorted(members, key=lambda r: (r.label, r.seed)):
            by_label.setdefault(run.label, []).append(run)
        section = Section(dataset, dict(proto_items), list(by_label))
        _fill_section(section, by_label, registry, significance_metrics, alpha, plots)
        sections.append(section)
    slugs: set[str] = set()
    for path in peer_paths:
        slug = _slug(path.stem)
        while slug in slugs:  # two files of the same name: keep their PNG names apart
            slug += "-2"
        slugs.add(slug)
        sections.append(peer_section(read_peer_file(path), alpha=alpha, plots=plots, slug=slug))
    return Report(
        title, now_utc(), sections, _runs_table(runs), peer_files=[str(p) for p in peer_paths]
    )


def _split_options(protocol: dict[str, Any]) -> dict[str, Any]:
    """The split's parameters (fractions, seed) from a record's protocol, as ``split_*``."""
    split = protocol.get("split")
    if not isinstance(split, dict):
        return {}
    return {f"split_{k}": split[k] for k in ("test", "valid", "seed") if k in split}


def _fill_section(
    section: Section,
    by_label: dict[str, list[RunInfo]],
    registry: Registry | None,
    sig_metrics: Sequence[str],
    alpha: float,
    plots: bool,
) -> None:
    summaries = {label: _summary(runs) for label, runs in by_label.items()}
    ks = sorted({k for runs in by_label.values() for k in runs[0].record.protocol.get("ks", [])})
    section.tables.append(
        _metric_table(
            "Test accuracy (mean ± std over seeds)", by_label, summaries, ACCURACY_FAMILIES, ks
        )
    )
    if registry is not None:
        section.tables.extend(_published_tables(section, by_label, summaries, registry))
    sig = _significance_table(by_label, sig_metrics, alpha)
    if sig is not None:
        section.tables.append(sig)
    beyond = _metric_table(
        "Beyond accuracy (test top-K lists, mean ± std)", by_label, summaries, BEYOND_FAMILIES, ks
    )
    if beyond.headers[2:]:
        section.tables.append(beyond)
    section.tables.append(_cost_table(by_label))
    if plots:
        proto = section.protocol
        data = str(proto.get("data", ""))[:8]  # two sections of one dataset: distinct files
        slug = _slug(
            "-".join(filter(None, [section.dataset, proto["split"], proto["ranking"], data]))
        )
        section.figures.append(_plot_metric_vs_k(slug, by_label, summaries, ks))
        curves = _plot_learning_curves(slug, by_label)
        if curves is not None:
            section.figures.append(curves)
        section.figures.append(_plot_costs(slug, by_label))


def _summary(runs: list[RunInfo]) -> dict[str, dict[str, float]]:
    tests = [{k: float(v) for k, v in r.record.metrics["test"].items()} for r in runs]
    common = set.intersection(*(set(t) for t in tests))
    return summarize_seeds([{k: t[k] for k in sorted(common)} for t in tests])


def _fmt(stat: dict[str, float] | None, n: int, digits: int = 4) -> str:
    if stat is None:
        return "—"
    if n == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _metric_table(
    title: str,
    by_label: dict[str, list[RunInfo]],
    summaries: dict[str, dict[str, dict[str, float]]],
    families: Sequence[str],
    ks: Sequence[int],
) -> Table:
    present = set().union(*(s.keys() for s in summaries.values()))
    columns = [f"{f}@{k}" for f in families for k in ks if f"{f}@{k}" in present]
    rows = [
        [label, str(len(runs))] + [_fmt(summaries[label].get(c), len(runs)) for c in columns]
        for label, runs in by_label.items()
    ]
    return Table(title, ["model", "seeds", *columns], rows)


def _published_tables(
    section: Section,
    by_label: dict[str, list[RunInfo]],
    summaries: dict[str, dict[str, dict[str, float]]],
    registry: Registry,
) -> list[Table]:
    """Published values beside ours (same protocol only) and the ones not compared."""
    sample = next(iter(by_label.values()))[0].record.model_dump()
    same, other = [], []
    for pub in registry.for_dataset(section.dataset):
        try:
            registry.check_comparable(pub, sample)
        except PolyrecError as exc:
            other.append((pub, str(exc)))
            continue
        same.append(pub)
    tables = []
    if same:
        rows = []
        for pub in same:
            labels = [lab for lab, runs in by_label.items() if runs[0].record.model == pub.model]
            if not labels:
                rows.append(_published_row(pub, "—", "—", "—", "(not run)"))
            for label in labels:
                stat = summaries[label].get(pub.metric)
                if stat is None:
                    rows.append(_published_row(pub, label, "—", "—", "(metric not measured)"))
                    continue
                gaps = [registry.gap(pub, r.record.model_dump()) for r in by_label[label]]
                rel = float(np.mean([g[1] for g in gaps]))
                rows.append(
                    _published_row(
                        pub,
                        label,
                        _fmt(stat, len(by_label[label])),
                        f"{stat['mean'] - pub.value:+.4f}",
                        f"{100 * rel:+.1f} %",
                    )
                )
        tables.append(
            Table(
                "Published results under the same protocol",
                ["model", "run", "metric", "ours", "published", "gap", "gap %", "source", "tag"],
                rows,
                note="tag V: verified in the cited file; S: a secondary copy of the paper table "
                "agrees; I: unverified (check the paper before claiming a match). Gap: ours - "
                "published (mean over seeds).",
            )
        )
    if other:
        rows = [
            [p.model, p.metric, f"{p.value:.4f}", f"{p.paper}, {p.table}", p.protocol, why]
            for p, why in other
        ]
        tables.append(
            Table(
                "Published results under another protocol (not compared)",
                ["model", "metric", "published", "source", "protocol", "why not"],
                rows,
            )
        )
    return tables


def _published_row(pub: Published, label: str, ours: str, gap: str, rel: str) -> list[str]:
    return [
        pub.model,
        label,
        pub.metric,
        ours,
        f"{pub.value:.4f}",
        gap,
        rel,
        f"{pub.paper}, {pub.table}",
        pub.tag,
    ]


def per_user_means(runs: Sequence[RunInfo], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Users evaluated in every seed and each one's ``metric`` averaged over the seeds."""
    users_common: np.ndarray | None = None
    tables = []
    for run in runs:
        if not (run.run_dir / PER_USER_FILE).is_file():
            raise PolyrecError(f"{run.run_dir}: {PER_USER_FILE} missing")
        users, values = load_per_user(run.run_dir)
        if metric not in values:
            raise PolyrecError(f"{run.run_dir}: no per-user {metric!r}")
        tables.append(dict(zip(users.tolist(), values[metric].tolist(), strict=True)))
        users_common = users if users_common is None else np.intersect1d(users_common, users)
    assert users_common is not None
    users_sorted = np.sort(users_common)
    means = np.array([np.mean([t[u] for t in tables]) for u in users_sorted.tolist()])
    return users_sorted, means


def _significance_table(
    by_label: dict[str, list[RunInfo]], metrics: Sequence[str], alpha: float
) -> Table | None:
    """Pairwise paired tests on per-user metrics, Holm-adjusted over the whole table."""
    labels = list(by_label)
    if len(labels) < 2:
        return None
    cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    results = []
    for metric in metrics:
        if not all(_has_per_user(by_label[label], metric) for label in labels):
            continue
        for a, b in itertools.combinations(labels, 2):
            for lab in (a, b):
                if (lab, metric) not in cache:
                    cache[lab, metric] = per_user_means(by_label[lab], metric)
            (ua, va), (ub, vb) = cache[a, metric], cache[b, metric]
            common, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
            if len(common) < 2:
                continue
            results.append((metric, a, b, paired_tests(va[ia], vb[ib])))
    if not results:
        return None
    t_holm = holm([r[3]["t_pvalue"] for r in results])
    w_holm = holm([r[3]["wilcoxon_pvalue"] for r in results])
    rows = []
    for (metric, a, b, res), tp, wp in zip(results, t_holm, w_holm, strict=True):
        if tp < alpha and wp < alpha:
            verdict = f"{a} > {b}" if res["mean_diff"] > 0 else f"{a} < {b}"
        else:
            verdict = "n.s."
        rows.append(
            [
                metric,
                a,
                b,
                str(int(res["n"])),
                f"{res['mean_a']:.4f}",
                f"{res['mean_b']:.4f}",
                f"{res['mean_diff']:+.4f} [{res['ci_low']:+.4f}, {res['ci_high']:+.4f}]",
                _p(res["t_pvalue"]),
                _p(tp),
                _p(res["wilcoxon_pvalue"]),
                _p(wp),
                verdict,
            ]
        )
    return Table(
        "Paired significance on per-user test metrics",
        [
            "metric",
            "A",
            "B",
            "users",
            "mean A",
            "mean B",
            "A − B [95% CI]",
            "t p",
            "t p (Holm)",
            "Wilcoxon p",
            "Wilcoxon p (Holm)",
            f"at α={alpha}",
        ],
        rows,
        note=f"Each user's value is averaged over the model's seeds; users common to A and B. "
        f"Holm correction over all {len(rows)} comparisons of this table, separately for each "
        "test; a difference is called significant when both adjusted p-values are below α.",
    )


def _has_per_user(runs: Sequence[RunInfo], metric: str) -> bool:
    # the test K list can differ between suites; a metric absent from a run is skipped
    return all(metric in r.record.metrics["test"] for r in runs) and all(
        (r.run_dir / PER_USER_FILE).is_file() for r in runs
    )


def _p(p: float) -> str:
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _cost_table(by_label: dict[str, list[RunInfo]]) -> Table:
    rows = []
    for label, runs in by_label.items():
        n = len(runs)
        fit = _stat([r.record.timings.fit_seconds for r in runs])
        ev = _stat([r.record.timings.eval_seconds for r in runs])
        rss = _stat([r.record.peak_rss_mb for r in runs])
        epochs = [len(r.record.timings.epoch_seconds) for r in runs]
        per_epoch = [np.median(r.record.timings.epoch_seconds) for r in runs if epochs[0]]
        rows.append(
            [
                label,
                str(n),
                _fmt(fit, n, 2),
                " / ".join(str(e) for e in epochs) if any(epochs) else "—",
                _fmt(_stat(per_epoch), n, 3) if per_epoch else "—",
                _fmt(ev, n, 2),
                _fmt(rss, n, 0),
            ]
        )
    return Table(
        "Time and memory (mean ± std over seeds)",
        ["model", "seeds", "fit s", "epochs", "s / epoch (median)", "test eval s", "peak RSS MB"],
        rows,
        note="Wall-clock seconds; peak resident memory of the process that ran the run "
        "(polyrec bench gives every run a fresh process unless --no-isolate).",
    )


def _stat(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def _runs_table(runs: list[RunInfo]) -> Table:
    rows = []
    for r in sorted(runs, key=lambda r: (r.record.dataset, r.label, r.seed)):
        test = r.record.metrics["test"]
        main = [k for k in ("recall@20", "ndcg@20", "ndcg@10") if k in test]
        rows.append(
            [
                str(r.run_dir),
                r.record.dataset,
                r.label,
                str(r.seed),
                r.record.dataset_fingerprint,
                r.record.created_at,
                ", ".join(f"{k} {float(test[k]):.4f}" for k in main),  # type: ignore[arg-type]
            ]
        )
    return Table(
        "Runs (every number above comes from these records)",
        ["run directory", "dataset", "model", "seed", "data fingerprint", "created", "test"],
        rows,
    )


# ---------------------------------------------------------------------- plots
def _figure(width: float, height: float) -> MplFigure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFig

    return MplFig(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _plot_metric_vs_k(
    slug: str,
    by_label: dict[str, list[RunInfo]],
    summaries: dict[str, dict[str, dict[str, float]]],
    ks: Sequence[int],
) -> Figure:
    families = [
        f
        for f in ("recall", "ndcg", "hr")
        if any(f"{f}@{k}" in s for s in summaries.values() for k in ks)
    ]
    fig = _figure(3.2 * max(1, len(families)), 2.6)
    axes = fig.subplots(1, max(1, len(families)), squeeze=False)[0]
    colors = _colors(by_label)
    for ax, fam in zip(axes, families, strict=False):
        for label in by_label:
            pts = [
                (k, summaries[label][f"{fam}@{k}"]) for k in ks if f"{fam}@{k}" in summaries[label]
            ]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1]["mean"] for p in pts],
                    yerr=[p[1]["std"] for p in pts],
                    marker="o",
                    markersize=3,
                    capsize=2,
                    color=colors[label],
                    label=label,
                )
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(f"{fam}@K", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return Figure(f"{slug}-metric-vs-k", "Test metrics vs cut-off K (mean ± std)", _png(fig))


def _plot_learning_curves(slug: str, by_label: dict[str, list[RunInfo]]) -> Figure | None:
    with_history = {lab: runs for lab, runs in by_label.items() if runs[0].record.history}
    if not with_history:
        return None
    fig = _figure(6.4, 2.6)
    ax_loss, ax_valid = fig.subplots(1, 2)
    valid_names = set()
    colors = _colors(by_label)
    for label, runs in with_history.items():
        color = colors[label]
        for i, run in enumerate(runs):
            hist = run.record.history
            epochs = [h.get("epoch", j + 1) for j, h in enumerate(hist)]
            loss = [h.get("loss") for h in hist]
            kwargs = {"color": color, "alpha": 1.0 if i == 0 else 0.4, "lw": 1}
            if i == 0:
                kwargs["label"] = label
            if any(v is not None for v in loss):
                ax_loss.plot(epochs, [np.nan if v is None else v for v in loss], **kwargs)
            name = _valid_metric(run.record)
            if name is not None:
                pts = [
                    (e, h["valid"][name])
                    for e, h in zip(epochs, hist, strict=True)
                    if isinstance(h.get("valid"), dict) and name in h["valid"]
                ]
                if pts:
                    valid_names.add(name)
                    ax_valid.plot([p[0] for p in pts], [p[1] for p in pts], **kwargs)
    ax_loss.set_title("training loss", fontsize=9)
    ax_valid.set_title("validation " + "/".join(sorted(valid_names)), fontsize=9)
    for ax in (ax_loss, ax_valid):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    return Figure(
        f"{slug}-learning-curves",
        "Learning curves from the records' training history (first seed solid, others faded)",
        _png(fig),
    )


def _valid_metric(record: RunRecord) -> str | None:
    wanted = record.config.get("early_stopping")
    for h in record.history:
        valid = h.get("valid")
        if isinstance(valid, dict) and valid:
            return wanted if wanted in valid else sorted(valid)[0]
    return None


def _plot_costs(slug: str, by_label: dict[str, list[RunInfo]]) -> Figure:
    labels = list(by_label)
    fit = [_stat([r.record.timings.fit_seconds for r in by_label[lab]]) for lab in labels]
    rss = [_stat([r.record.peak_rss_mb for r in by_label[lab]]) for lab in labels]
    fig = _figure(6.4, 2.4)
    ax_t, ax_m = fig.subplots(1, 2)
    x = np.arange(len(labels))
    colors = [_colors(by_label)[lab] for lab in labels]
    ax_t.bar(x, [f["mean"] for f in fit], yerr=[f["std"] for f in fit], color=colors, capsize=2)
    ax_m.bar(x, [m["mean"] for m in rss], yerr=[m["std"] for m in rss], color=colors, capsize=2)
    means = [f["mean"] for f in fit]
    if min(means) > 0 and max(means) / min(means) > 100:
        ax_t.set_yscale("log")
    ax_t.set_title("fit seconds", fontsize=9)
    ax_m.set_title("peak RSS (MB)", fontsize=9)
    for ax in (ax_t, ax_m):
        ax.set_xticks(x, labels, rotation=30, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    return Figure(f"{slug}-time-memory", "Fit time and peak memory per model", _png(fig))


def _colors(labels: Iterable[str]) -> dict[str, str]:
    """One colour per model label, the same in every plot of a section."""
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower())


# ---------------------------------------------------------------------- rendering
CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top;
white-space:nowrap}
.scroll{overflow-x:auto}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:0 1em 1em 0}
figcaption{font-size:0.8em;color:#555}
.note{font-size:0.8em;color:#555;max-width:1000px}
code{background:#f5f5f5;padding:0 3px}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (PNG plots embedded as data URIs)."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
        f"<p class=note>Generated {e(report.created_at)} by <code>polyrec report</code> from "
        f"{e(report.sources())}.</p>",
    ]
    for section in report.sections:
        out.append(f"<h2>{e(section.heading or section.dataset)}</h2>")
        out.append(f"<p class=note>Protocol: <code>{e(describe(section.protocol))}</code></p>")
        if section.note:
            out.append(f"<p class=note>{e(section.note)}</p>")
        for table in section.tables:
            out.append(_html_table(table))
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode()
            out.append(
                f'<figure><img id="{e(fig.name)}" alt="{e(fig.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{e(fig.caption)}'
                "</figcaption></figure>"
            )
    if report.runs.rows or not report.peer_files:
        out.append(_html_table(report.runs))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_table(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in table.rows)
    note = f"<p class=note>{e(table.note)}</p>" if table.note else ""
    return (
        f"<h3>{e(table.title)}</h3><div class=scroll><table><tr>{head}</tr>{body}</table></div>"
        f"{note}"
    )


def _html_cell(cell: str) -> str:
    numeric = cell[:1] in "0123456789+-−" and cell != "-"
    cls = ' class="num"' if numeric else ""
    return f"<td{cls}>{html.escape(cell)}</td>"


def render_markdown(report: Report, image_dir: str) -> str:
    """The report as Markdown; plots are referenced as ``image_dir/<name>.png``."""
    out = [
        f"# {report.title}",
        "",
        f"Generated {report.created_at} by `polyrec report` from {report.sources()}.",
        "",
    ]
    for section in report.sections:
        out += [
            f"## {section.heading or section.dataset}",
            "",
            f"Protocol: `{describe(section.protocol)}`",
            "",
        ]
        if section.note:
            out += [section.note, ""]
        for table in section.tables:
            out += _md_table(table)
        for fig in section.figures:
            out += [f"![{fig.caption}]({image_dir}/{fig.name}.png)", ""]
    if report.runs.rows or not report.peer_files:
        out += _md_table(report.runs)
    return "\n".join(out)


def _md_table(table: Table) -> list[str]:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"### {table.title}", "", row(table.headers), row(["---"] * len(table.headers))]
    lines += [row(r) for r in table.rows]
    lines.append("")
    if table.note:
        lines += [table.note, ""]
    return lines


def write_report(
    report: Report, out: str | Path, *, markdown: str | Path | None = None
) -> list[Path]:
    """Write the HTML page (and the Markdown file with its PNGs in ``<stem>_files/``)."""
    written = []
    html_path = Path(out)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(report))
    written.append(html_path)
    if markdown is not None:
        md_path = Path(markdown)
        image_dir = md_path.parent / f"{md_path.stem}_files"
        image_dir.mkdir(parents=True, exist_ok=True)
        for section in report.sections:
            for fig in section.figures:
                (image_dir / f"{fig.name}.png").write_bytes(fig.png)
                written.append(image_dir / f"{fig.name}.png")
        md_path.write_text(render_markdown(report, image_dir.name))
        written.append(md_path)
    return written
