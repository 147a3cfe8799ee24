"""One CTR run from a config: read the log, cut samples, train per seed, evaluate, record.

The YAML config has ``model`` (a ranker name), ``params`` (its config), ``seeds`` and ``data``:
``format`` ``taobao`` (UserBehavior CSV), ``tmall`` (``user_log_format1.csv``) or ``dataset`` (a
polyrec built-in dataset name in ``path``, with ``category`` naming an item column, by default
the first of :data:`CATEGORY_COLUMNS` the dataset has, and ``options`` for ``synthetic``'s
generator, e.g. long histories), plus the sample ``protocol``
(:class:`polyrec.data.ctr.CTRProtocol`). A relative file path is looked up in the data directory
(``--data-dir`` / ``POLYREC_DATA_DIR``) and then the working directory.

The run directory gets ``record.json`` (a :class:`polyrec.record.RunRecord` with
``metrics.test.auc``/``gauc``/``logloss``; several seeds give mean and std), ``metrics.json``
(every seed's valid/test metrics, and search recall for search-based models) and ``model/``
(the first seed's ranker).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from polyrec.config import StrictModel, build, merge
from polyrec.data.ctr import (
    BehaviorLog,
    CTRData,
    CTRProtocol,
    build_ctr_samples,
    read_taobao_userbehavior,
    read_tmall,
)
from polyrec.errors import PolyrecError
from polyrec.eval.significance import summarize_seeds
from polyrec.models.ranking.base import CTRRanker, get_ranker_class
from polyrec.models.ranking.twostage import TwoStageNet
from polyrec.record import MeanStd, RunRecord, Timings, command_line, now_utc, peak_rss_mb, versions


class CTRDataConfig(StrictModel):
    """Where the behaviour log is and how samples are cut from it."""

    format: Literal["taobao", "tmall", "dataset"] = "taobao"
    path: str
    behaviors: list[str] | None = None
    actions: list[int] | None = None
    category: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    nrows: int | None = Field(None, ge=1)
    protocol: CTRProtocol = Field(default_factory=CTRProtocol)


class CTRRunConfig(StrictModel):
    """A CTR experiment: model name, its params, seeds and data."""

    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data: CTRDataConfig


CATEGORY_COLUMNS = ("category", "categories", "genres")
"""Item columns a built-in dataset's categories are read from when ``category`` is not set."""


def load_log(cfg: CTRDataConfig, data_dir: str | Path | None = None) -> BehaviorLog:
    """Read the behaviour log the data config names."""
    if cfg.format == "dataset":
        from polyrec.data.registry import load_dataset

        ds = load_dataset(cfg.path, data_dir, **cfg.options)
        category = cfg.category
        if category is None and ds.item_data is not None:
            category = next((c for c in CATEGORY_COLUMNS if c in ds.item_data.columns), None)
        return BehaviorLog.from_dataset(ds, category)
    path = Path(cfg.path)
    if not path.is_absolute() and data_dir is not None and (Path(data_dir) / path).is_file():
        path = Path(data_dir) / path
    if cfg.format == "taobao":
        return read_taobao_userbehavior(path, behaviors=cfg.behaviors, nrows=cfg.nrows)
    return read_tmall(path, actions=cfg.actions, nrows=cfg.nrows)


def load_samples(cfg: CTRDataConfig, data_dir: str | Path | None = None) -> CTRData:
    """The CTR samples of the data config: its log cut by its protocol."""
    return build_ctr_samples(load_log(cfg, data_dir), cfg.protocol)


def ctr_run_config(
    model: str,
    *,
    dataset: str | None = None,
    config: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> CTRRunConfig:
    """The run config of ``polyrec train <ranker>``: the YAML ``config`` (CTR layout) if given,
    its data replaced by the built-in ``dataset`` if given; ``overrides`` whose top-level key
    is not a config section (``--set epochs=2``) set the ranker's params."""
    data = dict(config or {})
    data["model"] = model
    if dataset is not None:
        data["data"] = {"format": "dataset", "path": dataset}
    if "data" not in data:
        raise PolyrecError(f"{model} needs --dataset or a --config with a data section")
    sections = set(CTRRunConfig.model_fields)
    for key, value in (overrides or {}).items():
        if key in sections:
            data = merge(data, {key: value})
        else:
            data["params"] = merge(data.get("params", {}), {key: value})
    if seed is not None:
        data["seeds"] = [seed]
    return build(CTRRunConfig, data)


def fingerprint(log: BehaviorLog) -> str:
    """SHA-256 (16 hex digits) of the log's users, items, categories and timestamps."""
    h = hashlib.sha256()
    for arr in (log.users, log.items, log.categories, log.timestamps):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def train_eval(
    name: str, params: dict[str, Any], data: CTRData, seed: int
) -> tuple[CTRRanker, dict[str, Any]]:
    """Fit one ranker with ``seed``; its valid/test metrics, timings and search recall."""
    model = get_ranker_class(name)({**params, "seed": seed})
    start = time.perf_counter()
    model.fit(data)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test = model.evaluate(data.test)
    eval_seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "seed": seed,
        "valid": model.evaluate(data.valid),
        "test": test,
        "fit_seconds": fit_seconds,
        "eval_seconds": eval_seconds,
        "best_epoch": model.best_epoch,
        "history": model.history,
    }
    if isinstance(model.net, TwoStageNet):
        from polyrec.models.ranking.analysis import search_recall

        result["test"]["search_recall"] = search_recall(model, data.test)
    return model, result


def run_ctr(
    config: CTRRunConfig | dict[str, Any], out: str | Path, data_dir: str | Path | None = None
) -> RunRecord:
    """Run ``config`` and write the run directory ``out`` (see module docstring)."""
    cfg = config if isinstance(config, CTRRunConfig) else build(CTRRunConfig, config)
    get_ranker_class(cfg.model)  # fail on an unknown name before reading data
    log = load_log(cfg.data, data_dir)  # its fingerprint goes into the record
    data = build_ctr_samples(log, cfg.data.protocol)
    out_dir = Path(out)
    runs = []
    for i, seed in enumerate(cfg.seeds):
        model, result = train_eval(cfg.model, cfg.params, data, seed)
        if i == 0:
            model.save(out_dir / "model")
            resolved = model.config.model_dump()
        runs.append(result)
    (out_dir / "metrics.json").write_text(
        json.dumps({"data": data.summary(), "runs": runs}, indent=2) + "\n"
    )
    metrics: dict[str, dict[str, float | MeanStd]] = {}
    for part in ("valid", "test"):
        if len(runs) == 1:
            metrics[part] = dict(runs[0][part])
        else:
            summary = summarize_seeds([r[part] for r in runs])
            metrics[part] = {k: MeanStd(**v) for k, v in summary.items()}
    record = RunRecord(
        model=cfg.model,
        dataset=data.name,
        dataset_fingerprint=fingerprint(log),
        protocol={"task": "ctr", **cfg.data.protocol.model_dump(), **data.summary()},
        config={**cfg.model_dump(), "params": resolved},
        history=runs[0]["history"],
        metrics=metrics,
        timings=Timings(
            fit_seconds=runs[0]["fit_seconds"],
            epoch_seconds=[h["seconds"] for h in runs[0]["history"]],
            eval_seconds=runs[0]["eval_seconds"],
        ),
        peak_rss_mb=peak_rss_mb(),
        versions=versions(),
        seed=cfg.seeds[0],
        command=command_line(),
        created_at=now_utc(),
    )
    record.save(out_dir)
    return record
