"""RowSparseAdam follows torch.optim.Adam's trajectory on row-sparse gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyrec.data.synthetic import make_synthetic
from polyrec.models.classic.bpr import BPRMF
from polyrec.train import trainer
from polyrec.train.row_sparse_adam import SYNC_EVERY, RowSparseAdam, row_sparse_grad


def _train_both(
    eps: float, grad_scale: float, steps: int, lr: float = 1e-2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial weights, then dense Adam's and RowSparseAdam's after the same row-sparse
    gradients (a few rows per step; rows 40-49 never get one)."""
    torch.manual_seed(0)
    start = torch.randn(50, 8) * 0.1
    dense, sparse = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    reference = torch.optim.Adam([dense], lr=lr, eps=eps)
    optimizer = RowSparseAdam([sparse], lr=lr, eps=eps)
    for step in range(steps):
        rows = torch.randint(0, 40, (6,))
        rows[0] = step % 40  # repeated rows within a step are summed
        rows[1] = rows[0]
        grad = torch.randn(6, 8) * grad_scale
        dense.grad = torch.zeros(50, 8).index_add_(0, rows, grad)
        reference.step()
        sparse.grad = row_sparse_grad(rows, grad, sparse.shape)
        optimizer.step()
    optimizer.sync()
    return start, dense.detach(), sparse.detach()


def test_same_weights_as_dense_adam_across_syncs() -> None:
    # eps ~ 0: the deferred steps' closed form is exact, only float32 rounding remains
    start, dense, sparse = _train_both(eps=1e-30, grad_scale=1e-2, steps=3 * SYNC_EVERY + 5)
    assert (dense - start).abs().max() > 0.1  # the weights did move
    torch.testing.assert_close(sparse, dense, rtol=0, atol=2e-5)
    assert torch.equal(sparse[40:], start[40:])  # rows without gradient never move


def test_default_eps_differs_only_by_eps_in_deferred_steps() -> None:
    # gradients far above eps: the closed form's omitted eps is a ~1e-5 relative effect
    _, dense, sparse = _train_both(eps=1e-8, grad_scale=1e-2, steps=100)
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-4)


def test_sync_is_idempotent_and_weights_readable_mid_training() -> None:
    table = torch.nn.Parameter(torch.zeros(10, 4))
    optimizer = RowSparseAdam([table], lr=0.1)
    table.grad = row_sparse_grad(torch.tensor([2]), torch.ones(1, 4), table.shape)
    optimizer.step()
    # step 1 is Adam's first step: m_hat / sqrt(v_hat) = 1, so the row moves by -lr
    torch.testing.assert_close(table[2], torch.full((4,), -0.1), rtol=0, atol=1e-6)
    table.grad = row_sparse_grad(torch.tensor([5]), torch.ones(1, 4), table.shape)
    optimizer.step()
    optimizer.sync()
    once = table.detach().clone()
    optimizer.sync()
    assert torch.equal(table.detach(), once)
    assert (once[2] < -0.1).all()  # row 2's momentum carried it on at step 2


def test_rejects_dense_gradients_and_non_tables() -> None:
    table = torch.nn.Parameter(torch.zeros(10, 4))
    optimizer = RowSparseAdam([table])
    table.grad = torch.ones(10, 4)
    with pytest.raises(ValueError, match="sparse gradients"):
        optimizer.step()
    with pytest.raises(ValueError, match="2-d float32 CPU"):
        RowSparseAdam([torch.nn.Parameter(torch.zeros(3))])


def test_trainer_uses_it_for_large_tables_only() -> None:
    small = BPRMF(factors=8, batch_size=64, epochs=1, progress=False)
    large = BPRMF(factors=8, batch_size=8, epochs=1, progress=False)
    data = make_synthetic(300, 150, 3000, seed=0)
    for model, expected in ((small, torch.optim.Adam), (large, RowSparseAdam)):
        model.dims = model._dims(data)
        module = model._build(model.dims)
        optimizer = trainer.make_optimizer(
            model.config, module, torch.device("cpu"), row_sparse=True
        )
        assert isinstance(optimizer, expected)
    # weight decay touches every row: dense Adam
    decayed = BPRMF(factors=8, batch_size=8, weight_decay=1e-4)
    module = decayed._build(decayed._dims(data))
    optimizer = trainer.make_optimizer(decayed.config, module, torch.device("cpu"), True)
    assert isinstance(optimizer, torch.optim.Adam)


def test_bpr_fit_with_row_sparse_adam_matches_dense_adam(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_synthetic(300, 150, 3000, seed=0)
    options = {"factors": 8, "batch_size": 16, "epochs": 2, "lr": 0.01, "progress": False}
    sparse = BPRMF(**options).fit(data)
    assert sparse.optimizer_name == "RowSparseAdam"
    assert sparse.module.sparse_rows_hook is None  # switched back for later dense users
    dense_only = trainer.make_optimizer
    monkeypatch.setattr(trainer, "make_optimizer", lambda *args, **_: dense_only(*args))
    dense = BPRMF(**options).fit(data)
    assert dense.optimizer_name == "Adam"
    users = np.arange(data.n_users)
    torch.testing.assert_close(sparse.score(users), dense.score(users), rtol=0, atol=2e-3)
