"""The gold reference: retrain the same model (same config and seed) from scratch on the
retain set (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021, call it the naive baseline;
MMRecUn calls it Gold)."""

from __future__ import annotations

from polyrec.data.dataset import Dataset
from polyrec.models.base import Recommender
from polyrec.unlearn.base import Unlearned, unwrap
from polyrec.unlearn.request import ForgetRequest, apply_request


def retrain(
    model: Recommender,
    train: Dataset,
    request: ForgetRequest,
    *,
    valid: Dataset | None = None,
) -> Recommender:
    """A fresh model of ``model``'s class and config fitted on the retain set.

    A forgotten modality is removed from the config's ``modalities``; forgotten items are
    masked from the result's scores.
    """
    inner, _ = unwrap(model)
    applied = apply_request(train, request)
    config = inner.config.model_dump()
    if applied.modality is not None and applied.modality in config.get("modalities", ()):
        config["modalities"] = [m for m in config["modalities"] if m != applied.modality]
    fresh = type(inner)(config).fit(applied.retain, valid)
    return Unlearned.wrap(fresh, applied.items)
