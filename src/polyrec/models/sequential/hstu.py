"""HSTU: Hierarchical Sequential Transduction Units.

Zhai, Liao, Liu, Wang, Li, Cao, Gao, Gong, Gu, He, Lu, Shi, "Actions Speak Louder than Words:
Trillion-Parameter Sequential Transducers for Generative Recommendations", ICML 2024
(Section 3.1, equations 1-3), reference code facebookresearch/generative-recommenders.

Each layer, on the normalised input ``X`` (``(B, n, dim)``):

- ``U(X), V(X), Q(X), K(X) = Split(phi1(f1(X)))``: one linear map ``f1`` and SiLU ``phi1``;
- ``A(X) V(X) = phi2(Q(X) K(X)^T + rab^{p,t}) V(X)``: *pointwise* aggregated attention, SiLU
  ``phi2`` instead of a softmax, divided by the sequence length ``n`` (``max_len``, as the
  reference code) and restricted to non-padding keys ``s <= t`` (causal);
- ``Y(X) = f2(Norm(A(X) V(X)) ⊙ U(X))``, layer norm then gating by ``U``, dropout, and the
  residual ``X + Y``.

``rab^{p,t}`` is a learned relative attention bias: one weight per relative position
``s - t`` plus, when the training data has timestamps, one per bucket
``floor(log(max(|t_t - t_s|, 1)) / 0.301)`` of the time gap between query and key (the
reference code's log buckets; gaps measured from the query's own event, which keeps the model
causal). Inputs are ``sqrt(dim)``-scaled item embeddings plus learned positions (dropout);
outputs pass a final layer norm and score items with the input embeddings, the same head as
:mod:`polyrec.models.sequential.sasrec`, so that the two compare block for block. Trained at
every position with softmax cross-entropy over all items (``ce``) or the reference code's sampled
softmax over cosine logits (``sampled_softmax``, see
:class:`~polyrec.models.sequential.NextItemHeadConfig`). :func:`hstu_attention` is the
plain-PyTorch form of the attention (the reference code also has Triton kernels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sequences import PAD, iter_batches, next_item_examples
from polyrec.models.base import ModelConfig
from polyrec.models.sequential import (
    NextItemHeadConfig,
    SequentialRecommender,
    attention_mask,
    init_weights,
    item_scores,
    item_vectors,
    next_item_loss,
    positions,
    uniform_negatives,
)

_LOG_BASE = 0.301  # time gaps are bucketed by log(gap) / 0.301, i.e. about log2 steps


class HSTUConfig(NextItemHeadConfig):
    """HSTU options (on top of the sequential and training options); ``time_buckets`` only
    matters when the training data has timestamps."""

    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    qk_dim: int = Field(32, ge=1)
    v_dim: int = Field(32, ge=1)
    time_buckets: int = Field(128, ge=1)


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rab: torch.Tensor,
    mask: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """``(SiLU(q k^T + rab) / n ⊙ mask) v``: q, k ``(B, H, L, d_qk)``, v ``(B, H, L, d_v)``,
    ``rab`` broadcastable to ``(B, H, L, L)``, ``mask`` bool (True = query may use key)."""
    weights = F.silu(q @ k.transpose(-1, -2) + rab) / n
    return (weights * mask) @ v


def time_buckets(times: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """``(B, L, L)`` bucket of the gap between query and key timestamps:
    ``floor(log(max(|t_t - t_s|, 1)) / 0.301)``, at most ``n_buckets``."""
    gap = (times[:, :, None] - times[:, None, :]).abs().clamp(min=1.0)
    return (gap.log() / _LOG_BASE).long().clamp(max=n_buckets)


class RelativeBias(torch.nn.Module):
    """``rab^{p,t}``: a learned bias per relative position and (optionally) per time bucket."""

    def __init__(self, max_len: int, n_buckets: int | None) -> None:
        super().__init__()
        self.max_len = max_len
        self.position = torch.nn.Parameter(torch.empty(2 * max_len - 1).normal_(std=0.02))
        self.time = (
            None
            if n_buckets is None
            else torch.nn.Parameter(torch.empty(n_buckets + 1).normal_(std=0.02))
        )

    def forward(self, width: int, buckets: torch.Tensor | None) -> torch.Tensor:
        """``(1 or B, 1, L, L)`` bias for a window of ``width`` columns."""
        idx = torch.arange(width, device=self.position.device)
        rab = self.position[idx[None, :] - idx[:, None] + self.max_len - 1][None, None]
        if self.time is not None and buckets is not None:
            rab = rab + self.time[buckets][:, None]
        return rab


class HSTULayer(torch.nn.Module):
    """One sequential transduction unit (equations 1-3 of the paper) with its residual."""

    def __init__(self, cfg: HSTUConfig, with_time: bool) -> None:
        super().__init__()
        self.heads, self.qk_dim, self.v_dim, self.n = cfg.heads, cfg.qk_dim, cfg.v_dim, cfg.max_len
        self.norm_in = torch.nn.LayerNorm(cfg.dim)
        self.f1 = torch.nn.Linear(cfg.dim, cfg.heads * (2 * cfg.v_dim + 2 * cfg.qk_dim))
        self.rab = RelativeBias(cfg.max_len, cfg.time_buckets if with_time else None)
        self.norm_attn = torch.nn.LayerNorm(cfg.heads * cfg.v_dim)
        self.f2 = torch.nn.Linear(cfg.heads * cfg.v_dim, cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, buckets: torch.Tensor | None
    ) -> torch.Tensor:
        """``x`` ``(B, L, dim)``, ``mask`` from :func:`attention_mask`, ``buckets`` from
        :func:`time_buckets` (or ``None``)."""
        b, n, _ = x.shape
        hv, hqk = self.heads * self.v_dim, self.heads * self.qk_dim
        u, v, q, k = F.silu(self.f1(self.norm_in(x))).split([hv, hv, hqk, hqk], dim=-1)
        q, k = (t.view(b, n, self.heads, self.qk_dim).transpose(1, 2) for t in (q, k))
        v = v.view(b, n, self.heads, self.v_dim).transpose(1, 2)
        av = hstu_attention(q, k, v, self.rab(n, buckets), mask, self.n)
        av = av.transpose(1, 2).reshape(b, n, hv)
        return x + self.f2(self.dropout(self.norm_attn(av) * u))


class _HSTU(torch.nn.Module):
    """Scaled item embeddings plus positions, HSTU layers, final norm; tied item scores."""

    def __init__(self, n_items: int, cfg: HSTUConfig, with_time: bool) -> None:
        super().__init__()
        self.max_len, self.scale = cfg.max_len, math.sqrt(cfg.dim)
        self.loss, self.temperature = cfg.loss, cfg.temperature
        self.n_buckets = cfg.time_buckets if with_time else None
        self.item = torch.nn.Embedding(n_items + 1, cfg.dim, padding_idx=PAD)
        self.position = torch.nn.Embedding(cfg.max_len, cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        self.layers = torch.nn.ModuleList(HSTULayer(cfg, with_time) for _ in range(cfg.blocks))
        self.norm = torch.nn.LayerNorm(cfg.dim)
        init_weights(self)

    def encode(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, dim)`` states of left-padded token rows ``(B, L)`` (timestamps optional)."""
        pos = positions(items.shape[1], self.max_len, items.device)
        x = self.dropout(self.item(items) * self.scale + self.position(pos))
        mask = attention_mask(items, causal=True)
        buckets = None
        if self.n_buckets is not None and times is not None:
            buckets = time_buckets(times, self.n_buckets)
        for layer in self.layers:
            x = layer(x, mask, buckets)
        return self.norm(x)

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """Scores ``(..., n_items)`` of every item."""
        return item_scores(states, self.item.weight[1:], cosine=self.loss == "sampled_softmax")

    def forward(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        times: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over the non-padding targets (``negatives``: ``(N, m)`` tokens, one row
        per non-padding target, for ``sampled_softmax``)."""
        keep = targets != PAD
        return next_item_loss(
            self.encode(inputs, times)[keep],
            targets[keep],
            self.item.weight[1:],
            loss=self.loss,
            temperature=self.temperature,
            negatives=negatives,
        )


class HSTU(SequentialRecommender):
    """HSTU encoder trained for the next item at every position."""

    name = "hstu"
    Config: ClassVar[type[ModelConfig]] = HSTUConfig
    config: HSTUConfig
    uses_time = True

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _HSTU(dims["n_items"], self.config, with_time=bool(dims["time"]))

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.config
        examples = next_item_examples(train, cfg.max_len, times=self._with_time())
        examples.pop("users")
        for b in iter_batches(examples, cfg.batch_size, rng):
            batch = {key: torch.from_numpy(val) for key, val in b.items()}
            if cfg.loss == "sampled_softmax":
                negatives = uniform_negatives(b["targets"], train.n_items, cfg.negatives, rng)
                batch["negatives"] = torch.from_numpy(negatives)
            yield batch

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(
            batch["inputs"], batch["targets"], batch.get("times"), batch.get("negatives")
        )

    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        net = cast(_HSTU, self.module)
        return net.scores(net.encode(items, times)[:, -1])

    def _item_embeddings(self) -> torch.Tensor:
        """The vectors scores are inner products with (unit length for a cosine model)."""
        table = cast(_HSTU, self.module).item.weight[1:].detach().cpu()
        return item_vectors(table, cosine=self.config.loss == "sampled_softmax")
