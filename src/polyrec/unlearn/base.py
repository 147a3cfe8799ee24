"""Shared machinery of the unlearning methods.

- :class:`Unlearned` wraps a model after a request that forgot items: those items score
  ``-inf`` for everyone and as similar items, so they are never recommended or retrieved.
- :func:`rebind` moves a trained model onto the retain set *in place*: the seen-item mask,
  the graph adjacency, feature buffers and the frozen item graph are rebuilt from the retain
  data (so no forgotten interaction or wiped feature row survives in any cache) while the
  learned parameters are kept; a forgotten modality is dropped from models that use one.
- :func:`reset_users` re-draws a forgotten user's own parameters from the initialisation
  distribution.
- :func:`train_steps` runs extra optimisation epochs on a fitted model with its own batches
  and loss (fine-tuning, MMRecUn), optionally until a stopping rule holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.models.base import ModelConfig, Recommender
from polyrec.models.registry import get_model_class
from polyrec.models.torch_base import TorchRecommender
from polyrec.train.trainer import make_optimizer
from polyrec.unlearn.request import AppliedRequest


class UnlearnedConfig(ModelConfig):
    """The wrapped model's registry name and config (JSON), for ``save`` / ``load``."""

    inner: str = ""
    inner_config: str = "{}"
    blocked_items: list[int] = Field(default_factory=list)


class Unlearned(Recommender):
    """A model whose forgotten items are masked out of every score (``-inf``)."""

    name = "unlearned"
    Config: ClassVar[type[ModelConfig]] = UnlearnedConfig
    config: UnlearnedConfig

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.inner: Recommender | None = None

    @classmethod
    def wrap(cls, model: Recommender, blocked: np.ndarray) -> Recommender:
        """``model`` with the items ``blocked`` (internal) masked; returns ``model`` itself
        when nothing is blocked. Wrapping a wrapper merges the two block lists."""
        inner, already = unwrap(model)
        items = np.union1d(already, np.asarray(blocked, np.int64))
        if len(items) == 0:
            return inner
        out = cls(
            inner=inner.name,
            inner_config=json.dumps(inner.config.model_dump()),
            blocked_items=[int(i) for i in items],
        )
        out.inner = inner
        out.user_ids, out.item_ids, out.seen = inner.user_ids, inner.item_ids, inner.seen
        return out

    @property
    def blocked(self) -> np.ndarray:
        """Internal indices of the items that are never scored."""
        return np.asarray(self.config.blocked_items, np.int64)

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        raise PolyrecError("an unlearned model is not fitted directly; unlearn a fitted model")

    def _score(self, users: np.ndarray) -> torch.Tensor:
        assert self.inner is not None
        scores = self.inner._score(users).float().clone()
        scores[:, torch.from_numpy(self.blocked)] = -torch.inf
        return scores

    def _item_embeddings(self) -> torch.Tensor | None:
        assert self.inner is not None
        return self.inner._item_embeddings()

    def _similar(self, items: np.ndarray) -> torch.Tensor:
        assert self.inner is not None
        scores = self.inner._similar(items).float().clone()
        scores[:, torch.from_numpy(self.blocked)] = -torch.inf
        return scores

    def _get_state(self) -> dict[str, Any]:
        assert self.inner is not None and self.inner.seen is not None
        return {"inner": self.inner._get_state(), "inner_seen": self.inner.seen}

    def _set_state(self, state: dict[str, Any]) -> None:
        from polyrec.models.base import sparse_from_state

        inner = get_model_class(self.config.inner)(json.loads(self.config.inner_config))
        inner.user_ids, inner.item_ids = self.user_ids, self.item_ids
        inner.seen = sparse_from_state(state["inner_seen"])
        inner._set_state(state["inner"])
        self.inner = inner


def unwrap(model: Recommender) -> tuple[Recommender, np.ndarray]:
    """(the underlying model, its blocked items)."""
    if isinstance(model, Unlearned):
        assert model.inner is not None
        return model.inner, model.blocked
    return model, np.zeros(0, np.int64)


def rebind(model: Recommender, applied: AppliedRequest) -> None:
    """Point a fitted model at the retain set in place (see module docstring)."""
    retain = applied.retain
    if applied.modality is not None and applied.modality in getattr(model.config, "modalities", ()):
        model.drop_modality(applied.modality)  # type: ignore[attr-defined]
    model.seen = retain.binary_csr
    refresh = getattr(model, "refresh", None)
    if refresh is not None:
        refresh(retain)
    elif isinstance(model, TorchRecommender):
        state = model.module.state_dict()
        model.module = model._build(model.dims).to(model.device)
        model.module.load_state_dict(state)
        model.train_module = model.module
        model.clear_score_cache()


def require_torch(model: Recommender, method: str) -> TorchRecommender:
    """The model as a :class:`TorchRecommender`, or a clear error for ``method``."""
    if not isinstance(model, TorchRecommender):
        raise PolyrecError(
            f"{method} fine-tunes a gradient-trained model; {model.name} is not one "
            "(use method 'retrain')"
        )
    return model


def reset_users(model: TorchRecommender, users: np.ndarray, seed: int = 0) -> None:
    """Re-draw the per-user parameters (:attr:`TorchRecommender.user_tables`) of ``users``
    from the model's initialisation, as a model retrained without them holds them (with the
    batch-wise L2 of BPR models a user without interactions never gets a gradient). The draw
    is independent of the values training started from: those are correlated with the items
    the user trained on (the items moved towards the user's vector), so restoring them would
    keep the user's taste. Models without such tables are unchanged."""
    if len(users) == 0 or not model.user_tables:
        return
    stream = np.random.SeedSequence([model.config.seed, seed, len(users)])
    torch.manual_seed(int(stream.generate_state(1)[0]))
    fresh = model._build(model.dims).state_dict()
    state = model.module.state_dict()  # tensors share storage with the parameters
    rows = torch.from_numpy(np.asarray(users, np.int64))
    with torch.no_grad():
        for name in model.user_tables:
            state[name][rows] = fresh[name][rows].to(state[name].device)
    model.clear_score_cache()


def train_steps(
    model: TorchRecommender,
    retain: Dataset,
    *,
    epochs: int,
    lr: float,
    seed: int,
    retain_weight: float = 1.0,
    extra: Callable[[np.random.Generator], torch.Tensor] | None = None,
    stop: Callable[[], bool] | None = None,
    check_every: int = 1,
) -> int:
    """Up to ``epochs`` epochs of the model's own batches and loss on ``retain`` (weighted by
    ``retain_weight``, plus ``extra`` called once per batch), with the model's configured
    optimiser at ``lr``. ``stop`` is asked every ``check_every`` batches, with the module in
    eval mode and score caches cleared; training ends as soon as it returns True. The number of
    batches run is appended to ``model.history`` (``unlearning_batches``) and returned."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = model.device
    optimizer = make_optimizer(model.config.model_copy(update={"lr": lr}), model.module, device)
    steps = 0
    model.module.train()
    for _ in range(epochs):
        for batch in model._batches(retain, rng):
            loss = retain_weight * model._loss({k: v.to(device) for k, v in batch.items()})
            if extra is not None:
                loss = loss + extra(rng)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if not torch.isfinite(loss):
                raise PolyrecError(
                    f"{model.name}: loss is {float(loss)} while unlearning; lower lr"
                )
            if stop is not None and steps % check_every == 0:
                model.module.eval()
                model.clear_score_cache()
                if stop():
                    model.history.append({"unlearning_batches": steps, "stopped_by_rule": True})
                    return steps
                model.module.train()
    model.module.eval()
    model.clear_score_cache()
    model.history.append({"unlearning_batches": steps, "stopped_by_rule": False})
    return steps
