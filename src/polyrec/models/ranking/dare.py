"""DARE: Decoupled Attention and Representation Embeddings (Feng et al., "Long-Sequence
Recommendation Models Need Decoupled Embeddings", ICLR 2025; code thuml/DARE).

TWIN's two-stage model with two embedding tables: the **attention** tables (item, category;
dimension ``attention_dim`` each) are read only by the search and attention scores, the
**representation** tables only by the attended values and the target in the prediction tower;
within each role target and behaviours share the table. Gradients of the attention path thus
never reach the representation table and vice versa, which the paper shows removes the
interference of one shared table, and ``attention_dim`` can be smaller than the
representation's to make the top-k soft search cheaper. Scores add the time-interval term of
the repository's ``concat`` time mode. See :mod:`polyrec.models.ranking.twostage`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from polyrec.models.ranking.base import CTRRanker, RankerConfig
from polyrec.models.ranking.twostage import TwoStageConfig, TwoStageNet


class DAREConfig(TwoStageConfig):
    """DARE options: per-field dimension and initial scale of the attention embeddings (a
    scale of its own is possible only because the tables are decoupled)."""

    attention_dim: int = Field(16, ge=1)
    attention_std: float = Field(0.05, gt=0)


class DARE(CTRRanker):
    """Two-stage attention with decoupled attention and representation embeddings."""

    name: ClassVar[str] = "dare"
    Config: ClassVar[type[RankerConfig]] = DAREConfig
    config: DAREConfig

    def _build(self, dims: dict[str, int]) -> TwoStageNet:
        return TwoStageNet(
            dims,
            self.config,
            search="consistent",
            decoupled=True,
            attention_dim=self.config.attention_dim,
            attention_std=self.config.attention_std,
        )
