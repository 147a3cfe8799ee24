"""ALS: implicit-feedback matrix factorisation of Hu, Koren & Volinsky, "Collaborative Filtering
for Implicit Feedback Datasets", ICDM 2008, trained by the ``implicit`` library (0.7; conjugate
gradient solver of Takács, Pilászy & Tikk, RecSys 2011).

Every observed user-item pair has preference 1 and confidence ``1 + alpha`` (the paper's
``c_ui = 1 + alpha r_ui`` on a binary matrix); unobserved pairs have preference 0 and
confidence 1. The loss is ``sum_ui c_ui (p_ui - x_u . y_i)^2 + regularization (||X||^2 +
||Y||^2)``. ``implicit`` takes the confidence itself (``alpha * r_ui``), so it is passed
``1 + alpha``: its own ``alpha=1`` would give observed pairs the weight of unobserved ones, an
unweighted factorisation of the 0/1 matrix. Scores are
``x_u . y_i``, computed here with torch so that ranking goes through the shared masked top-k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import Field
from threadpoolctl import threadpool_limits

from polyrec.data.dataset import Dataset
from polyrec.models.base import ModelConfig, Recommender


class ALSConfig(ModelConfig):
    """Options passed to ``implicit.cpu.als.AlternatingLeastSquares`` (``seed`` seeds it)."""

    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0.0)
    alpha: float = Field(40.0, ge=0.0, description="confidence 1 + alpha on observed pairs")
    iterations: int = Field(15, ge=1)
    use_native: bool = True
    use_cg: bool = True
    num_threads: int = Field(0, ge=0, description="0 = all cores")


class ALS(Recommender):
    """Weighted matrix factorisation for implicit feedback, fitted by ``implicit``."""

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        c = self.config
        # implicit solves many small systems in its own threads; a multi-threaded BLAS under
        # it oversubscribes the cores, so (as implicit advises) BLAS gets one thread meanwhile.
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=1.0 + c.alpha,
                dtype=np.float32,
                use_native=c.use_native,
                use_cg=c.use_cg,
                iterations=c.iterations,
                num_threads=c.num_threads,
                random_state=c.seed,
            )
            model.fit(train.binary_csr, show_progress=False)
        self.user_factors = torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32))
        self.item_factors = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))

    def _user_factors(self, users: np.ndarray) -> torch.Tensor:
        return self.user_factors[torch.from_numpy(users)]

    def _item_factors(self) -> torch.Tensor:
        return self.item_factors

    def _get_state(self) -> dict[str, Any]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
