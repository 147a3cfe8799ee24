"""The registry of published results and the rule that keeps comparisons honest.

``benchmarks/published.yaml`` holds named evaluation protocols and published numbers::

    protocols:
      loo-full:
        description: leave-one-out, full ranking over all items
        match: {split: leave_one_out, ranking: full}
    results:
      - paper: Zhai et al., ICML 2024 (HSTU)
        table: generative-recommenders README, ml-1m table
        model: hstu
        dataset: ml-1m
        protocol: loo-full
        metrics: {hr@10: 0.3097, ndcg@10: 0.1720}
        tag: V
        source: facebookresearch/generative-recommenders README

A run's protocol is derived from its record (:func:`run_protocol`): the split method, the
ranking mode (``full``, ``sampled-uni100``, ...), whether history items were masked and whether
polyrec filtered the data. A published value is compared with a run only when the dataset and
the model agree and every ``match`` key of its protocol equals the run's value
(:func:`check_comparable`); anything else is refused, because numbers under different protocols
(full vs sampled ranking, another split) are not comparable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from polyrec.config import StrictModel, load_yaml
from polyrec.errors import PolyrecError

PROTOCOL_KEYS = ("split", "ranking", "history_masked", "filtered")

# [V] verified in the cited file, [S] a secondary copy of the table, [I] unchecked recollection:
# the tags of /work/shared/reference (see the file's header); reports print them beside values.
Tag = Literal["V", "S", "I"]


class ProtocolDef(StrictModel):
    """A named evaluation protocol: a description and the run-protocol values it requires."""

    description: str
    match: dict[str, str | bool | int] = Field(min_length=1)


class ResultEntry(StrictModel):
    """One published table cell group (one model on one dataset under one protocol)."""

    paper: str
    table: str
    model: str
    dataset: str
    protocol: str
    metrics: dict[str, float] = Field(min_length=1)
    tag: Tag
    source: str
    note: str = ""


class RegistryFile(StrictModel):
    """The layout of ``published.yaml``."""

    protocols: dict[str, ProtocolDef]
    results: list[ResultEntry]


@dataclass(frozen=True)
class Published:
    """One published value: ``metric`` of ``model`` on ``dataset`` under ``protocol``."""

    paper: str
    table: str
    model: str
    dataset: str
    protocol: str
    metric: str
    value: float
    tag: str
    source: str
    note: str = ""


@dataclass
class Registry:
    """Published values and the protocols they were measured under."""

    protocols: dict[str, ProtocolDef]
    values: list[Published] = field(default_factory=list)

    def for_dataset(self, dataset: str) -> list[Published]:
        """Every published value on ``dataset`` (any protocol)."""
        return [p for p in self.values if p.dataset == dataset]

    def comparable(self, record: Mapping[str, Any]) -> list[Published]:
        """The published values a run (a record mapping) may be compared with."""
        run = run_protocol(record)
        return [
            p
            for p in self.values
            if p.model == record["model"]
            and p.dataset == record["dataset"]
            and not _mismatches(self.protocols[p.protocol].match, run)
        ]

    def check_comparable(self, published: Published, record: Mapping[str, Any]) -> None:
        """Raise :class:`PolyrecError` unless ``published`` and the run share dataset and
        protocol (the model may differ: a baseline row is compared across models on purpose)."""
        if published.dataset != record["dataset"]:
            raise PolyrecError(
                f"published {published.model} {published.metric} is on {published.dataset!r}, "
                f"the run on {record['dataset']!r}: not comparable"
            )
        diffs = _mismatches(self.protocols[published.protocol].match, run_protocol(record))
        if diffs:
            key, want, got = diffs[0]
            raise PolyrecError(
                f"published {published.model} {published.metric} ({published.paper}) uses "
                f"protocol {published.protocol!r} ({key}={want}), the run has {key}={got}: "
                "not comparable"
            )

    def gap(self, published: Published, record: Mapping[str, Any]) -> tuple[float, float]:
        """``(ours - published, relative gap)`` for one run; refuses another protocol."""
        self.check_comparable(published, record)
        ours = float(record["metrics"]["test"][published.metric])
        return ours - published.value, (ours - published.value) / published.value


def run_protocol(record: Mapping[str, Any]) -> dict[str, str | bool]:
    """The protocol keys of a run, read from its record (``record.json`` as a mapping).

    ``split`` (leave_one_out, ratio, temporal, given), ``ranking`` (``full`` or e.g.
    ``sampled-uni100``), ``history_masked`` (training items excluded from the ranking),
    ``filtered`` (polyrec applied rating / k-core filters on top of the dataset files).
    """
    proto = record.get("protocol") or {}
    split = proto.get("split")
    if isinstance(split, Mapping):
        split = split.get("split", split.get("method"))
    elif isinstance(split, str):
        # older benchmark records describe the split in words: "given (LightGCN ... test.txt)"
        split = split.split(" ", 1)[0]
    if not isinstance(split, str) or not split:
        raise PolyrecError(f"run of {record.get('model')!r}: record has no split protocol")
    ranking = proto.get("mode")
    if not isinstance(ranking, str):
        raise PolyrecError(f"run of {record.get('model')!r}: record has no ranking mode")
    return {
        "split": split,
        "ranking": ranking,
        "history_masked": bool(proto.get("exclude")),
        "filtered": bool(proto.get("filtering")),
    }


def load_registry(path: str | Path) -> Registry:
    """Read and validate ``published.yaml``; unknown protocols or keys are one-line errors."""
    data = load_yaml(path)
    try:
        parsed = RegistryFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        raise PolyrecError(f"{path}: {key}: {err['msg']}") from None
    for name, proto in parsed.protocols.items():
        unknown = sorted(set(proto.match) - set(PROTOCOL_KEYS))
        if unknown:
            raise PolyrecError(
                f"{path}: protocol {name!r}: unknown match key {unknown[0]!r} "
                f"(known: {', '.join(PROTOCOL_KEYS)})"
            )
    values: list[Published] = []
    seen: set[tuple[str, ...]] = set()
    for i, entry in enumerate(parsed.results):
        if entry.protocol not in parsed.protocols:
            raise PolyrecError(
                f"{path}: results.{i}: unknown protocol {entry.protocol!r} "
                f"(defined: {', '.join(parsed.protocols)})"
            )
        for metric, value in entry.metrics.items():
            key = (entry.paper, entry.table, entry.model, entry.dataset, metric.lower())
            if key in seen:
                raise PolyrecError(f"{path}: results.{i}: duplicate value {key}")
            seen.add(key)
            values.append(
                Published(
                    paper=entry.paper,
                    table=entry.table,
                    model=entry.model,
                    dataset=entry.dataset,
                    protocol=entry.protocol,
                    metric=metric.lower(),
                    value=float(value),
                    tag=entry.tag,
                    source=entry.source,
                    note=entry.note,
                )
            )
    return Registry(protocols=dict(parsed.protocols), values=values)


def describe(match: Mapping[str, Any]) -> str:
    """``split=given, ranking=full`` for a protocol's match keys."""
    return ", ".join(f"{k}={v}" for k, v in match.items())


def _mismatches(match: Mapping[str, Any], run: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, v, run.get(k)) for k, v in match.items() if run.get(k) != v]


def default_registry_path(start: Path | None = None) -> Path | None:
    """``benchmarks/published.yaml`` of the checkout holding ``start`` (default: the cwd)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "benchmarks" / "published.yaml"
        if candidate.is_file():
            return candidate
    return None
