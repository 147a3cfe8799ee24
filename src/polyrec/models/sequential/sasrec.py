"""SASRec: self-attentive sequential recommendation.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (Section III).

- Embedding: ``E_t = M_{s_t} + P_t`` (item embedding plus a learned position embedding,
  positions counted from the end of the left-padded window), dropout.
- ``blocks`` self-attention blocks, each ``x + Dropout(SA(LN(x)))`` then
  ``x + Dropout(FFN(LN(x)))`` with ``FFN(x) = ReLU(x W1 + b1) W2 + b2``; attention is causal
  (position ``t`` sees ``s <= t`` only) and never attends padding; a final layer norm. Dropout
  on the attention weights (``attention_dropout``) is off by default: it costs PyTorch's fused
  CPU attention kernel.
- Prediction: ``r_{i,t} = F_t . M_i`` with the input item embeddings (shared, as in the paper).
- Loss at every non-padding position ``t`` with next item ``o_t``:
  ``bce`` (the paper's): ``-log sigma(r_{o_t,t}) - log(1 - sigma(r_{j,t}))`` with one negative
  ``j`` drawn uniformly among items outside the user's training history;
  ``ce``: softmax cross-entropy over all items, ``-log softmax(r_{., t})_{o_t}``, the loss of
  the recent full-ranking results (e.g. Klenitskiy & Vasilev, "Turning Dross Into Gold Loss:
  is BERT4Rec really better than SASRec?", RecSys 2023);
  ``sampled_softmax``: the HSTU reference code's SASRec baseline (cosine logits over
  ``temperature``, ``negatives`` uniform items per position; see
  :class:`~polyrec.models.sequential.NextItemHeadConfig`), scored by cosine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sampling import UniformNegativeSampler
from polyrec.data.sequences import PAD, iter_batches, next_item_examples
from polyrec.models.base import ModelConfig
from polyrec.models.sequential import (
    NextItemHeadConfig,
    SelfAttention,
    SequentialRecommender,
    attention_mask,
    init_weights,
    item_scores,
    item_vectors,
    next_item_loss,
    positions,
    uniform_negatives,
)


class SASRecConfig(NextItemHeadConfig):
    """SASRec options (on top of the sequential and training options)."""

    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    loss: Literal["ce", "bce", "sampled_softmax"] = "ce"


class _Block(torch.nn.Module):
    """Pre-norm self-attention block with a point-wise feed-forward network."""

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.ffn = torch.nn.Sequential(
            torch.nn.Linear(dim, dim),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(dim, dim),
        )
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class _SASRec(torch.nn.Module):
    """Token embeddings (``PAD = 0``), positions, causal blocks; scores by the item table."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.max_len, self.loss, self.temperature = cfg.max_len, cfg.loss, cfg.temperature
        self.item = torch.nn.Embedding(n_items + 1, cfg.dim, padding_idx=PAD)
        self.position = torch.nn.Embedding(cfg.max_len, cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.blocks = torch.nn.ModuleList(
            _Block(cfg.dim, cfg.heads, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.blocks)
        )
        self.norm = torch.nn.LayerNorm(cfg.dim)
        init_weights(self)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """``F``: ``(B, L, dim)`` states of left-padded token rows ``(B, L)``."""
        pos = positions(items.shape[1], self.max_len, items.device)
        x = self.dropout(self.item(items) + self.position(pos))
        mask = attention_mask(items, causal=True)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """``r_{i,t}`` for all items: ``(..., n_items)``."""
        return item_scores(states, self.item.weight[1:], cosine=self.loss == "sampled_softmax")

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss over the non-padding targets; ``negatives`` are ``(B, L)`` tokens for
        ``bce``, ``(N, m)`` tokens (one row per non-padding target) for ``sampled_softmax``."""
        keep = targets != PAD
        states, kept = self.encode(inputs)[keep], targets[keep]
        if self.loss != "bce":
            return next_item_loss(
                states,
                kept,
                self.item.weight[1:],
                loss=self.loss,
                temperature=self.temperature,
                negatives=negatives,
            )
        assert negatives is not None
        pos = (states * self.item(kept)).sum(-1)
        neg = (states * self.item(negatives[keep])).sum(-1)
        return (F.softplus(-pos) + F.softplus(neg)).mean()


class SASRec(SequentialRecommender):
    """SASRec with the paper's BCE loss or full softmax cross-entropy (``loss``)."""

    name = "sasrec"
    Config: ClassVar[type[ModelConfig]] = SASRecConfig
    config: SASRecConfig

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _SASRec(dims["n_items"], self.config)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.config
        examples = next_item_examples(train, cfg.max_len)
        sampler = UniformNegativeSampler(train.binary_csr) if cfg.loss == "bce" else None
        for b in iter_batches(examples, cfg.batch_size, rng):
            batch = {
                "inputs": torch.from_numpy(b["inputs"]),
                "targets": torch.from_numpy(b["targets"]),
            }
            if sampler is not None:
                users = np.repeat(b["users"], b["inputs"].shape[1])
                negatives = sampler.sample(users, rng=rng).reshape(b["inputs"].shape) + 1
                batch["negatives"] = torch.from_numpy(negatives)
            elif cfg.loss == "sampled_softmax":
                negatives = uniform_negatives(b["targets"], train.n_items, cfg.negatives, rng)
                batch["negatives"] = torch.from_numpy(negatives)
            yield batch

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(batch["inputs"], batch["targets"], batch.get("negatives"))

    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        net = cast(_SASRec, self.module)
        return net.scores(net.encode(items)[:, -1])

    def _item_embeddings(self) -> torch.Tensor:
        """The vectors scores are inner products with (unit length for a cosine model)."""
        table = cast(_SASRec, self.module).item.weight[1:].detach().cpu()
        return item_vectors(table, cosine=self.config.loss == "sampled_softmax")
