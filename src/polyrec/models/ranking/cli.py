"""``polyrec ctr``: train and evaluate long-sequence CTR rankers from a YAML config.

Mount in :mod:`polyrec.cli` with ``app.add_typer(ctr_app, name="ctr")``. Heavy imports
happen inside the command so ``polyrec --help`` stays fast; user mistakes raise
:class:`~polyrec.errors.PolyrecError`, which the main entry point prints as one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from polyrec.errors import PolyrecError

if TYPE_CHECKING:
    from polyrec.record import RunRecord

ctr_app = typer.Typer(
    help="Long-sequence CTR ranking: DIN, SIM, TWIN, DARE and a no-history baseline.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
console = Console()


@ctr_app.callback()
def ctr() -> None:
    """Long-sequence CTR ranking: DIN, SIM, TWIN, DARE and a no-history baseline."""


@ctr_app.command("train")
def train(
    config: Annotated[
        Path, typer.Argument(help="YAML run config (e.g. configs/taobao/dare.yaml).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config value: key=value, dotted keys reach into sections "
            "(e.g. params.epochs=2, data.protocol.max_len=50). Repeatable.",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="POLYREC_DATA_DIR",
            help="Folder that relative data paths in the config are resolved against.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in --out.")
    ] = False,
) -> None:
    """Train a CTR model, evaluate AUC / gAUC / logloss and write record.json, metrics.json
    and model/ to the run directory.

    Example: polyrec ctr train configs/taobao/dare.yaml --out runs/dare --data-dir ../shared/data
    """
    from polyrec.config import load_yaml, merge, parse_overrides
    from polyrec.models.ranking.experiment import run_ctr

    if (out / "record.json").exists() and not overwrite:
        raise PolyrecError(f"{out} already holds a run; pass --overwrite to replace it")
    record = run_ctr(merge(load_yaml(config), parse_overrides(set_)), out, data_dir)
    print_ctr_record(record, out)


def print_ctr_record(record: RunRecord, out: Path) -> None:
    """The valid/test AUC, gAUC and logloss of a CTR run (mean ± std over seeds)."""
    for part in ("valid", "test"):
        values = record.metrics[part]
        shown = "  ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v.mean:.4f}±{v.std:.4f}"
            for k, v in values.items()
        )
        console.print(f"{record.model} {part}: {shown}")
    console.print(f"run written to {out}")
