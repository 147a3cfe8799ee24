"""Machine unlearning for recommenders: forget users, items, interactions or a modality.

Every method has the interface ``method(model, train, request) -> model``:

- :func:`~polyrec.unlearn.retrain.retrain`: the gold reference, refit from scratch on the
  retain set;
- :func:`~polyrec.unlearn.sisa.sisa_unlearn`: retrain only the affected shards of a
  :class:`~polyrec.unlearn.sisa.SISA` ensemble;
- :func:`~polyrec.unlearn.finetune.finetune`: keep training on the retain set;
- :func:`~polyrec.unlearn.mmrecun.mmrecun`: reverse BPR on the forget set + BPR on the retain
  set (Sinha et al., AAAI 2025).

After any of them the forgotten interactions are gone from the model's seen-item mask, graph
and feature caches, and forgotten items score ``-inf`` (never recommended).
:mod:`polyrec.unlearn.evaluate` measures forgetting, kept utility, membership leakage and time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.models.base import Recommender
from polyrec.unlearn.finetune import finetune as _finetune
from polyrec.unlearn.mmrecun import mmrecun as _mmrecun
from polyrec.unlearn.request import AppliedRequest, ForgetRequest, apply_request
from polyrec.unlearn.retrain import retrain as _retrain
from polyrec.unlearn.sisa import SISA, sisa_unlearn

# aliases keep the package attributes ``mmrecun`` etc. pointing at the submodules
METHODS: dict[str, Callable[..., Recommender]] = {
    "retrain": _retrain,
    "sisa": sisa_unlearn,
    "finetune": _finetune,
    "mmrecun": _mmrecun,
}


def unlearn(
    model: Recommender,
    train: Dataset,
    request: ForgetRequest,
    method: str = "mmrecun",
    **options: Any,
) -> Recommender:
    """Apply ``request`` to ``model`` (trained on ``train``) with ``method``; ``options`` go to
    the method (e.g. ``epochs``, ``alpha`` for mmrecun)."""
    check_method(method)
    return METHODS[method](model, train, request, **options)


def check_method(method: str) -> None:
    """Refuse a name that is not one of :data:`METHODS`."""
    if method not in METHODS:
        raise PolyrecError(f"unknown unlearning method {method!r}; available: {', '.join(METHODS)}")


__all__ = [
    "METHODS",
    "SISA",
    "AppliedRequest",
    "ForgetRequest",
    "apply_request",
    "check_method",
    "sisa_unlearn",
    "unlearn",
]
