"""The one training loop of every PyTorch model in polyrec.

:class:`Trainer` fits a :class:`~polyrec.models.torch_base.TorchRecommender`: it builds the
module, runs epochs over the model's batches with an optimiser (Adam by default), records
per-epoch loss and wall time, validates every ``eval_every`` epochs with the shared full-ranking
evaluator (:func:`polyrec.eval.evaluate`, training items masked), stops early after ``patience``
validations without improvement of the configured metric and restores the best weights (kept
in memory). Randomness comes from the model's seed only: ``torch.manual_seed`` (set by
``Recommender.fit``) for initialisation and one ``numpy.random.Generator`` for the batches.
Under ``torchrun`` the same loop runs data-parallel (see :mod:`polyrec.train.distributed`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.train import distributed

if TYPE_CHECKING:
    from polyrec.data.dataset import Dataset
    from polyrec.models.torch_base import TorchConfig, TorchRecommender

log = logging.getLogger(__name__)


def validate(
    model: TorchRecommender, train: Dataset, valid: Dataset, ks: tuple[int, ...]
) -> dict[str, float]:
    """Validation metrics (lower-case ``name@k``) by the shared evaluator; train items are
    masked when the model's protocol masks history (:attr:`Recommender.mask_history_in_eval`)."""
    exclude = [train.binary_csr] if model.mask_history_in_eval else []
    result = evaluate(model, valid, exclude=exclude, ks=ks, beyond=False)
    return {key: float(val) for key, val in result.summary.items()}


def resolve_device(name: str) -> torch.device:
    """The configured device; plain ``cuda`` means this process's GPU under torchrun."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PolyrecError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", distributed.local_rank())
    return device


class Trainer:
    """Fits a :class:`TorchRecommender` in place; ``history`` holds one dict per epoch:
    ``epoch``, ``loss`` (mean batch loss), ``seconds`` (training wall time) and, on validation
    epochs, ``valid`` (metrics) and ``eval_seconds``."""

    def __init__(self, model: TorchRecommender) -> None:
        self.model = model
        self.config: TorchConfig = model.config
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.stop_reason = ""

    def fit(self, train: Dataset, valid: Dataset | None = None) -> None:
        """Train ``self.model`` on ``train``; validate / early-stop on ``valid`` if given."""
        cfg, model = self.config, self.model
        device = resolve_device(cfg.device)
        is_distributed = distributed.init_from_env(device)
        model.dims = model._dims(train)
        model.module = model._build(model.dims).to(device)
        model.train_module = (
            distributed.wrap(model.module, device) if is_distributed else model.module
        )
        optimizer = make_optimizer(cfg, model.module, device)
        rng = np.random.default_rng(cfg.seed)
        stopper = None
        if valid is not None and cfg.early_stopping is not None:
            stopper = _EarlyStopping(cfg.early_stopping, cfg.patience)
        best_state: dict[str, torch.Tensor] | None = None
        main = distributed.is_main_process()
        self.stop_reason = f"{cfg.epochs} epochs"
        training_seconds = 0.0
        try:
            with _progress(cfg.progress and main, model.name) as (bar, epochs_task, batches_task):
                bar.update(epochs_task, total=cfg.epochs)
                for epoch in range(1, cfg.epochs + 1):
                    entry = self._epoch(epoch, train, rng, optimizer, device, bar, batches_task)
                    improved = stop = False
                    if valid is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                        entry.update(self._validate(train, valid))
                        if stopper is not None:
                            improved, stop = self._decide(entry, stopper)
                    if improved:
                        self.best_epoch, best_state = epoch, _clone(model.module.state_dict())
                    if main:
                        self._callbacks(entry)
                    self.history.append(entry)
                    status = _status(entry, cfg.early_stopping)
                    bar.update(epochs_task, advance=1, status=status)
                    if main:
                        log.info("%s %s", model.name, status)
                    training_seconds += entry["seconds"]
                    if stop:
                        self.stop_reason = f"early stopping after epoch {epoch}"
                        break
                    # every rank measures its own time: all follow rank 0's clock
                    if cfg.max_seconds is not None and distributed.broadcast_from_main(
                        training_seconds > cfg.max_seconds
                    ):
                        self.stop_reason = f"max_seconds ({cfg.max_seconds:g}) after epoch {epoch}"
                        break
        finally:
            model.train_module = model.module
        if best_state is not None:
            model.module.load_state_dict(best_state)
        model.module.eval()

    def _epoch(
        self,
        epoch: int,
        train: Dataset,
        rng: np.random.Generator,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        bar: Progress,
        task: TaskID,
    ) -> dict[str, Any]:
        model = self.model
        model.module.train()
        bar.reset(task, total=None, description=f"epoch {epoch}")
        start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)
        n_batches = 0
        for batch in distributed.shard(model._batches(train, rng)):
            loss = model._loss({k: v.to(device, non_blocking=True) for k, v in batch.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            n_batches += 1
            bar.advance(task)
        if n_batches == 0:
            raise PolyrecError(
                f"{model.name}: no training batch in epoch {epoch} "
                f"(batch_size {self.config.batch_size} x {distributed.world_size()} process(es) "
                "exceeds the training data)"
            )
        loss_value = float(distributed.mean_over_ranks(total / n_batches))
        if not math.isfinite(loss_value):
            raise PolyrecError(
                f"{model.name}: training loss is {loss_value} at epoch {epoch}; lower lr"
            )
        return {"epoch": epoch, "loss": loss_value, "seconds": time.perf_counter() - start}

    def _callbacks(self, entry: dict[str, Any]) -> None:
        self.model.module.eval()
        for callback in self.model.epoch_callbacks:
            extra = callback(entry)
            if extra:
                entry.update(extra)

    def _validate(self, train: Dataset, valid: Dataset) -> dict[str, Any]:
        """Metrics on rank 0 (other ranks get ``{}``: they only need the stop decision)."""
        if not distributed.is_main_process():
            return {}
        self.model.module.eval()
        start = time.perf_counter()
        metrics = validate(self.model, train, valid, _eval_ks(self.config.early_stopping))
        return {"valid": metrics, "eval_seconds": time.perf_counter() - start}

    def _decide(self, entry: dict[str, Any], stopper: _EarlyStopping) -> tuple[bool, bool]:
        """(improved, stop), decided on rank 0 and shared with every rank."""
        decision = (False, False)
        if distributed.is_main_process():
            metrics = entry["valid"]
            if stopper.metric not in metrics:
                raise PolyrecError(
                    f"early_stopping metric {stopper.metric!r} is not a validation metric "
                    f"(available: {', '.join(sorted(metrics))})"
                )
            improved = stopper.update(metrics[stopper.metric])
            decision = (improved, stopper.stop)
        return distributed.broadcast_from_main(decision)


class _EarlyStopping:
    """Higher ``metric`` is better; ``stop`` after ``patience`` validations without a strict
    improvement."""

    def __init__(self, metric: str, patience: int) -> None:
        self.metric, self.patience = metric, patience
        self.best = -math.inf
        self.waited = 0

    def update(self, score: float) -> bool:
        if score > self.best:
            self.best, self.waited = score, 0
            return True
        self.waited += 1
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= self.patience


def make_optimizer(
    cfg: TorchConfig, module: torch.nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    """The configured optimiser; the fused kernels on CPU/CUDA (about 3x faster Adam steps)."""
    params: Iterable[torch.nn.Parameter] = module.parameters()
    fused = True if device.type in ("cpu", "cuda") else None
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "fused": fused}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **kwargs)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    return torch.optim.SGD(params, **kwargs)


def _eval_ks(metric: str | None) -> tuple[int, ...]:
    """Cut-offs to validate at: 10, 20 and the early-stopping metric's K."""
    ks = {10, 20}
    if metric is not None and "@" in metric:
        ks.add(int(metric.partition("@")[2]))
    return tuple(sorted(ks))


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _status(entry: dict[str, Any], metric: str | None) -> str:
    text = f"epoch {entry['epoch']} loss {entry['loss']:.4f} ({entry['seconds']:.1f}s)"
    if metric in entry.get("valid", {}):
        text += f" {metric} {entry['valid'][metric]:.4f}"
    return text


@contextmanager
def _progress(show: bool, name: str) -> Iterator[tuple[Progress, TaskID, TaskID]]:
    """A rich progress display (epochs and batches); silent unless ``show`` and a terminal."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not (show and console.is_terminal),
    )
    with bar:
        epochs = bar.add_task(name, status="")
        batches = bar.add_task("epoch", total=None, status="")
        yield bar, epochs, batches
