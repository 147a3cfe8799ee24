"""BERT4Rec: bidirectional transformer trained with the cloze task.

Sun, Liu, Wu, Pei, Lin, Ou, Jiang, "BERT4Rec: Sequential Recommendation with Bidirectional
Encoder Representations from Transformer", CIKM 2019 (Section 3); full-softmax training as in
Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?",
RecSys 2023.

- Tokens: ``PAD = 0``, items ``1..n_items``, ``[mask] = n_items + 1``.
- Embedding: ``h^0_t = v_t + p_t`` (learned positions, counted from the end), layer norm,
  dropout.
- ``blocks`` transformer layers (post-norm, as BERT): ``A = LN(H + Dropout(MH(H)))``,
  ``H' = LN(A + Dropout(PFFN(A)))`` with ``PFFN(x) = GELU(x W1 + b1) W2 + b2`` (inner size
  ``4 * dim``); attention is bidirectional and never attends padding (dropout on the attention
  weights is ``attention_dropout``, off by default: it costs PyTorch's fused CPU kernel).
- Output: ``P(v) = softmax(LN(GELU(h W^P + b^P)) E^T + b^O)`` over all items, with the input
  item embeddings ``E`` (shared); the layer norm is in the authors' code (BERT's prediction
  transform) though not in the paper's equation 7.
- Cloze training: every non-padding token of the last ``max_len`` training items is replaced by
  ``[mask]`` with probability ``mask_prob`` (a new draw each epoch), and a sequence that drew
  no mask has its last item masked (the paper's last-item samples, Section 3.6, in that case
  only); the loss is the cross-entropy of the hidden items at the masked positions.
- Inference: ``[mask]`` is appended to the history (the window keeps its last ``max_len``
  tokens) and its output scores the next item.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD, histories, iter_batches
from polyrec.models.base import ModelConfig
from polyrec.models.sequential import (
    SelfAttention,
    SequentialConfig,
    SequentialRecommender,
    attention_mask,
    init_weights,
    positions,
)
from polyrec.ranking import inner_products


class BERT4RecConfig(SequentialConfig):
    """BERT4Rec options (on top of the sequential and training options)."""

    blocks: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    mask_prob: float = Field(0.2, gt=0, lt=1)


class _Layer(torch.nn.Module):
    """Post-norm transformer layer with a GELU position-wise feed-forward network."""

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.norm1 = torch.nn.LayerNorm(dim)
        self.ffn = torch.nn.Sequential(
            torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim)
        )
        self.norm2 = torch.nn.LayerNorm(dim)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.norm1(h + self.dropout(self.attention(h, mask)))
        return self.norm2(a + self.dropout(self.ffn(a)))


class _BERT4Rec(torch.nn.Module):
    """Token and position embeddings, bidirectional layers, the tied output projection."""

    def __init__(self, n_items: int, cfg: BERT4RecConfig) -> None:
        super().__init__()
        self.max_len, self.mask_token = cfg.max_len, n_items + 1
        self.token = torch.nn.Embedding(n_items + 2, cfg.dim, padding_idx=PAD)
        self.position = torch.nn.Embedding(cfg.max_len, cfg.dim)
        self.norm = torch.nn.LayerNorm(cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.layers = torch.nn.ModuleList(
            _Layer(cfg.dim, cfg.heads, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.blocks)
        )
        self.project = torch.nn.Linear(cfg.dim, cfg.dim)
        self.project_norm = torch.nn.LayerNorm(cfg.dim)
        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        init_weights(self)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L, dim)`` states of left-padded token rows ``(B, L)``."""
        pos = positions(tokens.shape[1], self.max_len, tokens.device)
        h = self.dropout(self.norm(self.token(tokens) + self.position(pos)))
        mask = attention_mask(tokens, causal=False)
        for layer in self.layers:
            h = layer(h, mask)
        return h

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """``LN(GELU(h W^P + b^P)) E^T + b^O`` over the items (not padding or [mask])."""
        items = self.token.weight[1 : self.mask_token]
        hidden = self.project_norm(F.gelu(self.project(states)))
        return inner_products(hidden, items) + self.item_bias

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, n_items)`` at the N masked positions (``targets != PAD``)."""
        return self.scores(self.encode(tokens)[targets != PAD])


class BERT4Rec(SequentialRecommender):
    """BERT4Rec with cloze masking and full softmax cross-entropy."""

    name = "bert4rec"
    Config: ClassVar[type[ModelConfig]] = BERT4RecConfig
    config: BERT4RecConfig

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _BERT4Rec(dims["n_items"], self.config)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        tokens, _ = histories(train, self.config.max_len)
        examples = {"items": tokens[tokens[:, -1] != PAD]}
        mask_token = train.n_items + 1
        for b in iter_batches(examples, self.config.batch_size, rng, trim_by="items"):
            yield {
                key: torch.from_numpy(val)
                for key, val in cloze(b["items"], self.config.mask_prob, mask_token, rng).items()
            }

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = batch["targets"]
        scores = self.train_module(batch["tokens"], targets)
        return F.cross_entropy(scores, targets[targets != PAD] - 1)

    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        net = cast(_BERT4Rec, self.module)
        mask = torch.full((len(items), 1), net.mask_token, dtype=items.dtype, device=items.device)
        tokens = torch.cat([items, mask], dim=1)[:, -self.config.max_len :]
        return net.scores(net.encode(tokens)[:, -1])

    def _item_embeddings(self) -> torch.Tensor:
        net = cast(_BERT4Rec, self.module)
        return net.token.weight[1 : net.mask_token].detach().cpu()


def cloze(
    items: np.ndarray, mask_prob: float, mask_token: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Cloze inputs: each non-padding token becomes ``mask_token`` with probability
    ``mask_prob``, and a row that drew none has its last token masked (left-padded rows end in
    an item), so every row and batch has a target; ``targets`` holds the hidden token there
    and ``PAD`` elsewhere."""
    masked = (rng.random(items.shape) < mask_prob) & (items != PAD)
    masked[~masked.any(1), -1] = True
    return {
        "tokens": np.where(masked, mask_token, items),
        "targets": np.where(masked, items, PAD),
    }
