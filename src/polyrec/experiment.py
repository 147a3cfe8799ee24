"""One run, end to end: the function behind ``polyrec train``, ``evaluate`` and the benchmarks.

A run config is one YAML mapping. The reserved keys describe the data and the protocol; every
other key is a hyperparameter of the model, validated by the model's pydantic ``Config``::

    model: ease                  # optional; must match the model being trained
    dataset: ml-100k             # optional default for --dataset
    dataset_options: {}          # passed to load_dataset (e.g. synthetic sizes)
    filter: {min_rating: 4, k_core: 5}
    features: {text: {pca: 64}}  # item feature matrices (polyrec.features.configured)
    split: {method: ratio, test: 0.1, valid: 0.1, seed: 0}
    l2: 500.0                    # model hyperparameters

``--set key=value`` overrides (dotted keys reach into sections) are merged over the file.

Split ``auto`` (no ``split`` section): the dataset's own train/test files when it ships them
(LightGCN Gowalla), leave-one-out when the dataset is a list of time-ordered sequences without
times (the S3-Rec / SASRec / BERT4Rec sets: :attr:`~polyrec.data.dataset.Dataset.order_only`),
otherwise a seeded per-user 80/10/10 ratio split. The split seed is the ``split.seed`` (0), not
the model seed, so runs with several model seeds share one split. Test ranking masks training
and validation items.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from polyrec.config import StrictModel, build, load_yaml, merge
from polyrec.data.split import SplitConfig
from polyrec.errors import PolyrecError
from polyrec.features.configured import FeaturesConfig
from polyrec.record import RunRecord, command_line, now_utc, peak_rss_mb, versions

if TYPE_CHECKING:
    from polyrec.data.dataset import Dataset
    from polyrec.data.split import Split
    from polyrec.eval import EvalResult
    from polyrec.models.base import ModelConfig, Recommender

MODEL_DIR = "model"
PER_USER_FILE = "per_user.parquet"
ITEMS_FILE = "items.parquet"
DEFAULT_KS = (5, 10, 20, 50)
SECTIONS = ("model", "dataset", "dataset_options", "filter", "features", "split")
SPLIT_METHODS = ("auto", "leave_one_out", "ratio", "temporal", "given")


class FilterConfig(StrictModel):
    """The ``filter:`` section: ``min_rating`` keeps ratings >= it (then implicit), ``k_core``
    keeps users and items with >= k interactions (iterated)."""

    min_rating: float | None = None
    k_core: int | None = Field(None, ge=1)


@dataclass
class RunSpec:
    """A resolved run config: model and validated hyperparameters, data and protocol."""

    model: str
    model_config: ModelConfig
    dataset: str
    dataset_options: dict[str, Any] = field(default_factory=dict)
    filter: FilterConfig = field(default_factory=FilterConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    split: SplitConfig | None = None  # None: decided from the dataset ("auto")

    def to_dict(self) -> dict[str, Any]:
        """The config as a YAML-able mapping (loadable again with :func:`resolve_config`)."""
        out: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "dataset_options": dict(self.dataset_options),
            "filter": self.filter.model_dump(),
        }
        if not self.features.empty:
            out["features"] = self.features.model_dump(exclude_defaults=True)
        if self.split is not None:
            out["split"] = self.split.model_dump()
        return out | self.model_config.model_dump()


@dataclass
class PreparedData:
    """The filtered dataset's split, its fingerprint and the filter reports."""

    split: Split
    fingerprint: str
    filtering: list[dict[str, Any]]
    item_titles: np.ndarray | None


def resolve_config(
    model_name: str,
    dataset: str | None = None,
    *,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    split: str = "auto",
    seed: int | None = None,
) -> RunSpec:
    """Merge the YAML file and overrides, validate them against the model's ``Config``.

    ``dataset`` and ``split`` (a method name) given here win over the file; ``seed`` sets the
    model's ``seed``. Unknown keys and bad values raise one-line :class:`PolyrecError`.
    """
    from polyrec.models.registry import get_model_class

    cls = get_model_class(model_name)
    where = str(config_path) if config_path is not None else "config"
    data = load_yaml(config_path) if config_path is not None else {}
    data = merge(data, dict(overrides or {}))
    if seed is not None:
        data["seed"] = seed
    known = set(cls.Config.model_fields) | set(SECTIONS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolyrecError(
            f"{where}: unknown key {unknown[0]!r} for model {cls.name} "
            f"(known: {', '.join(sorted(known))})"
        )
    named = data.pop("model", None)
    if named is not None and str(named).lower() != cls.name:
        raise PolyrecError(f"{where}: config is for model {named!r}, not {cls.name!r}")
    name = dataset or data.pop("dataset", None)
    data.pop("dataset", None)
    if not name:
        raise PolyrecError(f"no dataset: pass --dataset or set 'dataset' in {where}")
    options = data.pop("dataset_options", None) or {}
    if not isinstance(options, dict):
        raise PolyrecError(f"{where}: dataset_options must be a mapping")
    filter_cfg = build(FilterConfig, data.pop("filter", None) or {}, where=f"{where}: filter")
    features_cfg = build(
        FeaturesConfig, data.pop("features", None) or {}, where=f"{where}: features"
    )
    split_data = data.pop("split", None)
    if split not in SPLIT_METHODS:
        raise PolyrecError(f"unknown split {split!r}; choose from {', '.join(SPLIT_METHODS)}")
    if split != "auto":
        split_data = merge(split_data or {}, {"method": split})
    split_cfg = (
        None if split_data is None else build(SplitConfig, split_data, where=f"{where}: split")
    )
    model_cfg = build(cls.Config, data, where=where)
    return RunSpec(
        model=cls.name,
        model_config=model_cfg,
        dataset=str(name),
        dataset_options=options,
        filter=filter_cfg,
        features=features_cfg,
        split=split_cfg,
    )


def prepare_data(spec: RunSpec, data_dir: str | Path | None = None) -> PreparedData:
    """Load, filter and split the dataset of ``spec``; fills ``spec.split`` when it was auto."""
    from polyrec.data.filtering import binarize, k_core
    from polyrec.data.registry import list_datasets, load_dataset, load_given_split
    from polyrec.data.split import make_split

    infos = {info.name: info for info in list_datasets(data_dir)}
    if spec.dataset not in infos:
        raise PolyrecError(f"unknown dataset {spec.dataset!r}; known: {', '.join(infos)}")
    if spec.split is None and infos[spec.dataset].given_split:
        spec.split = SplitConfig(method="given")
    if spec.split is not None and spec.split.method == "given":
        if spec.dataset_options:
            raise PolyrecError(f"dataset {spec.dataset!r} takes no dataset_options")
        if spec.filter.min_rating is not None or spec.filter.k_core is not None:
            raise PolyrecError(f"{spec.dataset}: filters cannot be applied to a given split")
        if not spec.features.empty:
            raise PolyrecError(f"{spec.dataset}: item features need a dataset with item data")
        split = load_given_split(spec.dataset, data_dir)
        fingerprint = _combine(split.train.fingerprint(), split.test.fingerprint())
        return PreparedData(split, fingerprint, [], split.train.item_titles())
    ds = load_dataset(spec.dataset, data_dir, **spec.dataset_options)
    reports = []
    if spec.filter.min_rating is not None:
        ds, report = binarize(ds, spec.filter.min_rating)
        reports.append(report.as_dict())
    if spec.filter.k_core is not None:
        ds, report = k_core(ds, spec.filter.k_core, spec.filter.k_core)
        reports.append(report.as_dict())
    if not spec.features.empty:
        from polyrec.features.configured import attach_configured_features

        ds = attach_configured_features(ds, spec.features)
    if spec.split is None:
        # Sequence files (S3-Rec, SASRec, LC-Rec) keep the order of events, not their times.
        spec.split = (
            SplitConfig(method="leave_one_out")
            if ds.order_only
            else SplitConfig(method="ratio", test=0.1, valid=0.1)
        )
    return PreparedData(make_split(ds, spec.split), ds.fingerprint(), reports, ds.item_titles())


def run_experiment(
    model_name: str,
    dataset: str | None = None,
    *,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | Path,
    split: str = "auto",
    data_dir: str | Path | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    seed: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> RunRecord:
    """Train ``model_name`` on ``dataset``, evaluate on valid and test, write ``out_dir``.

    ``out_dir`` receives ``model/`` (the fitted model), ``items.parquet`` (item ids and titles,
    so ``recommend`` works without the data), ``per_user.parquet`` (per-user test metrics, for
    paired tests) and ``record.json`` (the returned :class:`RunRecord`).
    """
    spec = resolve_config(  # first: config mistakes are reported before torch is imported
        model_name, dataset, config_path=config_path, overrides=overrides, split=split, seed=seed
    )
    from polyrec.eval.metrics import check_ks
    from polyrec.models.registry import get_model_class

    ks = check_ks(ks)  # before training: a bad K is a mistake to report at once
    data = prepare_data(spec, data_dir)
    parts = data.split
    model = get_model_class(spec.model)(spec.model_config)
    start = time.perf_counter()
    model.fit(parts.train, parts.valid)
    fit_seconds = time.perf_counter() - start

    valid_result = None
    if parts.valid is not None and parts.valid.n_interactions:
        valid_result = _evaluate(model, parts, "valid", ks, progress)
    test_result = _evaluate(model, parts, "test", ks, progress)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_DIR)
    _save_items(out / ITEMS_FILE, parts.train, data.item_titles)
    _save_per_user(out / PER_USER_FILE, parts.test, test_result)
    history = list(getattr(model, "history", []))
    metrics = {"test": dict(test_result.summary)}
    if valid_result is not None:
        metrics["valid"] = dict(valid_result.summary)
    record = RunRecord(
        model=spec.model,
        dataset=spec.dataset,
        dataset_fingerprint=data.fingerprint,
        protocol=_protocol(data, test_result),
        config=spec.to_dict(),
        history=history,
        optimizer=getattr(model, "optimizer_name", None) or None,
        metrics=metrics,
        timings={
            "fit_seconds": fit_seconds,
            "epoch_seconds": [float(h["seconds"]) for h in history if "seconds" in h],
            "eval_seconds": test_result.seconds,
        },
        peak_rss_mb=peak_rss_mb(),
        versions=versions(),
        seed=spec.model_config.seed,
        command=command or command_line(),
        created_at=now_utc(),
    )
    record.save(out)
    return record


def load_run(
    run_dir: str | Path, data_dir: str | Path | None = None
) -> tuple[RunRecord, PreparedData, Recommender]:
    """A saved run's record, its data prepared again (dataset, filters, split as recorded) and
    its model. A fingerprint different from the recorded one (the data changed) is an error."""
    from polyrec.models.base import Recommender

    record = RunRecord.load(run_dir)
    spec = resolve_config(record.model, record.dataset, overrides=record.config)
    data = prepare_data(spec, data_dir)
    if data.fingerprint != record.dataset_fingerprint:
        raise PolyrecError(
            f"dataset {record.dataset!r} differs from the run's (fingerprint "
            f"{data.fingerprint} != {record.dataset_fingerprint}); is --data-dir the same?"
        )
    return record, data, Recommender.load(Path(run_dir) / MODEL_DIR)


def reevaluate(
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    ks: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Re-run valid and test evaluation of a saved run on its dataset, split and filters.

    The dataset is reloaded by name with the recorded options; a fingerprint different from the
    recorded one (the data changed) is an error.
    """
    record, data, model = load_run(run_dir, data_dir)
    ks = tuple(ks) if ks else tuple(record.protocol.get("ks", DEFAULT_KS))
    out: dict[str, dict[str, float]] = {}
    if data.split.valid is not None and data.split.valid.n_interactions:
        out["valid"] = _evaluate(model, data.split, "valid", ks, progress).summary
    out["test"] = _evaluate(model, data.split, "test", ks, progress).summary
    return out


def load_per_user(run_dir: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A run's per-user test metrics: external user ids and ``{metric: values}``."""
    path = Path(run_dir) / PER_USER_FILE
    if not path.is_file():
        raise PolyrecError(f"{run_dir}: {PER_USER_FILE} not found (not a complete polyrec run)")
    df = pd.read_parquet(path)
    return df["user"].to_numpy(), {c: df[c].to_numpy() for c in df.columns if c != "user"}


def load_item_titles(run_dir: str | Path) -> np.ndarray | None:
    """Item titles of a run in internal item order, or ``None`` when the dataset had none."""
    path = Path(run_dir) / ITEMS_FILE
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    return df["title"].to_numpy() if "title" in df.columns else None


# ---------------------------------------------------------------------- helpers
def _evaluate(
    model: Recommender, parts: Split, which: str, ks: tuple[int, ...], progress: bool
) -> EvalResult:
    from polyrec.eval import evaluate

    mask = model.mask_history_in_eval
    if which == "valid":
        assert parts.valid is not None
        model.set_histories(parts.train)
        exclude = {"train": parts.train.binary_csr} if mask else {}
        result = evaluate(
            model, parts.valid, exclude=exclude, ks=ks, beyond=False, progress=progress
        )
        model.set_histories(parts.train, parts.valid)
        return result
    seen = [p for p in (parts.train, parts.valid) if p is not None]
    model.set_histories(*seen)
    exclude = {"train": parts.train.binary_csr} if mask else {}
    if mask and parts.valid is not None:
        exclude["valid"] = parts.valid.binary_csr
    return evaluate(model, parts.test, exclude=exclude, ks=ks, progress=progress)


def _protocol(data: PreparedData, test: EvalResult) -> dict[str, Any]:
    return {"split": dict(data.split.protocol), "filtering": data.filtering, **test.protocol}


def _external(ids: np.ndarray) -> np.ndarray:
    """External ids as parquet stores them (object ids as strings, as ``Recommender.save``)."""
    return ids.astype(str) if ids.dtype == object else ids


def _save_items(path: Path, train: Dataset, titles: np.ndarray | None) -> None:
    frame = pd.DataFrame({"item": _external(train.item_ids.external)})
    if titles is not None:
        frame["title"] = titles
    frame.to_parquet(path, index=False)


def _save_per_user(path: Path, test: Dataset, result: EvalResult) -> None:
    frame = pd.DataFrame({"user": _external(test.user_ids.to_external(result.users))})
    for name, values in result.per_user.items():
        frame[name] = values
    frame.to_parquet(path, index=False)


def _combine(*fingerprints: str) -> str:
    return hashlib.sha256("|".join(fingerprints).encode()).hexdigest()[:16]
