"""Benchmark suites: a grid of models x datasets x seeds, run resumably as standard runs.

A suite is one YAML file (``benchmarks/suites/*.yaml``)::

    name: ml-100k-classic
    root: ../..                         # config and output paths are relative to this folder
    out_dir: benchmarks/runs/ml-100k-classic
    results: benchmarks/results/bench_ml-100k-classic.json   # optional summary of every run
    datasets: [ml-100k]
    config: configs/{dataset}/{model}.yaml                   # default config of each model
    seeds: [0, 1]
    ks: [5, 10, 20, 50]
    set: {}                             # overrides for every run (e.g. dataset_options)
    models:
      - name: ease
        seeds: [0]                      # deterministic: one run is enough
      - name: bpr
        set: {epochs: 50}
      - {name: bpr, label: bpr-small, set: {factors: 16}}

Each grid point is one :func:`polyrec.experiment.run_experiment` call writing a standard run
directory ``out_dir/<dataset>/<label>/seed-<seed>`` (``record.json``, ``per_user.parquet``,
``model/``) plus ``bench.json`` (the suite, the run id and a hash of the resolved config). A run
whose ``record.json`` exists with the same config hash is finished and never re-run; a record
with another hash (the config changed) is re-run; a directory without a record (an interrupted
run) is cleared and re-run, except that a PyTorch model's training checkpoint of the same config
(``training-<hash>.ckpt``, written after every epoch and deleted when the run finishes) is kept,
so that its fit continues from the last finished epoch (:mod:`polyrec.train.checkpoint`).
Every config is resolved before anything is trained, so a typo in the last model fails at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from polyrec.config import StrictModel, load_yaml, merge
from polyrec.errors import PolyrecError
from polyrec.experiment import DEFAULT_KS, SPLIT_METHODS, resolve_config
from polyrec.record import RECORD_FILE, RunRecord, now_utc

BENCH_FILE = "bench.json"
Status = Literal["done", "todo", "resume", "stale"]
CHECKPOINT_FILE = "training-{spec_hash}.ckpt"
"""An interrupted PyTorch run's training state, kept for the rerun of the same config."""


class ModelEntry(StrictModel):
    """One model of a suite: its registry name, an optional label, config and overrides."""

    name: str
    label: str | None = None
    config: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = None


class SuiteFile(StrictModel):
    """The layout of a suite YAML file."""

    name: str
    description: str = ""
    root: str = "."
    out_dir: str
    results: str | None = None
    datasets: list[str] = Field(min_length=1)
    config: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS), min_length=1)
    split: str = "auto"
    set: dict[str, Any] = Field(default_factory=dict)
    models: list[ModelEntry] = Field(min_length=1)


@dataclass(frozen=True)
class PlannedRun:
    """One grid point, resolved: where it runs, with what, and whether it is finished."""

    run_id: str
    model: str
    label: str
    dataset: str
    seed: int
    config_path: str | None
    overrides: dict[str, Any]
    split: str
    ks: tuple[int, ...]
    run_dir: str
    spec_hash: str
    status: Status


@dataclass
class Suite:
    """A loaded suite: its file, the folder paths are relative to, and the planned runs."""

    path: Path
    spec: SuiteFile
    root: Path
    runs: list[PlannedRun]

    @property
    def out_dir(self) -> Path:
        """Folder holding the suite's run directories."""
        return self.root / self.spec.out_dir

    @property
    def results_path(self) -> Path | None:
        """The summary JSON path, when the suite asks for one."""
        return None if self.spec.results is None else self.root / self.spec.results


@dataclass
class RunOutcome:
    """What happened to one planned run in :func:`run_suite`."""

    run_id: str
    run_dir: str
    action: Literal["skipped", "ran", "resumed", "reran", "failed"]
    seconds: float = 0.0
    error: str = ""


def load_suite(path: str | Path, *, out_dir: str | Path | None = None) -> Suite:
    """Read a suite file and plan its grid; ``out_dir`` replaces the file's output folder.

    Every model config is validated here (unknown keys, bad values, unknown models or split
    methods are one-line :class:`PolyrecError`), and every run's status is read from disk.
    """
    p = Path(path)
    data = load_yaml(p)
    try:
        spec = SuiteFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        raise PolyrecError(f"{p}: {key}: {err['msg']}") from None
    if spec.split not in SPLIT_METHODS:
        raise PolyrecError(f"{p}: unknown split {spec.split!r}; choose from {SPLIT_METHODS}")
    root = (p.parent / spec.root).resolve()
    if out_dir is not None:
        spec = spec.model_copy(update={"out_dir": str(Path(out_dir).resolve())})
    runs = _plan(p, spec, root)
    return Suite(path=p, spec=spec, root=root, runs=runs)


def run_suite(
    suite: Suite,
    *,
    data_dir: str | Path | None = None,
    workers: int = 1,
    threads: int = 1,
    only: Sequence[str] | None = None,
    progress: bool = False,
    isolate: bool = True,
    log: Callable[[str], None] = print,
) -> list[RunOutcome]:
    """Run every unfinished run of ``suite`` (``only``: run ids containing one of the strings).

    ``workers`` runs at once, each with ``threads`` torch / BLAS threads. With ``isolate``
    (the default) every run gets a fresh process, so its record's peak memory is its own and
    not the suite's so far; ``isolate=False`` with one worker runs in this process. A failing
    run is logged and reported, the others still run. The suite's ``results`` JSON (when set)
    is rewritten from every finished run at the end.
    """
    if workers < 1 or threads < 1:
        raise PolyrecError(f"workers and threads must be >= 1, got {workers} and {threads}")
    selected = [r for r in suite.runs if not only or any(s in r.run_id for s in only)]
    if only and not selected:
        raise PolyrecError(f"no run of suite {suite.spec.name!r} matches {list(only)}")
    outcomes: list[RunOutcome] = []
    todo = []
    for run in selected:
        if run.status == "done":
            outcomes.append(RunOutcome(run.run_id, run.run_dir, "skipped"))
            log(f"skip  {run.run_id} (finished: {run.run_dir})")
        else:
            todo.append(run)
    command = f"polyrec bench {suite.path}"
    jobs = [
        (
            asdict(run),
            suite.spec.name,
            str(data_dir) if data_dir else None,
            threads,
            progress,
            command,
        )
        for run in todo
    ]
    if not isolate and workers == 1:
        for job in jobs:
            outcomes.append(_report(_execute(*job), log))
    else:
        run_one = _execute_in_subprocess if isolate else _execute
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_one, *job) for job in jobs]
            for future in as_completed(futures):
                outcomes.append(_report(future.result(), log))
    if suite.results_path is not None:
        write_summary(suite, suite.results_path)
    return outcomes


def finished_runs(suite: Suite) -> list[tuple[PlannedRun, RunRecord]]:
    """The suite's runs that have a record for their current config, with those records."""
    out = []
    for run in suite.runs:
        if _status(Path(run.run_dir), run.spec_hash) == "done":
            out.append((run, RunRecord.load(run.run_dir)))
    return out


def write_summary(suite: Suite, path: str | Path) -> Path:
    """Write the suite's finished runs (their full records) as one JSON file."""
    runs = [
        {
            "run_id": run.run_id,
            "label": run.label,
            "run_dir": _relative(Path(run.run_dir), suite.root),
            "record": record.model_dump(mode="json"),
        }
        for run, record in finished_runs(suite)
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "suite",
        "suite": suite.spec.name,
        "suite_file": _relative(suite.path.resolve(), suite.root),
        "created_at": now_utc(),
        "planned": len(suite.runs),
        "finished": len(runs),
        "runs": runs,
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")
    return out


def read_bench_info(run_dir: str | Path) -> dict[str, Any] | None:
    """A run directory's ``bench.json`` (suite, run id, label, config hash), if any."""
    path = Path(run_dir) / BENCH_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


# ---------------------------------------------------------------------- helpers
def _plan(path: Path, spec: SuiteFile, root: Path) -> list[PlannedRun]:
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for entry in spec.models:
        label = entry.label or entry.name
        template = entry.config if entry.config is not None else spec.config
        for dataset in spec.datasets:
            config_path = None
            if template is not None:
                config_path = str(root / template.format(dataset=dataset, model=entry.name))
            overrides = merge(dict(spec.set), dict(entry.set))
            for seed in entry.seeds if entry.seeds is not None else spec.seeds:
                run_id = f"{dataset}/{label}/seed-{seed}"
                if run_id in seen:
                    raise PolyrecError(
                        f"{path}: run {run_id} appears twice; give one of the models a label"
                    )
                seen.add(run_id)
                resolved = resolve_config(
                    entry.name,
                    dataset,
                    config_path=config_path,
                    overrides=overrides,
                    split=spec.split,
                    seed=seed,
                )
                payload = json.dumps(
                    {"config": resolved.to_dict(), "ks": sorted(spec.ks)},
                    sort_keys=True,
                    default=str,
                )
                spec_hash = hashlib.sha256(payload.encode()).hexdigest()[:16]
                run_dir = root / spec.out_dir / dataset / label / f"seed-{seed}"
                runs.append(
                    PlannedRun(
                        run_id=run_id,
                        model=resolved.model,
                        label=label,
                        dataset=dataset,
                        seed=seed,
                        config_path=config_path,
                        overrides=overrides,
                        split=spec.split,
                        ks=tuple(spec.ks),
                        run_dir=str(run_dir),
                        spec_hash=spec_hash,
                        status=_status(run_dir, spec_hash),
                    )
                )
    return runs


def _status(run_dir: Path, spec_hash: str) -> Status:
    if not (run_dir / RECORD_FILE).is_file():
        resumable = (run_dir / CHECKPOINT_FILE.format(spec_hash=spec_hash)).is_file()
        return "resume" if resumable else "todo"
    info = read_bench_info(run_dir)
    return "done" if info is not None and info.get("spec_hash") == spec_hash else "stale"


def _execute(
    run: dict[str, Any],
    suite_name: str,
    data_dir: str | None,
    threads: int,
    progress: bool,
    command: str,
) -> dict[str, Any]:
    """Run one planned run (in this process or a worker); never raises."""
    import time

    import torch
    from threadpoolctl import threadpool_limits

    from polyrec.experiment import run_experiment
    from polyrec.models.registry import get_model_class

    torch.set_num_threads(threads)
    run_dir = Path(run["run_dir"])
    action = {"stale": "reran", "resume": "resumed"}.get(run["status"], "ran")
    start = time.perf_counter()
    # a PyTorch model saves its training state after every epoch: an interrupted fit of the
    # same config continues from its last epoch instead of starting over
    checkpoint = run_dir / CHECKPOINT_FILE.format(spec_hash=run["spec_hash"])
    try:
        overrides = dict(run["overrides"])
        if "checkpoint" in get_model_class(run["model"]).Config.model_fields:
            overrides["checkpoint"] = str(checkpoint)
        if run_dir.exists():
            # an interrupted or outdated run: never mix its files with the new run's
            _clear_run_dir(run_dir, keep=checkpoint)
        # BLAS pools (EASE, ALS) ignore torch's setting: limit them for the run too
        with threadpool_limits(limits=threads):
            run_experiment(
                run["model"],
                run["dataset"],
                config_path=run["config_path"],
                overrides=overrides,
                out_dir=run_dir,
                split=run["split"],
                data_dir=data_dir,
                ks=run["ks"],
                seed=run["seed"],
                progress=progress,
                command=command,
            )
        info = {
            "suite": suite_name,
            "run_id": run["run_id"],
            "label": run["label"],
            "spec_hash": run["spec_hash"],
            "config_path": run["config_path"],
            "finished_at": now_utc(),
        }
        (run_dir / BENCH_FILE).write_text(json.dumps(info, indent=1) + "\n")
        checkpoint.unlink(missing_ok=True)  # finished: the record and model/ hold the result
    except Exception as exc:  # one failing run must not stop the suite
        error = str(exc) if isinstance(exc, PolyrecError) else traceback.format_exc(limit=3)
        return {
            "run_id": run["run_id"],
            "run_dir": str(run_dir),
            "action": "failed",
            "seconds": time.perf_counter() - start,
            "error": " ".join(error.split()),
        }
    return {
        "run_id": run["run_id"],
        "run_dir": str(run_dir),
        "action": action,
        "seconds": time.perf_counter() - start,
        "error": "",
    }


def _clear_run_dir(run_dir: Path, keep: Path) -> None:
    """Delete ``run_dir`` but the file ``keep`` (the checkpoint of the current config)."""
    if not keep.is_file():
        shutil.rmtree(run_dir)
        return
    for path in run_dir.iterdir():
        if path != keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _execute_in_subprocess(
    run: dict[str, Any],
    suite_name: str,
    data_dir: str | None,
    threads: int,
    progress: bool,
    command: str,
) -> dict[str, Any]:
    """Run one planned run in a fresh ``python -m polyrec.bench.suite`` process.

    A subprocess rather than multiprocessing: it needs nothing from the caller's ``__main__``
    and a crash (out of memory, a segfault) becomes a failed run instead of a broken pool.
    """
    threads_env = {
        k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    with tempfile.TemporaryDirectory(prefix="polyrec-bench-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job = [run, suite_name, data_dir, threads, progress, command]
        job_path.write_text(json.dumps(job, default=list))
        done = subprocess.run(
            [sys.executable, "-m", "polyrec.bench.suite", str(job_path), str(result_path)],
            env={**os.environ, **threads_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result_path.is_file():
            return json.loads(result_path.read_text())
    tail = " ".join(done.stderr.split()[-40:])
    return {
        "run_id": run["run_id"],
        "run_dir": run["run_dir"],
        "action": "failed",
        "seconds": 0.0,
        "error": f"worker process exited with code {done.returncode}: {tail}",
    }


def _report(result: dict[str, Any], log: Callable[[str], None]) -> RunOutcome:
    outcome = RunOutcome(**result)
    if outcome.action == "failed":
        log(f"FAIL  {outcome.run_id}: {outcome.error}")
    else:
        log(f"{outcome.action:<5} {outcome.run_id} ({outcome.seconds:.1f} s)")
    return outcome


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


if __name__ == "__main__":  # the worker process of run_suite(isolate=True)
    _job, _result = (Path(a) for a in sys.argv[1:3])
    _args = json.loads(_job.read_text())
    _args[0]["ks"] = tuple(_args[0]["ks"])
    _result.write_text(json.dumps(_execute(*_args)))
