"""GRU4Rec: recurrent next-item prediction, trained with cross-entropy over all items.

Hidasi, Karatzoglou, Baltrunas, Tikk, "Session-based Recommendations with Recurrent Neural
Networks", ICLR 2016; Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains for
Session-based Recommendations", CIKM 2018 (cross-entropy over the whole catalogue is the loss
Klenitskiy & Vasilev, RecSys 2023, use for their full-ranking GRU4Rec row).

- Input: the item embedding of each event, dropout.
- ``layers`` stacked GRU layers of ``hidden`` units read the history in time order; the hidden
  state after event ``t`` summarises ``s_1..s_t`` (so the model is causal by construction).
- Output: ``r_{i,t} = h_t . W_i + b_i`` with a separate output item table (the paper's final
  feed-forward layer), softmax cross-entropy against the next item at every position.

Whole user histories form the mini-batch (left-padded windows, realigned internally so that
each row starts at its first real event; padding is never fed to the GRU) instead of the
paper's session-parallel mini-batches: the per-step loss is the same, and it runs as one packed
:class:`torch.nn.GRU` call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD, iter_batches, next_item_examples
from polyrec.models.base import ModelConfig
from polyrec.models.sequential import SequentialConfig, SequentialRecommender, init_weights
from polyrec.ranking import inner_products


class GRU4RecConfig(SequentialConfig):
    """GRU4Rec options (on top of the sequential and training options)."""

    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)


class _GRU4Rec(torch.nn.Module):
    """Item embeddings, a packed multi-layer GRU and the output item table."""

    def __init__(self, n_items: int, cfg: GRU4RecConfig) -> None:
        super().__init__()
        self.item = torch.nn.Embedding(n_items + 1, cfg.dim, padding_idx=PAD)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.gru = torch.nn.GRU(
            cfg.dim,
            cfg.hidden,
            cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.out = torch.nn.Linear(cfg.hidden, n_items)
        init_weights(self.item)
        init_weights(self.out)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """``(B, L, hidden)`` GRU states of left-padded token rows (zeros at padding)."""
        width = items.shape[1]
        lengths = (items != PAD).sum(1).clamp(min=1)
        offset = (width - lengths)[:, None]
        cols = torch.arange(width, device=items.device)[None, :]
        right = items.gather(1, (cols + offset) % width)  # real events first, padding after
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            self.dropout(self.item(right)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        states, _ = self.gru(packed)
        states, _ = torch.nn.utils.rnn.pad_packed_sequence(
            states, batch_first=True, total_length=width
        )
        back = ((cols - offset) % width)[:, :, None].expand(-1, -1, states.shape[2])
        return states.gather(1, back)

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        return inner_products(self.dropout(states), self.out.weight) + self.out.bias

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, n_items)`` at the N non-padding targets."""
        return self.scores(self.encode(inputs)[targets != PAD])


class GRU4Rec(SequentialRecommender):
    """GRU4Rec with softmax cross-entropy over all items."""

    name = "gru4rec"
    Config: ClassVar[type[ModelConfig]] = GRU4RecConfig
    config: GRU4RecConfig

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _GRU4Rec(dims["n_items"], self.config)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        examples = next_item_examples(train, self.config.max_len)
        for b in iter_batches(examples, self.config.batch_size, rng):
            yield {
                "inputs": torch.from_numpy(b["inputs"]),
                "targets": torch.from_numpy(b["targets"]),
            }

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = batch["targets"]
        scores = self.train_module(batch["inputs"], targets)
        return F.cross_entropy(scores, targets[targets != PAD] - 1)

    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        net = cast(_GRU4Rec, self.module)
        return net.scores(net.encode(items)[:, -1])

    def _item_embeddings(self) -> torch.Tensor:
        return cast(_GRU4Rec, self.module).out.weight.detach().cpu()
