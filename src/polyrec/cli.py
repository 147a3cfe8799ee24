"""The ``polyrec`` command line (Typer + Rich).

Heavy imports (torch, the models, the data readers) happen inside the commands, so
``polyrec --help`` stays fast. A :class:`~polyrec.errors.PolyrecError` (a user mistake) is printed
as one red ``error: ...`` line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from polyrec.bench.cli import bench, report
from polyrec.cli_options import DataDir
from polyrec.errors import PolyrecError
from polyrec.models.ranking.cli import ctr_app
from polyrec.serve.cli import serve

if TYPE_CHECKING:
    import pandas as pd

    from polyrec.record import RunRecord

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(
    name="polyrec",
    help="polyrec: train, evaluate, compare and query recommendation models.\n\n"
    "Start with **polyrec quickstart**; see **polyrec COMMAND --help** for details.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
datasets_app = typer.Typer(rich_markup_mode="markdown")
app.add_typer(datasets_app, name="datasets")

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config value: key=value (dotted keys reach into sections, "
        "e.g. split.test=0.2). Repeatable.",
        show_default=False,
    ),
]
KOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--k", help="Cut-off K of the metrics; repeatable (default 5 10 20 50).", show_default=False
    ),
]


def main() -> None:
    """Console-script entry point: run the app, print user errors as one line (exit code 2)."""
    try:
        app()
    except PolyrecError as exc:
        _fail(str(exc), code=2)
    except OSError as exc:
        _fail(str(exc), code=1)


def _fail(message: str, *, code: int) -> None:
    line = " ".join(message.split())
    err_console.print(Text.assemble(("error: ", "bold red"), (line, "red")))
    raise SystemExit(code)


def _print_version(value: bool) -> None:
    if value:
        from polyrec import __version__

        console.print(f"polyrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """polyrec: train, evaluate, compare and query recommendation models."""


# ------------------------------------------------------------------------------ datasets
@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """List the built-in datasets: where each is found (or that it can be downloaded or is
    missing) and whether it ships its own train/test split.

    Examples:

        polyrec datasets
        polyrec datasets --data-dir ~/data
        polyrec datasets info ml-100k
    """
    if ctx.invoked_subcommand is not None:
        return
    from polyrec.data.registry import list_datasets

    table = Table(title="Built-in datasets")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("given split", no_wrap=True)
    table.add_column("where", overflow="fold")
    for info in list_datasets(data_dir):
        if info.location == "not found":
            status, where = Text("missing", style="red"), "put the files under --data-dir"
        elif info.location.startswith("downloadable: "):
            status, where = Text("downloadable", style="yellow"), info.location.split(": ", 1)[1]
        elif info.location == "generated":
            status, where = Text("generated", style="green"), "-"
        else:
            status, where = Text("found", style="green"), info.location
        table.add_row(info.name, status, "yes" if info.given_split else "no", Text(where))
    console.print(table)
    console.print("Details: polyrec datasets info NAME", highlight=False)


@datasets_app.command("info")
def datasets_info(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")],
    data_dir: DataDir = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Dataset option key=value (synthetic sizes, e.g. n_users=500). Repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Describe a dataset: counts, density, history lengths and side-data fields.

    Examples:

        polyrec datasets info ml-100k
        polyrec datasets info synthetic --set n_users=500 --set n_items=200
    """
    from polyrec.config import parse_overrides
    from polyrec.data.registry import list_datasets, load_dataset

    ds = load_dataset(name, data_dir, **parse_overrides(option))
    info = next(i for i in list_datasets(data_dir) if i.name == ds.name)
    facts = {"description": info.description, **ds.describe(), "source": info.citation}
    table = Table(title=escape(str(facts.pop("name"))), show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in facts.items():
        if key == "density":
            value = f"{value:.4%}"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, Mapping):
            value = (
                ", ".join(
                    f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()
                )
                or "-"
            )
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), Text(str(value)))
    console.print(table)


# ------------------------------------------------------------------------------ models
@app.command()
def models() -> None:
    """List the registered models and their config defaults.

    Every default can be changed in a config file or with --set key=value on train.

    Example:

        polyrec models
    """
    from polyrec.models.ranking.base import RANKERS, get_ranker_class
    from polyrec.models.registry import available_models, get_model_class

    table = Table(title="Models")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("config defaults")
    classes = [(n, get_model_class(n)) for n in available_models()]
    classes += [(n, get_ranker_class(n)) for n in sorted(RANKERS)]
    for name, cls in classes:
        doc = (cls.__doc__ or "").strip().split("\n")[0].replace("``", "")
        defaults = ", ".join(f"{k}={v!r}" for k, v in cls.Config().model_dump().items())
        table.add_row(name, Text(doc), Text(defaults))
    console.print(table)


# ------------------------------------------------------------------------------ train
@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name (see polyrec models).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Dataset name (default: the config's 'dataset').",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML run config.", show_default=False)
    ] = None,
    set_: SetOpt = None,
    split: Annotated[
        str,
        typer.Option(
            help="auto, leave_one_out, ratio, temporal or given (auto: the config's split "
            "section, else the dataset's given split, leave-one-out for sequence data, "
            "else ratio 80/10/10)."
        ),
    ] = "auto",
    seed: Annotated[
        int | None, typer.Option(help="Model seed (default: the config's, 42).", show_default=False)
    ] = None,
    k: KOpt = None,
    data_dir: DataDir = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in --out.")
    ] = False,
) -> None:
    """Train a model on a dataset, evaluate it (full ranking) and write a run directory.

    The run directory gets record.json (config, protocol, metrics, timings, versions),
    model/ (the fitted model), per_user.parquet (per-user test metrics) and items.parquet.

    CTR rankers (din, sim, twin, dare, nohist) cut click samples from the dataset's behaviour
    log instead (the CTR protocol; --split and --k do not apply) and record test AUC, gAUC
    and logloss; --config then takes a CTR config (see polyrec ctr train).

    Examples:

        polyrec train ease --config configs/ml-100k/ease.yaml --out runs/ease
        polyrec train bpr --dataset ml-100k --set epochs=50 --out runs/bpr
        polyrec train pop -d synthetic --set dataset_options.n_users=500 -o runs/pop
        polyrec train dare -d taobao-head --set data.protocol.min_events=60 -o runs/dare
    """
    from polyrec.config import parse_overrides
    from polyrec.experiment import DEFAULT_KS, run_experiment
    from polyrec.models.ranking.base import RANKERS

    _check_out(out, overwrite)
    if model.lower() in RANKERS:  # CTR rankers: samples from the log, AUC/gAUC/logloss
        from polyrec.config import load_yaml
        from polyrec.models.ranking.cli import print_ctr_record
        from polyrec.models.ranking.experiment import ctr_run_config, run_ctr

        cfg = ctr_run_config(
            model,
            dataset=dataset,
            config=load_yaml(config) if config else None,
            overrides=parse_overrides(set_),
            seed=seed,
        )
        print_ctr_record(run_ctr(cfg, out, data_dir), out)
        return
    record = run_experiment(
        model,
        dataset,
        config_path=config,
        overrides=parse_overrides(set_),
        out_dir=out,
        split=split,
        data_dir=data_dir,
        ks=tuple(k) if k else DEFAULT_KS,
        seed=seed,
        progress=console.is_terminal,
    )
    _print_run(record, out)


# ------------------------------------------------------------------------------ evaluate
@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by polyrec train.")],
    k: KOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Re-evaluate a saved run on its dataset, filters and split (as recorded).

    The dataset is reloaded by name; if its content differs from the run's (fingerprint),
    that is an error.

    Examples:

        polyrec evaluate runs/ease
        polyrec evaluate runs/ease --k 10 --k 100
    """
    from polyrec.experiment import reevaluate
    from polyrec.record import RunRecord

    record = RunRecord.load(run)
    metrics = reevaluate(
        run, data_dir=data_dir, ks=tuple(k) if k else None, progress=console.is_terminal
    )
    for part in ("valid", "test"):
        if part in metrics:
            console.print(
                _metrics_table(metrics[part], f"{part}: {record.model} on {record.dataset}")
            )
    recorded = record.metrics["test"]
    shared = [key for key in metrics["test"] if key in recorded]
    if shared:
        diff = max(abs(metrics["test"][key] - _value(recorded[key])) for key in shared)
        verdict = "match" if diff < 1e-6 else f"differ by up to {diff:.3g} from"
        console.print(f"The re-evaluated test metrics {verdict} the recorded ones.")


# ------------------------------------------------------------------------------ unlearn
@app.command()
def unlearn(
    run: Annotated[Path, typer.Argument(help="Run directory written by polyrec train.")],
    forget: Annotated[
        Path,
        typer.Option(
            "--forget",
            help='Forget request: JSON {"users": [...], "items": [...], "interactions": '
            '[[user, item], ...], "modality": "image"} (any subset) or a CSV with user,item.',
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    method: Annotated[
        str, typer.Option(help="retrain (the gold reference), finetune, sisa or mmrecun.")
    ] = "mmrecun",
    set_: SetOpt = None,
    data_dir: DataDir = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
) -> None:
    """Make a saved model forget users, items, interactions or a modality; record the result.

    The run's data is prepared again as recorded and the request applied to its training part.
    The new run directory holds the unlearned model and a record whose test metrics are the
    forget/retain report: retain-test recall/NDCG, forget-set recall and rank, the
    membership-attack AUC and the seconds taken. MMRecUn stops early once forgotten pairs are
    recalled no better than the run's validation pairs (when the run has a validation split).

    Examples:

        polyrec unlearn runs/freedom --forget forget.json --out runs/freedom-forgot
        polyrec unlearn runs/bpr --forget pairs.csv --method finetune --set epochs=5 --out runs/u
    """
    from polyrec.config import parse_overrides
    from polyrec.unlearn.run import unlearn_run

    _check_out(out, overwrite)
    record = unlearn_run(
        run, forget, method, out, data_dir=data_dir, options=parse_overrides(set_ or [])
    )
    console.print(_metrics_table(record.metrics["test"], f"{method}: {record.model} forgets"))
    console.print(f"Wrote {out}")


# ------------------------------------------------------------------------------ recommend
@app.command()
def recommend(
    run: Annotated[Path, typer.Argument(help="Run directory written by polyrec train.")],
    user: Annotated[list[str], typer.Option("--user", "-u", help="User id; repeatable.")],
    k: Annotated[int, typer.Option("--k", help="Items per user.")] = 10,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="Also recommend items the user already has.")
    ] = False,
) -> None:
    """Top-k recommendations for users of a saved run, with item titles when the data had them.

    Works without the dataset: the run directory holds the model and the item titles.

    Examples:

        polyrec recommend runs/ease --user 1
        polyrec recommend runs/ease --user 1 --user 42 --k 5
    """
    frame = _recommendations(run, user, k, exclude_seen=not include_seen)
    console.print(_frame_table(frame, f"top {k} from {run}"))


# ------------------------------------------------------------------------------ compare
@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="First run directory (A).")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory (B).")],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="Metric to test, e.g. ndcg@10; repeatable (default: recall@K and ndcg@K).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Compare two runs: test metrics side by side with paired significance tests.

    Per-user test metrics of the users both runs evaluated go through a paired t-test and a
    Wilcoxon signed-rank test; p-values are Holm-corrected across the compared metrics. The
    runs must share the dataset (fingerprint) and split.

    Examples:

        polyrec compare runs/ease runs/bpr
        polyrec compare runs/ease runs/bpr --metric ndcg@10 --metric recall@20
    """
    console.print(_compare_table(run_a, run_b, metric))


# ------------------------------------------------------------------------------ quickstart
# configs/ml-100k/ease.yaml; BPR with a larger step than configs/ml-100k/bpr.yaml: it peaks on
# validation by epoch ~17 instead of ~80 (NDCG@10 0.222 vs 0.234), which keeps this fast.
QUICKSTART_MODELS: dict[str, dict[str, Any]] = {
    "ease": {"l2": 250.0},
    "bpr": {"factors": 64, "epochs": 20, "lr": 5e-3, "reg": 1e-3},
}


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the runs.")] = Path(
        "runs/quickstart"
    ),
    data_dir: DataDir = None,
) -> None:
    """Train EASE and BPR-MF on MovieLens-100K, compare them and show recommendations.

    Uses ml-100k from --data-dir / POLYREC_DATA_DIR / the cache (or downloads it); when it
    cannot be found, uses the synthetic dataset and says so. About a minute on 2 CPU cores.

    Examples:

        polyrec quickstart
        polyrec quickstart --data-dir ~/data --out runs/qs
    """
    from polyrec.data.registry import load_dataset
    from polyrec.experiment import load_per_user, run_experiment

    dataset = "ml-100k"
    try:
        load_dataset(dataset, data_dir)
    except PolyrecError as exc:
        console.print(f"[yellow]ml-100k is not available: {escape(str(exc))}[/]", soft_wrap=True)
        console.print("[yellow]Using the [bold]synthetic[/] dataset instead.[/]")
        dataset = "synthetic"
    records = {}
    for name, params in QUICKSTART_MODELS.items():
        console.print(f"[bold]training {name} on {dataset}[/] ...")
        records[name] = run_experiment(
            name,
            dataset,
            overrides=params,
            out_dir=out / name,
            data_dir=data_dir,
            progress=console.is_terminal,
        )
        timings = records[name].timings
        console.print(
            f"  fit {timings.fit_seconds:.1f}s, evaluation {timings.eval_seconds:.1f}s, "
            f"written to {out / name}"
        )
    a, b = records
    console.print(_compare_table(out / a, out / b, None))
    best = max(records, key=lambda m: _value(records[m].metrics["test"]["ndcg@10"]))
    user = str(load_per_user(out / best)[0][0])
    frame = _recommendations(out / best, [user], 5, exclude_seen=True).drop(columns="user")
    console.print(_frame_table(frame, f"{best}: top 5 for user {user} ({dataset})"))
    console.print(
        "Next: [bold]polyrec recommend "
        f"{out / best} --user {user}[/], [bold]polyrec compare {out / a} {out / b}[/], "
        "[bold]polyrec train --help[/]"
    )


# ------------------------------------------------------------------------------ helpers
def _check_out(out: Path, overwrite: bool) -> None:
    from polyrec.record import RECORD_FILE

    if out.exists() and not out.is_dir():
        raise PolyrecError(f"--out {out} exists and is not a directory")
    if (out / RECORD_FILE).exists() and not overwrite:
        raise PolyrecError(f"{out} already holds a run; pass --overwrite or choose another --out")


def _split_metric(name: str) -> tuple[str, int | None]:
    base, _, k = name.partition("@")
    return base, int(k) if k.isdigit() else None


def _metrics_table(metrics: Mapping[str, Any], title: str) -> Table:
    """Metrics pivoted to one row per metric name and one column per K."""
    rows: dict[str, dict[int | None, float]] = {}
    for key, value in metrics.items():
        base, k = _split_metric(key)
        rows.setdefault(base, {})[k] = _value(value)
    ks = sorted({k for row in rows.values() for k in row}, key=lambda k: (k is None, k or 0))
    table = Table(title=title)
    table.add_column("metric", style="bold")
    for k in ks:
        table.add_column(f"@{k}" if k is not None else "value", justify="right")
    for base, row in rows.items():
        table.add_row(base, *(f"{row[k]:.4f}" if k in row else "" for k in ks))
    return table


def _value(metric: Any) -> float:
    """A recorded metric as a float (the mean of a multi-seed ``{"mean", "std"}``)."""
    return float(getattr(metric, "mean", metric))


def _frame_table(frame: pd.DataFrame, title: str) -> Table:
    """A small frame as a table; cells are plain text (titles may contain brackets)."""
    table = Table(title=escape(title))
    for col in frame.columns:
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(Text(f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row))
    return table


def _print_run(record: RunRecord, out: Path) -> None:
    split = record.protocol.get("split", {})
    desc = ", ".join(f"{k}={v}" for k, v in split.items() if k != "split")
    console.print(
        f"[bold]{record.model}[/] on [bold]{record.dataset}[/]: split {split.get('split')} "
        f"({desc}), {record.protocol.get('n_users', '?')} test users, "
        f"fit {record.timings.fit_seconds:.1f}s, eval {record.timings.eval_seconds:.1f}s"
    )
    console.print(
        _metrics_table(record.metrics["test"], f"test: {record.model} on {record.dataset}")
    )
    console.print(f"run written to {out}")


def _recommendations(run: Path, users: list[str], k: int, *, exclude_seen: bool) -> pd.DataFrame:
    """Top-k frame (user, rank, item, title?, score) from a saved run."""
    from polyrec.experiment import MODEL_DIR, load_item_titles
    from polyrec.models.base import Recommender
    from polyrec.record import RunRecord

    RunRecord.load(run)  # a clear error when ``run`` is not a run directory
    model = Recommender.load(run / MODEL_DIR)
    assert model.item_ids is not None
    frame = model.recommend(users, k, exclude_seen=exclude_seen)
    titles = load_item_titles(run)
    columns = ["user", "rank", "item", "score"]
    if titles is not None:
        frame["title"] = titles[model.item_ids.to_internal(frame["item"].to_numpy(), what="item")]
        columns.insert(3, "title")
    return frame[columns]


def _compare_table(run_a: Path, run_b: Path, metrics: list[str] | None) -> Table:
    from polyrec.eval.significance import compare_runs
    from polyrec.experiment import load_per_user
    from polyrec.record import RunRecord

    rec_a, rec_b = RunRecord.load(run_a), RunRecord.load(run_b)
    if rec_a.dataset_fingerprint != rec_b.dataset_fingerprint:
        raise PolyrecError(
            f"the runs used different data ({rec_a.dataset} {rec_a.dataset_fingerprint} vs "
            f"{rec_b.dataset} {rec_b.dataset_fingerprint}); paired tests need the same users"
        )
    if rec_a.protocol.get("split") != rec_b.protocol.get("split"):
        raise PolyrecError("the runs used different splits; paired tests need the same test set")
    users_a, per_a = load_per_user(run_a)
    users_b, per_b = load_per_user(run_b)
    if metrics is None:
        metrics = [m for m in per_a if m in per_b and _split_metric(m)[0] in ("recall", "ndcg")]
        metrics.sort(key=lambda m: (_split_metric(m)[0] != "recall", _split_metric(m)[1] or 0))
    else:
        metrics = [m.lower() for m in metrics]
    tests = compare_runs(per_a, users_a, per_b, users_b, metrics)
    name_a, name_b = _run_label(run_a, rec_a), _run_label(run_b, rec_b)
    n_users = int(tests["n"].iloc[0])
    table = Table(title=escape(f"{name_a} (A) vs {name_b} (B) on {rec_a.dataset}, {n_users} users"))
    table.add_column("metric", style="bold")
    table.add_column(f"A {name_a}", justify="right")
    table.add_column(f"B {name_b}", justify="right")
    table.add_column("B - A", justify="right")
    table.add_column("p t-test (Holm)", justify="right")
    table.add_column("p Wilcoxon (Holm)", justify="right")
    for name, row in tests.iterrows():
        diff = row["mean_b"] - row["mean_a"]
        rel = f" ({diff / row['mean_a']:+.1%})" if row["mean_a"] else ""
        table.add_row(
            str(name),
            f"{row['mean_a']:.4f}",
            f"{row['mean_b']:.4f}",
            Text(f"{diff:+.4f}{rel}", style="green" if diff > 0 else "red" if diff < 0 else ""),
            _pvalue(row["t_pvalue_holm"]),
            _pvalue(row["wilcoxon_pvalue_holm"]),
        )
    return table


def _run_label(run: Path, record: RunRecord) -> str:
    return record.model if run.name == record.model else f"{record.model} ({run.name})"


def _pvalue(p: float) -> Text:
    text = "<1e-4" if p < 1e-4 else f"{p:.4f}"
    return Text(text, style="bold" if p < 0.05 else "dim")


# defined in their packages; registered last so they are listed after the core commands
app.command()(bench)
app.command()(report)
app.command()(serve)
app.add_typer(ctr_app, name="ctr")
