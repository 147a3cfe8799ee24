"""Peer-comparison sections of ``polyrec report``: polyrec beside another library (RecBole).

Input: the JSON written by ``benchmarks/bench_vs_recbole.py`` (``vs_recbole_<dataset>.json``),
recognised by its structure (:func:`is_peer_file`): a top-level ``results`` list whose entries
hold, per model, ``polyrec.runs`` and the peer's ``<peer>.runs`` (each run: ``metrics``,
``timings.fit_seconds / eval_seconds / epoch_seconds``, optionally
``timings.test_loader_seconds``), or ``skipped`` with a reason; plus ``dataset``,
``protocol`` and ``environment`` (``versions``, ``command``, ``date``, ``<peer>_versions``).

Every number of a section is computed from the per-run values of that file, with the
benchmark's own definitions (``bench_vs_recbole.summarize`` / ``compare``): a metric is the
mean ± sample std over the runs; a time is the median over the runs (an epoch time the median
over every epoch of every run); a speed-up is peer median / polyrec median. Whether two metric
means differ beyond seed noise is Welch's t-test over the runs (only with >= 2 runs a side).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from polyrec.bench.published import describe
from polyrec.bench.report import (
    Figure,
    Section,
    Table,
    _colors,
    _figure,
    _fmt,
    _png,
    _slug,
    _stat,
)
from polyrec.errors import PolyrecError

OURS = "polyrec"
PEER_NAMES = {"recbole": "RecBole"}
# a panel whose bars span more than this factor is drawn on a log axis
LOG_RANGE = 20.0
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class LibraryRuns:
    """One library's runs of one model, as stored in the file."""

    runs: list[dict[str, Any]]
    metrics: dict[str, list[float]]
    fit_seconds: list[float]
    eval_seconds: list[float]
    epoch_seconds: list[float]  # every epoch of every run
    loader_seconds: list[float] | None  # test-loader build per run, where recorded

    @property
    def n(self) -> int:
        """Number of runs."""
        return len(self.runs)

    def medians(self) -> dict[str, float | None]:
        """Median epoch / fit / eval / eval-with-loader seconds (``None`` when not recorded)."""
        loader = self.loader_seconds or [0.0] * self.n
        return {
            "epoch": float(np.median(self.epoch_seconds)) if self.epoch_seconds else None,
            "fit": float(np.median(self.fit_seconds)),
            "eval": float(np.median(self.eval_seconds)),
            "eval_loader": float(
                np.median([e + b for e, b in zip(self.eval_seconds, loader, strict=True)])
            ),
        }


@dataclass
class PeerResult:
    """One model: polyrec's and the peer's runs, or the reason it was skipped."""

    model: str
    epochs: int | None
    ours: LibraryRuns | None
    theirs: LibraryRuns | None
    checks: dict[str, bool]
    skipped: str | None = None


@dataclass
class PeerFile:
    """A parsed peer-comparison file."""

    path: Path
    dataset: str
    peer: str
    protocol: dict[str, Any]
    hyperparameters: dict[str, Any]
    environment: dict[str, Any]
    results: list[PeerResult]

    @property
    def peer_name(self) -> str:
        """The peer library's display name with its version, e.g. ``RecBole 1.2.1``."""
        name = PEER_NAMES.get(self.peer, self.peer)
        version = self.environment.get(f"{self.peer}_versions", {}).get(self.peer)
        return f"{name} {version}" if version else name

    @property
    def metric_names(self) -> list[str]:
        """The metrics every compared run reports, in the file's order."""
        first = next((r.ours for r in self.results if r.ours is not None), None)
        return list(first.metrics) if first is not None else []


# ---------------------------------------------------------------------- reading
def is_peer_file(path: Path) -> bool:
    """Whether ``path`` is a JSON file shaped like a peer comparison (a top-level ``results``
    list); a suite summary or a run record is not."""
    if not (path.is_file() and path.suffix == ".json"):
        return False
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # the run-record reader reports the error with its line number
    return isinstance(data, dict) and isinstance(data.get("results"), list)


class _Fields:
    """Field access that fails with one line naming the file and the field's path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> PolyrecError:
        return PolyrecError(f"{self.path}: {message}")

    def get(self, obj: Any, key: str | int, where: str, kind: type | tuple[type, ...]) -> Any:
        name = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip(".")
        if isinstance(key, int):
            present = isinstance(obj, list) and key < len(obj)
        else:
            present = isinstance(obj, dict) and key in obj
        if not present:
            return self._missing(name)
        value = obj[key]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"field {name} is not a number ({value!r})")
            return float(value)
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else kind[0].__name__
            raise self.fail(f"field {name} is not a {expected}")
        return value

    def _missing(self, name: str) -> Any:
        raise self.fail(
            f"missing field {name} (not a peer-comparison file from "
            "benchmarks/bench_vs_recbole.py?)"
        )


def read_peer_file(path: str | Path) -> PeerFile:
    """Parse and validate a peer-comparison file; a missing or mistyped field raises one
    :class:`PolyrecError` line naming the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PolyrecError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    f = _Fields(path)
    if not isinstance(data, dict):
        raise f.fail("not a JSON object")
    dataset = f.get(data, "dataset", "", str)
    protocol = f.get(data, "protocol", "", dict)
    env = f.get(data, "environment", "", dict)
    for key in ("versions", "command", "date"):
        f.get(env, key, "environment", dict if key == "versions" else str)
    entries = f.get(data, "results", "", list)
    peer = _peer_key(f, entries)
    f.get(env, f"{peer}_versions", "environment", dict)
    results = []
    metrics: list[str] | None = None
    for i, entry in enumerate(entries):
        where = f"results[{i}]"
        f.get(entries, i, "results", dict)
        model = f.get(entry, "model", where, str)
        if "skipped" in entry:
            results.append(
                PeerResult(model, None, None, None, {}, str(f.get(entry, "skipped", where, str)))
            )
            continue
        ours_raw = f.get(f.get(entry, OURS, where, dict), "runs", f"{where}.{OURS}", list)
        theirs_raw = f.get(f.get(entry, peer, where, dict), "runs", f"{where}.{peer}", list)
        if metrics is None:
            first = f.get(
                f.get(ours_raw, 0, f"{where}.{OURS}.runs", dict),
                "metrics",
                f"{where}.{OURS}.runs[0]",
                dict,
            )
            metrics = list(first)
        ours = _library_runs(f, ours_raw, f"{where}.{OURS}.runs", metrics)
        theirs = _library_runs(f, theirs_raw, f"{where}.{peer}.runs", metrics)
        comparison = entry.get("comparison", {})
        checks = comparison.get("checks", {}) if isinstance(comparison, dict) else {}
        epochs = entry.get("epochs")
        results.append(
            PeerResult(
                model,
                int(epochs) if isinstance(epochs, int) else None,
                ours,
                theirs,
                {str(k): bool(v) for k, v in checks.items()},
            )
        )
    return PeerFile(
        path, dataset, peer, protocol, dict(data.get("hyperparameters") or {}), env, results
    )


def _peer_key(f: _Fields, entries: list[Any]) -> str:
    """The peer library's field: the one beside ``polyrec`` that holds ``runs``."""
    keys = {
        k
        for e in entries
        if isinstance(e, dict) and "skipped" not in e
        for k, v in e.items()
        if k != OURS and isinstance(v, dict) and "runs" in v
    }
    if len(keys) != 1:
        found = ", ".join(sorted(keys)) or "none"
        raise f.fail(
            f"missing field results[*].<peer> (one library beside {OURS} with runs; found {found})"
        )
    return keys.pop()


def _library_runs(f: _Fields, raw: list[Any], where: str, metrics: Sequence[str]) -> LibraryRuns:
    if not raw:
        raise f.fail(f"field {where} is empty")
    values: dict[str, list[float]] = {m: [] for m in metrics}
    fit, ev, epochs, loader = [], [], [], []
    for j, run in enumerate(raw):
        at = f"{where}[{j}]"
        f.get(raw, j, where, dict)
        got = f.get(run, "metrics", at, dict)
        for m in metrics:
            values[m].append(f.get(got, m, f"{at}.metrics", float))
        timings = f.get(run, "timings", at, dict)
        fit.append(f.get(timings, "fit_seconds", f"{at}.timings", float))
        ev.append(f.get(timings, "eval_seconds", f"{at}.timings", float))
        per_epoch = f.get(timings, "epoch_seconds", f"{at}.timings", list)
        epochs += [
            f.get(per_epoch, k, f"{at}.timings.epoch_seconds", float) for k in range(len(per_epoch))
        ]
        if "test_loader_seconds" in timings:
            loader.append(f.get(timings, "test_loader_seconds", f"{at}.timings", float))
    if loader and len(loader) != len(raw):
        raise f.fail(f"field {where}[*].timings.test_loader_seconds is in some runs only")
    return LibraryRuns(raw, values, fit, ev, epochs, loader or None)


# ---------------------------------------------------------------------- tables
def peer_section(
    peer: PeerFile, *, alpha: float = 0.05, plots: bool = True, slug: str | None = None
) -> Section:
    """The report section of one peer-comparison file: accuracy and time side by side, the
    target checks stored in the file, protocol and environment, every run, and two plots."""
    compared = [r for r in peer.results if r.ours is not None and r.theirs is not None]
    section = Section(
        peer.dataset,
        peer.protocol,
        [r.model for r in compared],
        heading=f"{peer.dataset}: {OURS} vs {peer.peer_name}",
        note=f"Peer comparison from {peer.path} (benchmark command "
        f"`{peer.environment['command']}`, {peer.environment['date']}); every number of this "
        "section is computed from that file's per-run values.",
    )
    section.tables.append(_accuracy_table(peer, compared, alpha))
    section.tables.append(_time_table(peer, compared))
    checks = _checks_table(peer, compared)
    if checks is not None:
        section.tables.append(checks)
    section.tables.append(_environment_table(peer))
    section.tables.append(_peer_runs_table(peer, compared))
    if plots and compared:
        name = slug or _slug(peer.path.stem)
        section.figures.append(_plot_times(name, peer, compared))
        section.figures.append(_plot_agreement(name, peer, compared))
    return section


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's t-test p-value of two samples of run values; ``None`` with fewer than two
    runs a side; 1.0 / 0.0 when both have zero spread (equal / different values)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def verdict(
    a: Sequence[float], b: Sequence[float], p: float | None, alpha: float, peer: str
) -> str:
    """Within noise, or which library is higher; single runs are compared to 4 decimals."""
    diff = float(np.mean(a) - np.mean(b))
    if p is None:
        if round(float(np.mean(a)), 4) == round(float(np.mean(b)), 4):
            return "equal to 4 decimals (1 run)"
        return f"{OURS if diff > 0 else peer} higher (1 run, no noise estimate)"
    if p >= alpha:
        return "within noise"
    return f"{OURS if diff > 0 else peer} higher"


def _accuracy_table(peer: PeerFile, compared: list[PeerResult], alpha: float) -> Table:
    name = PEER_NAMES.get(peer.peer, peer.peer)
    rows = []
    for r in compared:
        assert r.ours is not None and r.theirs is not None
        for m in peer.metric_names:
            a, b = r.ours.metrics[m], r.theirs.metrics[m]
            sa, sb = _stat(a), _stat(b)
            p = welch(a, b)
            diff = sa["mean"] - sb["mean"]
            rel = f"{_signed(100 * diff / sb['mean'], 2)} %" if sb["mean"] > 0 else "—"
            rows.append(
                [
                    r.model,
                    m,
                    f"{r.ours.n} / {r.theirs.n}",
                    _fmt(sa, r.ours.n),
                    _fmt(sb, r.theirs.n),
                    _signed(diff, 4),
                    rel,
                    "—" if p is None else f"{p:.3f}",
                    verdict(a, b, p, alpha, name),
                ]
            )
    skipped = [f"{r.model} ({r.skipped})" for r in peer.results if r.skipped is not None]
    note = (
        f"Mean ± sample std over the runs (seeds); difference = {OURS} − {name}, relative to "
        f"{name}. Welch's t-test over the runs where both libraries have >= 2; 'within noise' "
        f"when p >= {alpha}. Deterministic models ran once per library."
    )
    if skipped:
        note += " Not run: " + "; ".join(skipped) + "."
    return Table(
        f"Test accuracy: {OURS} vs {peer.peer_name} (same split, same protocol)",
        [
            "model",
            "metric",
            f"runs {OURS} / {name}",
            OURS,
            name,
            "difference",
            "relative",
            "Welch p",
            "verdict",
        ],
        rows,
        note=note,
    )


TIME_ROWS = (
    ("epoch", "training epoch"),
    ("fit", "fit"),
    ("eval", "test evaluation"),
    ("eval_loader", "test evaluation incl. test-loader build"),
)


def speedups(r: PeerResult) -> dict[str, float | None]:
    """Peer median seconds / polyrec median seconds for each timed quantity."""
    assert r.ours is not None and r.theirs is not None
    ours, theirs = r.ours.medians(), r.theirs.medians()
    out: dict[str, float | None] = {}
    for key in ours:
        a, b = ours[key], theirs[key]
        out[key] = b / a if a is not None and b is not None and a > 0 else None
    return out


def _time_table(peer: PeerFile, compared: list[PeerResult]) -> Table:
    name = PEER_NAMES.get(peer.peer, peer.peer)
    rows = []
    for r in compared:
        assert r.ours is not None and r.theirs is not None
        ours, theirs, ratio = r.ours.medians(), r.theirs.medians(), speedups(r)
        has_loader = r.ours.loader_seconds is not None or r.theirs.loader_seconds is not None
        for key, label in TIME_ROWS:
            if key == "eval_loader" and not has_loader:
                continue
            if key == "epoch" and (ours[key] is None or theirs[key] is None):
                continue
            if key == "epoch":
                over = (
                    f"{len(r.ours.epoch_seconds)} / {len(r.theirs.epoch_seconds)} epochs "
                    f"({r.epochs or '?'} per run)"
                )
            else:
                over = f"{r.ours.n} / {r.theirs.n} runs"
            rows.append(
                [
                    r.model,
                    label,
                    _secs(ours[key]),
                    _secs(theirs[key]),
                    "—" if ratio[key] is None else f"{ratio[key]:.2f}x",
                    over,
                ]
            )
    return Table(
        f"Time: {OURS} vs {peer.peer_name} (median wall-clock seconds)",
        [
            "model",
            "what",
            f"{OURS} s",
            f"{name} s",
            f"speed-up ({name} / {OURS})",
            f"median over ({OURS} / {name})",
        ],
        rows,
        note="Epoch: median over every epoch of every run; fit and evaluation: median over the "
        f"runs. Test-loader build: recorded for {name} (polyrec's evaluation builds its masks "
        "inside its own time), so the plain evaluation speed-up is the conservative one. "
        "The benchmark runs the two libraries one after the other, never at once.",
    )


def _signed(x: float, digits: int) -> str:
    """``+0.0012``; a non-zero value that would print as zero in scientific notation."""
    if x != 0 and abs(x) < 0.5 * 10**-digits:
        return f"{x:+.1e}"
    return f"{x:+.{digits}f}"


def _secs(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}"


def _checks_table(peer: PeerFile, compared: list[PeerResult]) -> Table | None:
    rows = [
        [r.model, check, "PASS" if ok else "FAIL"]
        for r in compared
        for check, ok in r.checks.items()
    ]
    if not rows:
        return None
    return Table(
        "Targets (as stored by the benchmark in the file's comparison.checks)",
        ["model", "check", "result"],
        rows,
    )


def _environment_table(peer: PeerFile) -> Table:
    env = peer.environment
    rows: list[list[str]] = [["file", str(peer.path)], ["dataset", peer.dataset]]
    rows += [[f"protocol.{k}", _text(v)] for k, v in peer.protocol.items()]
    rows += [[f"hyperparameters.{k}", _text(v)] for k, v in peer.hyperparameters.items()]
    rows += [[f"{OURS} versions", describe(env["versions"])]]
    rows += [
        [f"{PEER_NAMES.get(peer.peer, peer.peer)} versions", describe(env[f"{peer.peer}_versions"])]
    ]
    for key in ("torch_threads", "cpu_count", "platform", "processor", "date", "command"):
        if key in env:
            rows.append([key, _text(env[key])])
    peer_threads = {
        str(run.get("torch_threads"))
        for r in peer.results
        if r.theirs is not None
        for run in r.theirs.runs
        if "torch_threads" in run
    }
    if peer_threads:
        rows.append([f"{peer.peer} torch_threads", ", ".join(sorted(peer_threads))])
    first = next((r.theirs.runs[0] for r in peer.results if r.theirs is not None), None)
    note = ""
    if first is not None and isinstance(first.get("command"), list):
        # in the note, which wraps: a table cell this long would push the values off screen
        note = f"{peer.peer} command of its first run: " + " ".join(map(str, first["command"]))
    return Table(
        "Protocol, hyper-parameters and environment (from the file)",
        ["field", "value"],
        rows,
        note=note,
    )


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return describe(value)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _peer_runs_table(peer: PeerFile, compared: list[PeerResult]) -> Table:
    metrics = peer.metric_names
    rows = []
    for r in compared:
        for lib, runs in ((OURS, r.ours), (PEER_NAMES.get(peer.peer, peer.peer), r.theirs)):
            assert runs is not None
            for j, run in enumerate(runs.runs):
                timings = run["timings"]
                epochs = timings["epoch_seconds"]
                rows.append(
                    [
                        r.model,
                        lib,
                        str(run.get("seed", run.get("config", {}).get("seed", "—"))),
                        str(len(epochs)),
                        f"{np.median(epochs):.3f}" if epochs else "—",
                        f"{timings['fit_seconds']:.3f}",
                        f"{timings['eval_seconds']:.3f}",
                        _secs(timings.get("test_loader_seconds")),
                        *[f"{runs.metrics[m][j]:.4f}" for m in metrics],
                    ]
                )
    return Table(
        "Runs in the file (per seed)",
        [
            "model",
            "library",
            "seed",
            "epochs",
            "median epoch s",
            "fit s",
            "eval s",
            "test-loader s",
            *metrics,
        ],
        rows,
    )


# ---------------------------------------------------------------------- plots
def _plot_times(slug: str, peer: PeerFile, compared: list[PeerResult]) -> Figure:
    name = PEER_NAMES.get(peer.peer, peer.peer)

    def timed(r: PeerResult, key: str) -> bool:  # both sides measured this time
        return (
            r.ours is not None
            and r.ours.medians()[key] is not None
            and r.theirs.medians()[key] is not None
        )

    panels = [
        (key, title)
        for key, title in (("epoch", "s / epoch"), ("fit", "fit s"), ("eval", "test eval s"))
        if any(timed(r, key) for r in compared)
    ]
    widths = [1 + sum(timed(r, key) for r in compared) for key, _ in panels]
    fig = _figure(1.0 + 0.9 * sum(widths), 2.8)
    # panel width follows its number of models, so that bars have one width everywhere
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    colors = _colors([OURS, name])
    for ax, (key, title) in zip(axes, panels, strict=True):
        rows = [r for r in compared if timed(r, key)]
        x = np.arange(len(rows))
        ours = [r.ours.medians()[key] for r in rows]  # type: ignore[union-attr]
        theirs = [r.theirs.medians()[key] for r in rows]  # type: ignore[union-attr]
        ax.bar(x - 0.2, ours, 0.4, color=colors[OURS], label=OURS)
        ax.bar(x + 0.2, theirs, 0.4, color=colors[name], label=name)
        values = [v for v in (*ours, *theirs) if v is not None and v > 0]
        log = bool(values) and max(values) / min(values) > LOG_RANGE
        if log:
            ax.set_yscale("log")
        top = max(values) if values else 1.0
        for xi, r in zip(x, rows, strict=True):
            ratio = speedups(r)[key]
            pair = max(
                v
                for v in (r.ours.medians()[key], r.theirs.medians()[key])  # type: ignore[union-attr]
                if v is not None
            )
            if ratio is not None:
                ax.annotate(
                    f"x{ratio:.0f}" if ratio >= 100 else f"x{ratio:.1f}",
                    (xi, pair),
                    textcoords="offset points",
                    xytext=(0, 2),
                    ha="center",
                    fontsize=7,
                )
        ax.set_ylim(top=top * (3.0 if log else 1.15))
        ax.set_xlim(-0.7, len(rows) - 0.3)
        ax.set_xticks(x, [r.model for r in rows], fontsize=7)
        ax.set_title(title + (" (log)" if log else ""), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, loc="upper left")
    return Figure(
        f"{slug}-time",
        f"Median seconds per model, {OURS} vs {name}; label = speed-up ({name} / {OURS})",
        _png(fig),
    )


def _plot_agreement(slug: str, peer: PeerFile, compared: list[PeerResult]) -> Figure:
    name = PEER_NAMES.get(peer.peer, peer.peer)
    metrics = peer.metric_names
    colors = _colors(r.model for r in compared)
    n_bars = len(compared) * len(metrics)
    fig = _figure(8.0, max(3.0, 0.16 * n_bars + 0.9))
    ax_xy, ax_rel = fig.subplots(1, 2)
    lo, hi = math.inf, -math.inf
    labels, rel, err, bar_colors = [], [], [], []
    for r in compared:
        assert r.ours is not None and r.theirs is not None
        for i, m in enumerate(metrics):
            a, b = _stat(r.ours.metrics[m]), _stat(r.theirs.metrics[m])
            ax_xy.errorbar(
                b["mean"],
                a["mean"],
                xerr=b["std"],
                yerr=a["std"],
                marker=MARKERS[i % len(MARKERS)],
                color=colors[r.model],
                markersize=4,
                capsize=2,
                linestyle="none",
            )
            lo, hi = min(lo, a["mean"], b["mean"]), max(hi, a["mean"], b["mean"])
            if b["mean"] > 0:
                labels.append(f"{r.model} {m}")
                rel.append(100 * (a["mean"] - b["mean"]) / b["mean"])
                err.append(100 * math.hypot(a["std"], b["std"]) / b["mean"])
                bar_colors.append(colors[r.model])
    pad = 0.05 * (hi - lo) if hi > lo else 0.01
    ax_xy.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=0.8, ls="--")
    ax_xy.set_xlabel(f"{name} (mean ± std)", fontsize=8)
    ax_xy.set_ylabel(f"{OURS} (mean ± std)", fontsize=8)
    ax_xy.set_title("test metrics; dashed: equal", fontsize=9)
    for model, color in colors.items():
        ax_xy.plot([], [], color=color, marker="o", ls="none", label=model)
    for i, m in enumerate(metrics):
        ax_xy.plot([], [], color="0.3", marker=MARKERS[i % len(MARKERS)], ls="none", label=m)
    ax_xy.legend(fontsize=6, ncol=2)
    ax_xy.grid(alpha=0.3)
    y = np.arange(len(labels))
    ax_rel.barh(y, rel, xerr=err, color=bar_colors, capsize=2)
    ax_rel.axvline(0, color="0.3", lw=0.8)
    ax_rel.set_yticks(y, labels, fontsize=7)
    ax_rel.invert_yaxis()
    ax_rel.set_title(f"({OURS} − {name}) / {name}, %", fontsize=9)
    ax_rel.grid(alpha=0.3, axis="x")
    return Figure(
        f"{slug}-metric-agreement",
        f"Metric agreement: {OURS} vs {name} per model and metric (bars: relative difference, "
        "whiskers: both libraries' std combined)",
        _png(fig),
    )
