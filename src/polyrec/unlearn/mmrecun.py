"""MMRecUn: reverse BPR on the forget set plus forward BPR on the retain set.

Sinha, Mandal, Kankanhalli, "Multi-Modal Recommendation Unlearning for Legal, Licensing, and
Modality Constraints", AAAI 2025 (arXiv 2405.15328). Starting from the trained model, each step
minimises

    L = alpha * sum_{(u,i) in forget batch} -ln sigma(x_uj - x_ui) / B  (reverse BPR)
      + (1 - alpha) * L_model(retain batch of B pairs)                   (forward BPR + reg)

where ``j`` is a uniformly drawn item the user never interacted with in the original training
data, so the forgotten item is pushed *below* a random negative, and ``L_model`` is the model's
own BPR loss with its regulariser (the ``lambda ||Theta||^2`` term). Before the steps the model is
re-pointed at the retain data (graph, masks, features: :func:`polyrec.unlearn.base.rebind`).

The paper's code is not released; ``alpha``, ``epochs``, ``forget_passes`` and the learning rate
are configurable. Their defaults are this library's, tuned on Amazon Scientific with FREEDOM
on a tuning seed that the reported benchmark does not use (``benchmarks/tune_mmrecun.py``):
forgetting reached the gold model's level only within a narrow band of steps x learning rate,
and a forgotten *user* needs a stronger step than forgotten interactions (no retained
interaction of theirs anchors their parameters, and gold leaves them untrained), so the default
learning rate is :data:`USER_LR_SCALE` times the model's for a request that forgets whole
users, the model's own otherwise (4 epochs, 50 passes over the forget set per epoch). ``alpha``
barely matters under Adam (it rescales the loss terms; Adam normalises the step size). For user
requests the band is a cliff: on the tuning seed 4 epochs at 3x lr left forget recall at 0.041,
at 3.5x 0.016 and at 5x 0 (gold: 0.024).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from polyrec.data.dataset import Dataset
from polyrec.data.sampling import UniformNegativeSampler
from polyrec.errors import PolyrecError
from polyrec.models.base import Recommender
from polyrec.unlearn.base import Unlearned, rebind, require_torch, train_steps, unwrap
from polyrec.unlearn.request import ForgetRequest, apply_request

USER_LR_SCALE = 3.0
"""Default learning rate of a request that forgets whole users, times the model's own."""


def reverse_bpr_loss(x_ui: torch.Tensor, x_uj: torch.Tensor) -> torch.Tensor:
    """``mean -ln sigma(x_uj - x_ui)``: minimised by ranking the forgotten ``i`` below ``j``."""
    return F.softplus(x_ui - x_uj).mean()


def mmrecun(
    model: Recommender,
    train: Dataset,
    request: ForgetRequest,
    *,
    alpha: float = 0.5,
    epochs: int = 4,
    lr: float | None = None,
    forget_passes: int = 50,
    seed: int = 0,
) -> Recommender:
    """Unlearn ``request`` from ``model`` (modified in place) with MMRecUn.

    The model's network must score BPR triples: ``train_module(users, pos, neg)`` returns
    ``(x_ui, x_uj, ...)`` (every BPR-trained model in polyrec does). A batch of forget triples
    joins each retain batch, cycling through the forget set ``forget_passes`` times per epoch
    (the forget set is small: one pass per epoch barely moves it under row-wise Adam).
    ``lr`` defaults to the model's learning rate, times :data:`USER_LR_SCALE` when the
    request forgets whole users.
    """
    if not 0 <= alpha <= 1:
        raise PolyrecError(f"alpha must be in [0, 1], got {alpha}")
    if epochs < 1 or forget_passes < 1:
        raise PolyrecError("mmrecun needs epochs >= 1 and forget_passes >= 1")
    inner = require_torch(unwrap(model)[0], "mmrecun")
    applied = apply_request(train, request)
    rebind(inner, applied)
    forget = applied.forget
    extra = None
    if forget.n_interactions and alpha > 0:
        sampler = UniformNegativeSampler(train.binary_csr)
        n_batches = -(-applied.retain.n_interactions // inner.config.batch_size)
        size = max(1, -(-forget_passes * forget.n_interactions // n_batches))
        users_all = torch.from_numpy(forget.users)
        items_all = torch.from_numpy(forget.items)
        state = {"order": np.zeros(0, np.int64), "pos": 0}

        def extra(rng: np.random.Generator) -> torch.Tensor:
            if state["pos"] >= len(state["order"]):
                state["order"], state["pos"] = rng.permutation(forget.n_interactions), 0
            rows = state["order"][state["pos"] : state["pos"] + size]
            state["pos"] += size
            users = users_all[rows]
            neg = torch.from_numpy(sampler.sample(forget.users[rows], rng=rng))
            device = inner.device
            out = inner.train_module(users.to(device), items_all[rows].to(device), neg.to(device))
            # a sum scaled like the retain batch's mean: every forgotten pair weighs as much
            # as a retained one whatever the size of the forget set (a mean over the forget
            # batch would push each pair of a small request harder)
            return alpha * reverse_bpr_loss(out[0], out[1]) * len(rows) / inner.config.batch_size

    train_steps(
        inner,
        applied.retain,
        epochs=epochs,
        lr=lr or inner.config.lr * (USER_LR_SCALE if request.users else 1.0),
        seed=seed,
        retain_weight=1.0 - alpha,
        extra=extra,
    )
    return Unlearned.wrap(model, applied.items)
