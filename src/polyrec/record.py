"""The run record: what one training + evaluation run did and measured (``record.json``).

Every run directory holds one record (DESIGN.md, "Evaluation protocol"): the model and the
dataset (name + content fingerprint), the protocol (split, filtering, full or sampled ranking,
the K list, which items were excluded), the resolved config, the per-epoch history, the metrics
(``{"valid": {...}, "test": {"recall@20": ...}}`` with lower-case ``name@k`` keys), timings,
peak memory, library versions, the seed, the command line and the creation time.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from polyrec.errors import PolyrecError

RECORD_FILE = "record.json"
VERSIONED_PACKAGES = ("polyrec", "torch", "numpy", "scipy", "pandas", "implicit")


class MeanStd(BaseModel):
    """A metric summarised over several seeds."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float


class Timings(BaseModel):
    """Wall-clock seconds: the whole ``fit``, each epoch (iterative models) and test evaluation."""

    model_config = ConfigDict(extra="forbid")

    fit_seconds: float
    epoch_seconds: list[float] = Field(default_factory=list)
    eval_seconds: float


class RunRecord(BaseModel):
    """One run's record; ``save(dir)`` writes ``dir/record.json``, ``load(dir)`` reads it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    dataset: str
    dataset_fingerprint: str
    protocol: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]] = Field(default_factory=list)
    optimizer: str | None = None  # the optimiser class of a trained PyTorch model
    metrics: dict[str, dict[str, float | MeanStd]]
    timings: Timings
    peak_rss_mb: float
    versions: dict[str, str | None]
    seed: int
    command: str
    created_at: str

    @field_validator("metrics")
    @classmethod
    def _lower_case_keys(
        cls, value: dict[str, dict[str, float | MeanStd]]
    ) -> dict[str, dict[str, float | MeanStd]]:
        """Metric names are ``name@k`` in lower case; a case-only duplicate is an error."""
        if "test" not in value:
            raise ValueError("metrics must have a 'test' section")
        out: dict[str, dict[str, float | MeanStd]] = {}
        for part, values in value.items():
            lowered = {k.lower(): v for k, v in values.items()}
            if len(lowered) != len(values):
                raise ValueError(f"metrics.{part} has names that differ only in case")
            out[part.lower()] = lowered
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/record.json`` (atomically: a reader never sees half a file)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / RECORD_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> RunRecord:
        """Read a record from a run directory (or from the ``record.json`` path itself)."""
        p = Path(directory)
        path = p if p.is_file() else p / RECORD_FILE
        if not path.is_file():
            raise PolyrecError(f"{p} is not a polyrec run directory ({RECORD_FILE} not found)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PolyrecError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: Any, where: str) -> RunRecord:
        """A record from its JSON value; a bad field is one line naming ``where`` and the key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(part) for part in err["loc"]) or "(root)"
            raise PolyrecError(f"{where}: {key}: {err['msg']}") from None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux and bytes on macOS.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def versions() -> dict[str, str | None]:
    """Python and the installed versions of the libraries a result depends on (None: absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def command_line() -> str:
    """This process's command line, program name without its directory."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def now_utc() -> str:
    """Current time, ISO 8601 in UTC to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
