"""No-history CTR baseline: the prediction tower on the target item's embedding alone.

It is the lower bound the history models of DIN (Zhou et al., KDD 2018), SIM (Pi et al.,
CIKM 2020), TWIN (Chang et al., KDD 2023) and DARE (Feng et al., ICLR 2025) improve on: item
and category popularity are all it can learn.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from polyrec.models.ranking.base import (
    Batch,
    CTRRanker,
    FieldEmbedding,
    RankerConfig,
    RankingNet,
    mlp,
)


class NoHistoryNet(RankingNet):
    """MLP over the concatenated target item and category embeddings."""

    def __init__(self, dims: dict[str, int], cfg: RankerConfig):
        super().__init__()
        self.embed = FieldEmbedding(
            dims["n_items"], dims["n_categories"], cfg.item_dim, cfg.category_dim, cfg.embedding_std
        )
        self.tower = mlp(self.embed.dim, cfg.mlp)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.tower(self.embed(batch["item"], batch["category"])).squeeze(-1)


class NoHistory(CTRRanker):
    """Target-only CTR model (ignores the behaviour history)."""

    name: ClassVar[str] = "nohist"

    def _build(self, dims: dict[str, int]) -> NoHistoryNet:
        return NoHistoryNet(dims, self.config)
