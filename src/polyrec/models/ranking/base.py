"""Base class of the long-sequence CTR rankers and the layers they share.

A ranker predicts the click probability of (user history, target item) samples built by
:func:`polyrec.data.ctr.build_ctr_samples`. A subclass sets ``name`` and ``Config`` and
implements ``_build(dims)``, returning a :class:`RankingNet` whose ``forward(batch)`` gives one
logit per sample (``batch`` as :meth:`polyrec.data.ctr.CTRSamples.batch` makes it). History
tensors may have batch size 1 and are then shared by every target in the batch (one user
scored against many candidates), which the serving path and the search-time benchmark use.

:class:`CTRRanker` trains with its own small loop (binary cross-entropy, Adam, one
``numpy.random.Generator`` for the shuffles, early stopping on validation AUC with the best
weights restored) and scores with :meth:`CTRRanker.predict_proba`. It keeps the external id and
category of each of its items (:attr:`CTRRanker.items`, saved beside the weights) so that it can
score items named by external id, as the service's second stage does.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from polyrec.config import StrictModel, build
from polyrec.data.ctr import CTRData, CTRSamples
from polyrec.errors import PolyrecError
from polyrec.eval.ctr_metrics import ctr_metrics
from polyrec.models.registry import load_registered
from polyrec.ranking import inner_products

META_FILE = "ranker.json"
ITEMS_FILE = "ranker_items.parquet"
STATE_FILE = "ranker.pt"

RANKERS: dict[str, str] = {
    "nohist": "polyrec.models.ranking.nohist:NoHistory",
    "din": "polyrec.models.ranking.din:DIN",
    "sim": "polyrec.models.ranking.sim:SIM",
    "twin": "polyrec.models.ranking.twin:TWIN",
    "dare": "polyrec.models.ranking.dare:DARE",
}

Batch = dict[str, torch.Tensor]


def get_ranker_class(name: str) -> type[CTRRanker]:
    """The ranker class registered under ``name`` (case-insensitive)."""
    return load_registered(RANKERS, name, "CTR model")


class RankerConfig(StrictModel):
    """Options shared by every ranker (defaults: the DARE scripts' 16-d embeddings and
    200-80 MLP; a smaller batch and lr than their 2048 / 0.01 suit small data)."""

    item_dim: int = Field(16, ge=1)
    category_dim: int = Field(16, ge=1)
    embedding_std: float = Field(0.05, gt=0)
    mlp: tuple[int, ...] = (200, 80)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    eval_batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    patience: int = Field(2, ge=1)
    seed: int = 0


class RankingNet(nn.Module):
    """A network mapping a batch to logits; ``loss`` is binary cross-entropy (subclasses with
    an auxiliary objective add it there)."""

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean binary cross-entropy of ``forward(batch)`` against ``batch["label"]``."""
        return nn.functional.binary_cross_entropy_with_logits(self(batch), batch["label"])


def init_padded(table: nn.Embedding, std: float) -> None:
    """Normal initial weights of standard deviation ``std``, with row 0 (padding) zero."""
    nn.init.normal_(table.weight, std=std)
    with torch.no_grad():
        table.weight[0].zero_()


class FieldEmbedding(nn.Module):
    """Item and category embeddings concatenated (id 0 = padding, a zero vector)."""

    def __init__(
        self, n_items: int, n_categories: int, item_dim: int, category_dim: int, std: float = 0.05
    ):
        super().__init__()
        self.item = nn.Embedding(n_items, item_dim, padding_idx=0)
        self.category = nn.Embedding(n_categories, category_dim, padding_idx=0)
        for table in (self.item, self.category):
            init_padded(table, std)
        self.dim = item_dim + category_dim

    def forward(self, items: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.item(items), self.category(categories)], dim=-1)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int = 1) -> nn.Sequential:
    """Linear + PReLU layers ending in a linear output (DIN/DARE prediction tower)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.PReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``mask``; an all-padding row gives zeros."""
    weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
    return weights * mask


def batched_dot(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``<q[b], keys[b, j]>`` as (B, L) for ``q`` (B, d) and ``keys`` (B or 1, L, d); a shared
    history (batch 1) is one matrix product, never expanded to B copies."""
    if keys.shape[0] == 1:
        return inner_products(q, keys[0])
    return torch.bmm(keys, q[:, :, None]).squeeze(-1)


def weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``sum_j weights[b, j] * values[b, j]`` as (B, d) for ``weights`` (B, L) and ``values``
    (B or 1, L, d), without expanding a shared history."""
    if values.shape[0] == 1:
        return weights @ values[0]
    return torch.bmm(weights[:, None, :], values).squeeze(1)


def topk_search(
    scores: torch.Tensor, mask: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` highest-scoring real behaviours and which of them are real.

    ``scores`` (B, L), ``mask`` (B or 1, L). Padding never outranks a real behaviour; with
    fewer than ``k`` real ones the rest of the slots point at padding and are marked False.
    """
    k = min(k, scores.shape[-1])
    masked = scores.detach()
    if not bool(mask.all()):  # a full history (the long-sequence case) needs no fill pass
        masked = masked.masked_fill(~mask, -math.inf)
    idx = masked.topk(k, dim=-1).indices
    return idx, mask.expand(scores.shape[0], -1).gather(1, idx)


class CTRRanker(ABC):
    """Base class of every CTR ranker (see module docstring)."""

    name: ClassVar[str] = "ranker"
    Config: ClassVar[type[RankerConfig]] = RankerConfig

    def __init__(self, config: RankerConfig | dict[str, Any] | None = None, **overrides: Any):
        data = config.model_dump() if isinstance(config, RankerConfig) else dict(config or {})
        data.update(overrides)
        self.config = build(self.Config, data, where=f"{self.name} config")
        self.net: RankingNet | None = None
        self.dims: dict[str, int] = {}
        # row i: ranker item i + 1 (0 is padding): external id (str) and category id
        self.items: pd.DataFrame | None = None
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None

    @abstractmethod
    def _build(self, dims: dict[str, int]) -> RankingNet:
        """The network for the vocabulary sizes ``dims`` (see :attr:`CTRData.dims`)."""

    # ------------------------------------------------------------------------------ training
    def fit(self, data: CTRData, *, validate: bool = True) -> Self:
        """Train on ``data.train``; with ``validate`` keep the epoch of best validation AUC."""
        cfg = self.config
        if len(data.train) == 0:
            raise PolyrecError(f"{self.name}: no training samples")
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.dims = dict(data.dims)
        self.items = pd.DataFrame(
            {"item": [str(i) for i in data.item_ids], "category": data.item_category[1:]}
        )
        self.net = self._build(self.dims)
        optimizer = torch.optim.Adam(
            self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.history, self.best_epoch = [], None
        best_auc, best_state, waited = -math.inf, None, 0
        for epoch in range(1, cfg.epochs + 1):
            self.net.train()
            start = time.perf_counter()
            order = rng.permutation(len(data.train))
            total, n_batches = 0.0, 0
            for lo in range(0, len(order), cfg.batch_size):
                loss = self.net.loss(data.train.batch(order[lo : lo + cfg.batch_size]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                n_batches += 1
            seconds = time.perf_counter() - start
            mean_loss = total / n_batches
            if not math.isfinite(mean_loss):
                raise PolyrecError(f"{self.name}: training loss is {mean_loss} at epoch {epoch}")
            entry: dict[str, Any] = {
                "epoch": epoch,
                "loss": mean_loss,
                "seconds": seconds,
                "samples_per_second": len(order) / seconds,
            }
            if validate and len(data.valid):
                entry["valid"] = self.evaluate(data.valid)
                if entry["valid"]["auc"] > best_auc:
                    best_auc, waited = entry["valid"]["auc"], 0
                    self.best_epoch = epoch
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    waited += 1
            self.history.append(entry)
            if waited >= cfg.patience:
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return self

    # ------------------------------------------------------------------------------- scoring
    def _check_fitted(self) -> RankingNet:
        if self.net is None:
            raise PolyrecError(f"{self.name} is not fitted; call fit() or load() first")
        return self.net

    @torch.no_grad()
    def predict_logits(self, batch: Batch) -> torch.Tensor:
        """Logits of one batch (eval mode, no gradients)."""
        net = self._check_fitted()
        net.eval()
        return net(batch)

    def predict_proba(self, samples: CTRSamples) -> np.ndarray:
        """Click probabilities of every sample, float64."""
        out = np.empty(len(samples))
        step = self.config.eval_batch_size
        for lo in range(0, len(samples), step):
            idx = np.arange(lo, min(lo + step, len(samples)))
            out[idx] = torch.sigmoid(self.predict_logits(samples.batch(idx))).double().numpy()
        return out

    def evaluate(self, samples: CTRSamples) -> dict[str, float]:
        """AUC, gAUC and logloss on ``samples``."""
        return ctr_metrics(samples.user, samples.label, self.predict_proba(samples))

    # ----------------------------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> Path:
        """Write ``ranker.json`` (name, config, dims), ``ranker.pt`` (weights) and
        ``ranker_items.parquet`` (:attr:`items`)."""
        net = self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "config": self.config.model_dump(), "dims": self.dims}
        (d / META_FILE).write_text(json.dumps(meta, indent=2))
        torch.save(net.state_dict(), d / STATE_FILE)
        if self.items is not None:
            self.items.to_parquet(d / ITEMS_FILE, index=False)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> CTRRanker:
        """Load a ranker saved by :meth:`save`; works on the base class (dispatches by name)."""
        d = Path(directory)
        if not (d / META_FILE).is_file():
            raise PolyrecError(f"{d} is not a saved CTR ranker ({META_FILE} not found)")
        meta = json.loads((d / META_FILE).read_text())
        klass = get_ranker_class(meta["name"]) if cls is CTRRanker else cls
        model = klass(meta["config"])
        model.dims = {k: int(v) for k, v in meta["dims"].items()}
        model.net = model._build(model.dims)
        model.net.load_state_dict(torch.load(d / STATE_FILE, weights_only=True))
        model.net.eval()
        if (d / ITEMS_FILE).is_file():
            model.items = pd.read_parquet(d / ITEMS_FILE)
        return model
