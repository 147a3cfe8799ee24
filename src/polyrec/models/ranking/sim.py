"""SIM: Search-based Interest Model (Pi et al., "Search-based User Interest Modeling with
Lifelong Sequential Behavior Data for Click-Through Rate Prediction", CIKM 2020).

The GSU cuts the lifelong history to ``top_k`` behaviours, by **hard search** (behaviours of
the target's category; the most recent ``top_k`` of them) or **soft search** (inner product of
a separate GSU embedding table, trained by the paper's auxiliary CTR task on the whole history,
Sec. 3.1). The ESU is target attention over the selected behaviours with a time-interval term
(the paper concatenates time-interval embeddings to behaviours; here the interval enters the
attention score, as in the DARE repository's implementation). See
:mod:`polyrec.models.ranking.twostage`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from polyrec.models.ranking.base import CTRRanker, RankerConfig
from polyrec.models.ranking.twostage import TwoStageConfig, TwoStageNet


class SIMConfig(TwoStageConfig):
    """SIM options: ``mode`` hard (category) or soft (separate embedding) search."""

    mode: Literal["hard", "soft"] = "hard"
    gsu_dim: int = Field(16, ge=1)


class SIM(CTRRanker):
    """SIM with hard or soft search (``mode``)."""

    name: ClassVar[str] = "sim"
    Config: ClassVar[type[RankerConfig]] = SIMConfig
    config: SIMConfig

    def _build(self, dims: dict[str, int]) -> TwoStageNet:
        search = "category" if self.config.mode == "hard" else "separate"
        return TwoStageNet(dims, self.config, search=search, gsu_dim=self.config.gsu_dim)
