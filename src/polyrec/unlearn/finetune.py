"""Fine-tune on retain: continue training the fitted model on the retain set only (after
removing every forgotten interaction from its graph, masks and feature caches). A common
approximate-unlearning baseline (e.g. the "Finetune" baseline of Chundawat et al., AAAI 2023)."""

from __future__ import annotations

from polyrec.data.dataset import Dataset
from polyrec.models.base import Recommender
from polyrec.unlearn.base import Unlearned, rebind, require_torch, train_steps, unwrap
from polyrec.unlearn.request import ForgetRequest, apply_request


def finetune(
    model: Recommender,
    train: Dataset,
    request: ForgetRequest,
    *,
    epochs: int = 5,
    lr: float | None = None,
    seed: int = 0,
) -> Recommender:
    """``model`` (modified in place) trained ``epochs`` more epochs on the retain set with its
    own loss; ``lr`` defaults to the model's training ``lr``."""
    inner = require_torch(unwrap(model)[0], "finetune")
    applied = apply_request(train, request)
    rebind(inner, applied)
    train_steps(inner, applied.retain, epochs=epochs, lr=lr or inner.config.lr, seed=seed)
    return Unlearned.wrap(model, applied.items)
