"""``polyrec serve``: put trained runs behind HTTP (uvicorn).

Mounted on the main CLI with ``app.command()(serve)``; heavy imports happen inside the
function so ``polyrec --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from polyrec.cli_options import DataDir


def serve(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories (polyrec train --out) to serve.")
    ],
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="POLYREC_DB",
            help="Store URL: sqlite:///FILE (default) or postgresql+psycopg://USER@HOST/DB.",
        ),
    ] = "sqlite:///polyrec.db",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="API key for writes and forget requests (>= 16 characters; stored hashed). "
            "Repeatable; also read from POLYREC_API_KEY. Keys stored earlier stay valid.",
            show_default=False,
        ),
    ] = None,
    ranker: Annotated[
        Path | None,
        typer.Option(
            help="Re-rank the candidates with this model: a polyrec train run, or a CTR ranker "
            "(DIN/SIM/TWIN/DARE run of polyrec train or polyrec ctr train, or a CTRRanker.save "
            "folder).",
            show_default=False,
        ),
    ] = None,
    index: Annotated[
        str,
        typer.Option(
            help="Item index: auto (exact below --ann-threshold items, else HNSW), exact, ivf "
            "or hnsw."
        ),
    ] = "auto",
    ann_threshold: Annotated[
        int, typer.Option(help="Catalogue size from which auto uses HNSW.")
    ] = 10_000,
    candidates: Annotated[
        int, typer.Option(help="Candidates retrieved per model before ranking.")
    ] = 200,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Allow browser calls from this origin (default: none). Repeatable.",
            show_default=False,
        ),
    ] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted.")] = 4.0,
    unlearn: Annotated[
        str | None,
        typer.Option(
            help="Unlearn each forget request from the served models with this method "
            "(retrain, finetune, sisa or mmrecun; the runs' training data must be reachable, "
            "see --data-dir) and serve the result. Default: the store forgets and serving "
            "masks the data at once, the models stay as trained.",
            show_default=False,
        ),
    ] = None,
    unlearn_dir: Annotated[
        Path, typer.Option(help="Where --unlearn writes the unlearned runs.")
    ] = Path("polyrec-unlearned"),
    data_dir: DataDir = None,
) -> None:
    """Serve recommendations, events and forget requests over HTTP, with a web page at /.

    Models are loaded from the run directories without the training data. Writes (POST
    /events, /forget) need an API key. The store keeps events, forget requests and key hashes.

    Examples:

        polyrec serve runs/bpr --api-key "$(openssl rand -hex 24)"
        polyrec serve runs/bpr runs/ease --db postgresql+psycopg://rec@localhost/rec --port 9000
        polyrec serve runs/bpr --unlearn retrain --data-dir ~/data
    """
    import torch
    import uvicorn

    from polyrec.errors import PolyrecError
    from polyrec.serve.app import create_app
    from polyrec.serve.service import ServeConfig

    if index not in ("auto", "exact", "ivf", "hnsw"):
        raise PolyrecError(f"--index must be auto, exact, ivf or hnsw, not {index!r}")
    # requests are served in threads; one intra-op thread each avoids oversubscribing cores
    torch.set_num_threads(1)
    keys = list(api_key or [])
    if os.environ.get("POLYREC_API_KEY"):
        keys.append(os.environ["POLYREC_API_KEY"])
    config = ServeConfig(
        runs=runs,
        db=db,
        ranker=ranker,
        index=index,  # type: ignore[arg-type]
        ann_threshold=ann_threshold,
        candidates=candidates,
        api_keys=keys,
        cors_origins=cors_origin or [],
        max_body_bytes=int(max_body_mb * 2**20),
    )
    unlearner = None
    if unlearn is not None:
        from polyrec.serve.unlearning import RunUnlearner

        unlearner = RunUnlearner(runs, unlearn, unlearn_dir, data_dir=data_dir)
    app = create_app(config, unlearner=unlearner)
    if not keys and app.state.service.store.count_api_keys() == 0:
        typer.echo(
            "warning: no API key configured: writes and forget requests are refused", err=True
        )
    uvicorn.run(app, host=host, port=port, log_level="warning")
