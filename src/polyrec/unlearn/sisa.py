"""SISA: sharded, isolated training so that unlearning retrains only the affected shards.

Bourtoule et al., "Machine Unlearning", IEEE S&P 2021 (Sharded, Isolated, Sliced, Aggregated).
The training interactions are split into ``n_shards`` disjoint shards by a fixed hash, one
constituent model of the base class is trained per shard, and scores are aggregated:

- ``partition: interaction`` hashes each (user, item) pair; a user's score is the mean of the
  constituents' scores (SISA's average aggregation);
- ``partition: user`` hashes users (RecEraser's user-based partition, Chen et al., WWW 2022);
  every user's data lives in one shard and that shard's model scores the user.

Slicing (checkpoints inside a shard) is not used: a shard is retrained from scratch. The hash
depends only on internal indices and ``seed``, so the retain set falls into the same shards.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.models.base import ModelConfig, Recommender, sparse_from_state
from polyrec.models.registry import get_model_class
from polyrec.unlearn.base import Unlearned, unwrap
from polyrec.unlearn.request import ForgetRequest, apply_request


class SISAConfig(ModelConfig):
    """The base model (registry name + config), shard count and partition key."""

    base: str = "bpr"
    base_config: dict[str, Any] = Field(default_factory=dict)
    n_shards: int = Field(4, ge=1)
    partition: Literal["interaction", "user"] = "user"


def _mix(keys: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of integer keys."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class SISA(Recommender):
    """An ensemble of per-shard models of one base class (see module docstring)."""

    name = "sisa"
    Config: ClassVar[type[ModelConfig]] = SISAConfig
    config: SISAConfig

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.shards: list[Recommender] = []
        self.shard_seconds: list[float] = []
        self.last_retrained: list[int] = []

    def shard_of(self, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        """The shard of each interaction (``users``/``items`` internal indices)."""
        users = np.asarray(users, np.int64)
        keys = users if self.config.partition == "user" else users * n_items + np.asarray(items)
        return (_mix(keys, self.config.seed) % np.uint64(self.config.n_shards)).astype(np.int64)

    def _shard_data(self, train: Dataset, shard: int) -> Dataset:
        mask = self.shard_of(train.users, train.items, train.n_items) == shard
        if not mask.any():
            raise PolyrecError(
                f"sisa: shard {shard} of {self.config.n_shards} got no interaction; use fewer "
                "shards"
            )
        return train.with_interactions(mask)

    def _fit_shard(self, train: Dataset, shard: int) -> Recommender:
        cls = get_model_class(self.config.base)
        config = {"seed": self.config.seed + shard, **self.config.base_config}
        start = time.perf_counter()
        model = cls(config).fit(self._shard_data(train, shard))
        self.shard_seconds[shard] = time.perf_counter() - start
        return model

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.shard_seconds = [0.0] * self.config.n_shards
        self.shards = [self._fit_shard(train, s) for s in range(self.config.n_shards)]
        self.last_retrained = list(range(self.config.n_shards))

    def retrain_shards(self, retain: Dataset, shards: list[int]) -> None:
        """Refit the constituents of ``shards`` on their part of ``retain``."""
        for s in shards:
            self.shards[s] = self._fit_shard(retain, s)
        self.seen = retain.binary_csr
        self.last_retrained = sorted(shards)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        if self.config.partition == "interaction":
            return torch.stack([m._score(users).float() for m in self.shards]).mean(dim=0)
        route = self.shard_of(users, users, 0)
        out = torch.empty(len(users), self.n_items)
        for s in np.unique(route):
            rows = np.flatnonzero(route == s)
            out[torch.from_numpy(rows)] = self.shards[s]._score(users[rows]).float()
        return out

    def _get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for s, model in enumerate(self.shards):
            state[f"shard_{s}"] = model._get_state()
            state[f"seen_{s}"] = model.seen
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        cls = get_model_class(self.config.base)
        self.shards = []
        for s in range(self.config.n_shards):
            model = cls({"seed": self.config.seed + s, **self.config.base_config})
            model.user_ids, model.item_ids = self.user_ids, self.item_ids
            model.seen = sparse_from_state(state[f"seen_{s}"])
            model._set_state(state[f"shard_{s}"])
            self.shards.append(model)


def sisa_unlearn(model: Recommender, train: Dataset, request: ForgetRequest) -> Recommender:
    """Retrain only the shards that hold forgotten interactions (all shards for a modality,
    and for forgotten items when the base model reads item features); ``model`` must be a
    fitted :class:`SISA` and is modified in place."""
    inner, _ = unwrap(model)
    if not isinstance(inner, SISA):
        raise PolyrecError(f"sisa unlearning needs a model trained with sisa, got {inner.name}")
    applied = apply_request(train, request)
    if applied.modality is not None:
        cfg = dict(inner.config.base_config)
        if applied.modality in cfg.get("modalities", ()):
            cfg["modalities"] = [m for m in cfg["modalities"] if m != applied.modality]
            inner.config = inner.config.model_copy(update={"base_config": cfg})
        affected = list(range(inner.config.n_shards))
    elif len(applied.items) and getattr(inner.shards[0].config, "modalities", None):
        # every shard learned from the forgotten items' feature rows (the item graph, the
        # feature heads on sampled negatives), not only the shards holding their interactions
        affected = list(range(inner.config.n_shards))
    else:
        forget = applied.forget
        affected = np.unique(inner.shard_of(forget.users, forget.items, forget.n_items)).tolist()
    inner.retrain_shards(applied.retain, affected)
    return Unlearned.wrap(model, applied.items)
