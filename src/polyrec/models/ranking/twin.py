"""TWIN: TWo-stage Interest Network (Chang et al., "TWIN: TWo-stage Interest Network for
Lifelong User Behavior Modeling in CTR Prediction at Kuaishou", KDD 2023).

TWIN makes the GSU *consistent* with the ESU: both rank behaviours by the same target-attention
score over the same embedding table, so the top-k the search keeps are the behaviours the ESU
would weigh most. As in the DARE repository's TWIN baseline, the score is scaled dot product of
the shared item+category embeddings plus a time-interval term (the production model's
behaviour-feature projections and multi-head split are left out). One table serves attention
and representation, which is exactly what DARE decouples. See
:mod:`polyrec.models.ranking.twostage`.
"""

from __future__ import annotations

from typing import ClassVar

from polyrec.models.ranking.base import CTRRanker, RankerConfig
from polyrec.models.ranking.twostage import TwoStageConfig, TwoStageNet


class TWIN(CTRRanker):
    """Consistency-preserving two-stage attention with one embedding table."""

    name: ClassVar[str] = "twin"
    Config: ClassVar[type[RankerConfig]] = TwoStageConfig
    config: TwoStageConfig

    def _build(self, dims: dict[str, int]) -> TwoStageNet:
        return TwoStageNet(dims, self.config, search="consistent")
