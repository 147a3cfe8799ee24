"""Base class of every PyTorch model: the shared :class:`~polyrec.train.trainer.Trainer` does
the training loop, validation, early stopping and DDP; a model writes only its parts.

A subclass sets ``name`` and ``Config`` (a :class:`TorchConfig` subclass) and implements:

- ``_build(dims)``: the ``torch.nn.Module`` for the sizes in ``dims``. Called at fit and again at
  load, so it must not need the training data; ``_dims(train)`` says what goes into ``dims``
  (``n_users`` and ``n_items`` by default; saved with the model);
- ``_batches(train, rng)``: one epoch of training batches, dicts of CPU tensors, with all
  randomness drawn from ``rng`` (a :class:`numpy.random.Generator`);
- ``_loss(batch)``: the scalar loss of a batch (already on the device). It must run the network
  through **one call of** ``self.train_module(...)`` (the module's ``forward``): under torchrun
  that is the DistributedDataParallel wrapper, whose forward call synchronises gradients;
- ``_score(users)``: scores of all items, as every :class:`Recommender`, from ``self.module``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from polyrec.data.dataset import Dataset
from polyrec.models.base import ModelConfig, Recommender
from polyrec.train.trainer import Trainer, validate


class TorchConfig(ModelConfig):
    """Training options shared by every PyTorch model.

    ``batch_size`` is per process: under torchrun with N processes an optimiser step sees
    N x ``batch_size`` examples. ``early_stopping`` names the validation metric (higher is better,
    e.g. ``ndcg@10``) that selects the best epoch when ``fit`` gets a validation set; ``None``
    trains all ``epochs`` and keeps the last weights. ``checkpoint``: a file the training state
    is saved to after every epoch; a fit whose file exists continues from it (the same epochs
    and weights as without the interruption), so more ``epochs`` or ``max_seconds`` extend a
    finished fit.
    """

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    early_stopping: str | None = Field("ndcg@10", pattern=r"^[a-z_]+(@[0-9]+)?$")
    patience: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1)
    # a CPU cannot always run a paper's hundreds of epochs: stop after the epoch that spends it
    max_seconds: float | None = Field(None, gt=0)
    # and resume later: the training state after every epoch (polyrec.train.checkpoint)
    checkpoint: str | None = None
    device: str = "cpu"
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        try:
            torch.device(value)
        except RuntimeError as exc:
            raise ValueError(f"not a torch device: {value!r}") from exc
        return value


class TorchRecommender(Recommender):
    """A :class:`Recommender` trained by the shared :class:`Trainer` (see module docstring).

    After ``fit``: ``module`` is the trained network (best validation epoch if early stopping),
    ``history`` the per-epoch records, ``best_epoch`` the epoch whose weights were kept and
    ``stop_reason`` why training ended and ``optimizer_name`` the optimiser class that trained it
    (``Adam``, or ``RowSparseAdam`` for large embedding tables).

    ``epoch_callbacks``: callables run on the main process after each epoch (and its
    validation) with that epoch's history entry, the module in eval mode; a returned dict is
    merged into the entry (e.g. test metrics of a learning curve, or a checkpoint path).
    """

    Config: ClassVar[type[ModelConfig]] = TorchConfig
    config: TorchConfig
    user_tables: ClassVar[tuple[str, ...]] = ()
    """State-dict entries whose first ``n_users`` rows are per-user parameters (row ``u`` is
    user ``u``'s), for unlearning that resets a forgotten user (:mod:`polyrec.unlearn`)."""

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.module = torch.nn.Module()
        self.train_module: torch.nn.Module = self.module
        self.dims: dict[str, int] = {}
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.stop_reason = ""
        self.optimizer_name = ""
        self.epoch_callbacks: list[Callable[[dict[str, Any]], dict[str, Any] | None]] = []

    @property
    def device(self) -> torch.device:
        """Where the module's parameters live."""
        return next(self.module.parameters()).device

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        trainer = Trainer(self)
        trainer.fit(train, valid)
        self.history, self.best_epoch = trainer.history, trainer.best_epoch
        self.stop_reason = trainer.stop_reason
        self.optimizer_name = trainer.optimizer_name

    def _validation_metrics(
        self, train: Dataset, valid: Dataset, ks: tuple[int, ...]
    ) -> dict[str, float]:
        """What the trainer validates (higher is better for every metric it may early-stop
        on): the shared full-ranking evaluator's metrics, unless a model validates other
        outputs (the unified model's search, rating or explanation tasks)."""
        return validate(self, train, valid, ks)

    def _dims(self, train: Dataset) -> dict[str, int]:
        """Sizes ``_build`` needs, read from the training data and saved with the model."""
        return {"n_users": train.n_users, "n_items": train.n_items}

    @abstractmethod
    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        """The network for ``dims`` (freshly initialised from torch's global seed)."""

    @abstractmethod
    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of training batches (CPU tensors), randomness from ``rng`` only."""

    @abstractmethod
    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of ``batch`` through one ``self.train_module(...)`` call."""

    def clear_score_cache(self) -> None:
        """Forget anything cached from the current weights, after they were changed outside
        ``fit`` (unlearning); models that cache nothing need not override it."""

    def _get_state(self) -> dict[str, Any]:
        return {
            "dims": dict(self.dims),
            "module": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.dims = {k: int(v) for k, v in state["dims"].items()}
        device = torch.device(self.config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")  # a GPU-trained model served on a CPU machine
        self.module = self._build(self.dims)
        self.module.load_state_dict(state["module"])
        self.module.to(device).eval()
        self.train_module = self.module


def triple_batches(
    triples: tuple[np.ndarray, np.ndarray, np.ndarray], batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive batches ``{"users", "pos", "neg"}`` of BPR triples, as tensors."""
    users, pos, neg = (torch.from_numpy(a) for a in triples)
    for start in range(0, len(users), batch_size):
        stop = start + batch_size
        yield {"users": users[start:stop], "pos": pos[start:stop], "neg": neg[start:stop]}
