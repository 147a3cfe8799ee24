"""BPR-MF: matrix factorisation trained with Bayesian Personalized Ranking.

Rendle, Freudenthaler, Gantner, Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009. The score is ``x_ui = <U_u, V_i>`` and each training triple
``(u, i, j)`` (``i`` a positive of ``u``, ``j`` a uniformly sampled non-positive) contributes
``-ln sigma(x_ui - x_uj)`` (computed as ``softplus(x_uj - x_ui)``).

Training follows the reference code of LightGCN (He et al., SIGIR 2020; gusye1234/
LightGCN-PyTorch), whose MF baseline is this model: each epoch uses every training interaction
once in random order, Adam, and the L2 penalty on the *batch's* embeddings
``reg * (||U_u||^2 + ||V_i||^2 + ||V_j||^2) / 2``, averaged over the batch (the LightGCN code's
``weight_decay * reg_loss``). Embeddings start from N(0, ``init_std``^2), by default the
Xavier-normal scale ``sqrt(2 / (rows + factors))`` of each table (RecBole's initialisation):
the LightGCN code's 0.1 suits its 1,000 epochs but leaves a 20-epoch run far behind, because
Adam moves a weight by about ``lr`` per step.

The loss and its gradient are computed in closed form (:class:`_BPRLoss`: one lookup per table,
``d/dx_uij = -sigma(-x_uij)``, the rows' gradients scattered into the dense table gradients
once), a few fused steps instead of autograd's graph of small operations;
:func:`bpr_loss_reference` is the same loss in plain autograd, and the tests check that both
give the same value and gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from polyrec.data.dataset import Dataset
from polyrec.data.sampling import bpr_triples
from polyrec.models.base import ModelConfig
from polyrec.models.torch_base import TorchConfig, TorchRecommender, triple_batches
from polyrec.train.row_sparse_adam import row_sparse_grad


class BPRConfig(TorchConfig):
    """BPR-MF options (on top of the training options)."""

    factors: int = Field(64, ge=1)
    reg: float = Field(1e-4, ge=0)
    init_std: float | None = Field(None, gt=0)  # None: Xavier-normal scale of each table
    epochs: int = Field(100, ge=1)


class _BPRLoss(torch.autograd.Function):
    """Mean BPR loss plus the batch-embedding L2 term, with a hand-written backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        user_table: torch.Tensor,
        item_table: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        reg: float,
        sparse: bool,
    ) -> torch.Tensor:
        items = torch.cat([pos, neg])
        u, ij = user_table.index_select(0, users), item_table.index_select(0, items)
        i, j = ij.chunk(2)
        x = (u * (i - j)).sum(-1)  # x_uij = x_ui - x_uj
        loss = F.softplus(-x).mean()
        if reg:
            loss = loss + reg * 0.5 * (u.square().sum() + ij.square().sum()) / len(x)
        ctx.save_for_backward(u, ij, x, users, items)
        ctx.reg, ctx.sparse = reg, sparse
        ctx.shapes = (user_table.shape, item_table.shape)
        return loss

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        u, ij, x, users, items = ctx.saved_tensors  # type: ignore[attr-defined]
        n = len(x)
        i, j = ij.chunk(2)
        d = (torch.sigmoid(-x) * (-grad / n))[:, None]  # dL/dx_uij per row
        grad_u = d * (i - j)
        grad_ij = torch.cat([d * u, -d * u])
        if ctx.reg:  # type: ignore[attr-defined]
            scale = grad * ctx.reg / n  # type: ignore[attr-defined]
            grad_u += scale * u
            grad_ij += scale * ij
        user_shape, item_shape = ctx.shapes  # type: ignore[attr-defined]
        if ctx.sparse:  # type: ignore[attr-defined]
            grad_users = row_sparse_grad(users, grad_u, user_shape)
            grad_items = row_sparse_grad(items, grad_ij, item_shape)
        else:
            grad_users = u.new_zeros(user_shape).index_add_(0, users, grad_u)
            grad_items = u.new_zeros(item_shape).index_add_(0, items, grad_ij)
        return grad_users, grad_items, None, None, None, None, None


class _MF(torch.nn.Module):
    """User and item embedding tables; ``forward`` gives a batch's triple scores or, with
    ``reg``, its training loss.

    ``sparse_rows_hook`` is set by the trainer when it trains with row-sparse gradients
    (:class:`~polyrec.train.row_sparse_adam.RowSparseAdam`): the loss then calls it with each
    table and the rows it is about to read, and its gradients are row-sparse tensors."""

    def __init__(self, n_users: int, n_items: int, factors: int, init_std: float | None) -> None:
        super().__init__()
        self.sparse_rows_hook: Callable[[torch.Tensor, torch.Tensor], None] | None = None
        self.user = torch.nn.Embedding(n_users, factors)
        self.item = torch.nn.Embedding(n_items, factors)
        for table in (self.user, self.item):
            std = init_std or (2.0 / (table.num_embeddings + factors)) ** 0.5
            torch.nn.init.normal_(table.weight, std=std)

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """With ``reg``: the training loss, mean ``-ln sigma(x_ui - x_uj)`` plus the L2 term
        (closed-form kernel). Without: ``x_ui``, ``x_uj`` (B,) and the squared L2 norm of the
        batch's embeddings, the triple scores every BPR-trained model gives (unlearning uses
        them)."""
        if reg is not None:
            hook = self.sparse_rows_hook
            if hook is not None:
                hook(self.user.weight, users)
                hook(self.item.weight, torch.cat([pos, neg]))
            return _BPRLoss.apply(
                self.user.weight, self.item.weight, users, pos, neg, reg, hook is not None
            )
        u, i, j = self.user(users), self.item(pos), self.item(neg)
        sq_norm = u.square().sum() + i.square().sum() + j.square().sum()
        return (u * i).sum(-1), (u * j).sum(-1), sq_norm


def bpr_loss_reference(
    mf: _MF, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg: float
) -> torch.Tensor:
    """:class:`_BPRLoss` in plain autograd (the reference the tests compare it with)."""
    x_ui, x_uj, sq_norm = mf(users, pos, neg)
    return F.softplus(x_uj - x_ui).mean() + reg * 0.5 * sq_norm / len(x_ui)


class BPRMF(TorchRecommender):
    """Matrix factorisation with the BPR pairwise loss and uniform negative sampling."""

    name = "bpr"
    Config: ClassVar[type[ModelConfig]] = BPRConfig
    config: BPRConfig
    user_tables = ("user.weight",)

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        return _MF(dims["n_users"], dims["n_items"], self.config.factors, self.config.init_std)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        return triple_batches(bpr_triples(train.binary_csr, rng), self.config.batch_size)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(batch["users"], batch["pos"], batch["neg"], self.config.reg)

    def _user_factors(self, users: np.ndarray) -> torch.Tensor:
        return cast(_MF, self.module).user.weight.detach()[torch.from_numpy(users).to(self.device)]

    def _item_factors(self) -> torch.Tensor:
        return cast(_MF, self.module).item.weight.detach()
