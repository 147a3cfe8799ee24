"""Most-popular baseline: every user gets items ranked by training interaction count."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polyrec.data.dataset import Dataset
from polyrec.models.base import Recommender


class Pop(Recommender):
    """Scores each item by how many training interactions it has (ties: lower index first)."""

    name = "pop"

    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        self.popularity = torch.from_numpy(train.item_popularity.astype(np.float32))

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self.popularity.expand(len(users), -1).clone()

    def _get_state(self) -> dict[str, Any]:
        return {"popularity": self.popularity}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.popularity = state["popularity"]
