"""DIN: Deep Interest Network (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018).

A local activation unit scores each behaviour against the target from
``[e_target, e_behaviour, e_target - e_behaviour, e_target * e_behaviour]`` with a small MLP
(36 hidden units, PReLU, as in the DARE repository's DIN baseline), and the user interest is
the sum of behaviour embeddings weighted by those scores. As in the paper the weights are not
softmax-normalised (Sec. 4.3: keeping the intensity of the user's interests); padding gets
weight 0. The prediction tower sees ``[target, interest, target * interest]``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from polyrec.models.ranking.base import (
    Batch,
    CTRRanker,
    FieldEmbedding,
    RankerConfig,
    RankingNet,
    mlp,
    weighted_sum,
)


class DINConfig(RankerConfig):
    """DIN options: width of the activation unit's hidden layer."""

    attention_hidden: int = Field(36, ge=1)


class DINNet(RankingNet):
    """Embeddings, the activation unit and the prediction tower."""

    def __init__(self, dims: dict[str, int], cfg: DINConfig):
        super().__init__()
        self.embed = FieldEmbedding(
            dims["n_items"], dims["n_categories"], cfg.item_dim, cfg.category_dim, cfg.embedding_std
        )
        d = self.embed.dim
        self.activation = nn.Sequential(
            nn.Linear(4 * d, cfg.attention_hidden), nn.PReLU(), nn.Linear(cfg.attention_hidden, 1)
        )
        self.tower = mlp(3 * d, cfg.mlp)

    def attention_weights(self, batch: Batch) -> torch.Tensor:
        """Unnormalised behaviour weights (B, L), zero on padding."""
        q = self.embed(batch["item"], batch["category"])
        k = self.embed(batch["hist_item"], batch["hist_cat"])
        q = q[:, None, :].expand(-1, k.shape[1], -1)
        k = k.expand(q.shape[0], -1, -1)
        w = self.activation(torch.cat([q, k, q - k, q * k], dim=-1)).squeeze(-1)
        return w * batch["hist_mask"]

    def forward(self, batch: Batch) -> torch.Tensor:
        target = self.embed(batch["item"], batch["category"])
        hist = self.embed(batch["hist_item"], batch["hist_cat"])
        interest = weighted_sum(self.attention_weights(batch), hist)
        return self.tower(torch.cat([target, interest, target * interest], dim=-1)).squeeze(-1)


class DIN(CTRRanker):
    """Deep Interest Network over the full (``max_len``) history."""

    name: ClassVar[str] = "din"
    Config: ClassVar[type[RankerConfig]] = DINConfig
    config: DINConfig

    def _build(self, dims: dict[str, int]) -> DINNet:
        return DINNet(dims, self.config)
