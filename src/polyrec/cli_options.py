"""Command-line options shared by the ``polyrec`` commands of several modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="POLYREC_DATA_DIR",
        help="Folder holding the dataset files (else the user cache, else a download).",
        show_default=False,
    ),
]
