"""The ``polyrec bench`` and ``polyrec report`` commands (plain functions for Typer).

Mount them on the main app (src/polyrec/cli.py)::

    from polyrec.bench.cli import bench, report
    app.command()(bench)
    app.command()(report)

A :class:`~polyrec.errors.PolyrecError` raised here is printed by ``polyrec.cli.main`` as one
line with exit code 2, like every other command's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polyrec.cli_options import DataDir
from polyrec.errors import PolyrecError


def bench(
    suite: Annotated[
        Path,
        typer.Argument(
            help="Suite YAML, e.g. benchmarks/suites/smoke.yaml, or 'preferences' for the "
            "preference-discerning benchmark."
        ),
    ],
    data_dir: DataDir = None,
    workers: Annotated[
        int, typer.Option(help="Runs at once, each in its own process (default 1).")
    ] = 1,
    threads: Annotated[int, typer.Option(help="torch / BLAS threads per run.")] = 1,
    isolate: Annotated[
        bool,
        typer.Option(
            help="Each run in a fresh process, so its recorded peak memory is its own "
            "(--no-isolate: all runs in this process; faster for tiny suites).",
        ),
    ] = True,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only the run ids containing this text (e.g. bpr, seed-0); for "
            "preferences, the models whose name contains it. Repeatable.",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Put the runs here instead of the suite's out_dir."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the runs and their status; run nothing.")
    ] = False,
    dataset: Annotated[
        str,
        typer.Option(
            help="preferences only: a dataset with review text (synthetic: 1,000 users, "
            "300 items, known preferences; amazon18-beauty: real reviews)."
        ),
    ] = "synthetic",
    max_minutes: Annotated[
        float, typer.Option(help="preferences only: training minutes per model.")
    ] = 8.0,
) -> None:
    """Run a benchmark suite: every model x dataset x seed of SUITE, resumably.

    Each run writes a standard run directory (record.json, per_user.parquet, model/); a run
    already finished with the same config is skipped, so an interrupted suite resumes where it
    stopped, and a PyTorch model's interrupted training continues from its last finished epoch
    (--dry-run lists it as "resume"). Then build a report from the runs with **polyrec report**.

    Examples:

        polyrec bench benchmarks/suites/smoke.yaml
        polyrec bench benchmarks/suites/ml-100k-classic.yaml --data-dir ~/data --only bpr

    **polyrec bench preferences** trains SASRec, TIGER (with and without user-ID tokens),
    Mender-Emb and Mender-Tok (each Mender also with sentiment pairs and accumulated contexts,
    "_data") on one dataset with reviews and scores Mender's five preference axes; it writes
    preferences_<dataset>.json (in --out-dir, default here). --only picks models by name
    (sasrec, tiger, tiger_no_user_tokens, mender_emb, mender_tok, mender_emb_data,
    mender_tok_data):

        polyrec bench preferences --dataset synthetic --max-minutes 8 --only mender_emb
    """
    if str(suite) == "preferences" and not suite.exists():
        _bench_preferences(dataset, data_dir, max_minutes, only, out_dir or Path("."))
        return
    if dataset != "synthetic" or max_minutes != 8.0:
        raise PolyrecError(
            "--dataset and --max-minutes are for 'polyrec bench preferences'; a suite names its "
            "datasets and budgets in its YAML"
        )
    from polyrec.bench.suite import load_suite, run_suite

    loaded = load_suite(suite, out_dir=out_dir)
    if dry_run:
        for run in loaded.runs:
            typer.echo(f"{run.status:<6} {run.run_id}  {run.run_dir}")
        return
    outcomes = run_suite(
        loaded,
        data_dir=data_dir,
        workers=workers,
        threads=threads,
        only=only,
        isolate=isolate,
        log=typer.echo,
    )
    failed = [o for o in outcomes if o.action == "failed"]
    actions = ("ran", "resumed", "reran", "skipped")
    counts = {a: sum(o.action == a for o in outcomes) for a in actions}
    typer.echo(
        f"suite {loaded.spec.name}: {counts['ran']} ran, {counts['resumed']} resumed from a "
        f"checkpoint, {counts['reran']} re-ran "
        f"(config changed), {counts['skipped']} already finished, {len(failed)} failed; "
        f"runs in {loaded.out_dir}"
    )
    if loaded.results_path is not None:
        typer.echo(f"summary: {loaded.results_path}")
    if failed:
        raise typer.Exit(1)


def _bench_preferences(
    dataset: str, data_dir: Path | None, max_minutes: float, only: list[str] | None, out_dir: Path
) -> None:
    """``polyrec bench preferences``: run, write the JSON, print each axis's Recall@10."""
    import json

    from polyrec.bench.preferences import MODELS, benchmark_dataset, run_preference_benchmark

    names = [m for m in MODELS if not only or any(o in m for o in only)]
    if not names:
        raise PolyrecError(f"--only {' '.join(only or [])} matches no model of {', '.join(MODELS)}")
    ds = benchmark_dataset(dataset, data_dir)
    result = run_preference_benchmark(ds, names, max_minutes=max_minutes, log=typer.echo)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"preferences_{dataset}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    for axis, row in result["axes"].items():
        key = "combined_recall@10" if axis == "sentiment" else "recall@10"
        cells = "  ".join(f"{name} {metrics[key]:.3f}" for name, metrics in row.items())
        typer.echo(f"{axis:<15} {key:<19} {cells}")
    typer.echo(f"results: {path}")


def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories, folders searched for them (e.g. a suite's), run or suite "
            "JSON files, or peer-comparison files (benchmarks/results/vs_recbole_*.json)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown",
            help="Also write Markdown here (plots as PNGs in <name>_files/).",
            show_default=False,
        ),
    ] = None,
    published: Annotated[
        Path | None,
        typer.Option(
            "--published",
            help="Published-results registry (default: benchmarks/published.yaml above the "
            "current folder).",
            show_default=False,
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="Per-user metric for the significance tests; repeatable "
            "(default ndcg@10 recall@10).",
            show_default=False,
        ),
    ] = None,
    alpha: Annotated[
        float,
        typer.Option(help="Significance level (after Holm; Welch's test in peer sections)."),
    ] = 0.05,
    title: Annotated[str, typer.Option(help="Report title.")] = "polyrec benchmark report",
) -> None:
    """Build a report from run records: accuracy (mean ± std over seeds), published values
    under the same protocol with the gap, paired significance tests, learning curves,
    metric-vs-K, time and memory, beyond-accuracy metrics.

    A peer-comparison file written by benchmarks/bench_vs_recbole.py (recognised by its
    structure) adds a section of its own: per model, polyrec beside RecBole for each metric
    (mean ± std, difference, Welch test), epoch / fit / evaluation times and speed-ups, the
    benchmark's protocol and environment, and plots.

    Examples:

        polyrec report benchmarks/runs/smoke --out report.html --markdown report.md
        polyrec report runs/a runs/b --metric ndcg@20
        polyrec report benchmarks/results/vs_recbole_*.json --out vs-recbole.html
    """
    from polyrec.bench.published import default_registry_path, load_registry
    from polyrec.bench.report import DEFAULT_SIGNIFICANCE, build_report, write_report

    if not 0 < alpha < 1:
        raise PolyrecError(f"--alpha must be in (0, 1), got {alpha}")
    path = published if published is not None else default_registry_path()
    registry = load_registry(path) if path is not None else None
    built = build_report(
        runs,
        registry=registry,
        significance_metrics=[m.lower() for m in metric] if metric else DEFAULT_SIGNIFICANCE,
        alpha=alpha,
        title=title,
    )
    for written in write_report(built, out, markdown=markdown):
        if written.suffix in (".html", ".md"):
            typer.echo(f"wrote {written}")
    if registry is None:
        typer.echo("no published-results registry found: published values left out")
