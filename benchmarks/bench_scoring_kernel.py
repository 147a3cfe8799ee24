"""The scoring kernel of full-ranking evaluation: ``users x d @ d x items`` score blocks.

Times the float32 product of the evaluator's score blocks (Gowalla's shape by default: 29,858
users, 40,981 items, 64 factors, ~16 MB blocks of 102 users) through torch's BLAS and numpy's,
and what ``polyrec.ranking.inner_products`` picks on this machine; then the top-20 of the same
blocks (``torch.topk``), the other half of the evaluation's cost; and the exact top-20 that
``polyrec.ranking.NormSortedItems`` finds while skipping items by norm, here in its worst case:
random factors have nearly equal norms, so hardly any item can be skipped (trained factors:
``bench_vs_recbole.py``). One thread each, random factors (seed 0), best of ``--repeats``
passes over all users. Last, the training side: forward and backward of a sequential model's
output layer (``positions x d`` by ``items x d``, both sides trainable) through
``inner_products`` (numpy's BLAS in an autograd function where it is the faster one) and through
torch's ``@``, at three shapes (``TRAINING_SHAPES``). Run it with
``OMP_NUM_THREADS=1`` so that numpy's OpenBLAS uses one thread too.

    OMP_NUM_THREADS=1 python benchmarks/bench_scoring_kernel.py

Writes ``benchmarks/results/scoring_kernel.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from polyrec.ranking import (
    FACTOR_BATCH_USERS,
    NormSortedItems,
    auto_batch_size,
    inner_products,
    numpy_blas_is_faster,
)
from polyrec.record import now_utc, versions

RESULTS = Path(__file__).resolve().parent / "results"

# (positions, items, dim) of output-layer products in training: SASRec on ml-1m (128 users x 200
# positions, 3,416 items, d 50), BERT4Rec's masked positions on ml-1m (20% of 128 x 200, d 64),
# and a Beauty-sized catalogue (12,101 items) for 4,000 positions
TRAINING_SHAPES = {
    "sasrec_ml-1m": (25_600, 3_416, 50),
    "bert4rec_ml-1m_masked": (5_120, 3_416, 64),
    "beauty_catalogue": (4_000, 12_101, 64),
}


def best_seconds(run: Callable[[], None], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def training_product(positions: int, n_items: int, dim: int, repeats: int) -> dict[str, float]:
    """Seconds of forward + backward of one output-layer product, torch's ``@`` against
    :func:`inner_products`, and the largest gradient difference between the two."""
    rng = np.random.default_rng(1)
    q = torch.from_numpy(rng.standard_normal((positions, dim), dtype=np.float32))
    v = torch.from_numpy(rng.standard_normal((n_items, dim), dtype=np.float32))
    grad = torch.from_numpy(rng.standard_normal((positions, n_items), dtype=np.float32))
    grads = {}

    def step(product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name: str) -> None:
        qq, vv = q.clone().requires_grad_(), v.clone().requires_grad_()
        product(qq, vv).backward(grad)
        grads[name] = (qq.grad, vv.grad)

    row = {
        "torch_seconds": best_seconds(lambda: step(lambda a, b: a @ b.T, "torch"), repeats),
        "inner_products_seconds": best_seconds(lambda: step(inner_products, "ours"), repeats),
    }
    row["max_abs_grad_diff"] = max(
        float((a - b).abs().max()) for a, b in zip(grads["torch"], grads["ours"], strict=True)
    )
    print(
        f"fwd+bwd {positions} x {n_items} x {dim}: torch {row['torch_seconds']:.3f} s, "
        f"inner_products {row['inner_products_seconds']:.3f} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=29_858)
    parser.add_argument("--items", type=int, default=40_981)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.standard_normal((args.users, args.factors), dtype=np.float32))
    items = torch.from_numpy(rng.standard_normal((args.items, args.factors), dtype=np.float32))
    batch = auto_batch_size(args.items)
    starts = range(0, args.users, batch)
    gflop = 2 * args.users * args.items * args.factors / 1e9

    def blocks(product: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        return lambda: [product(users[s : s + batch]) for s in starts] and None

    kernels = {
        "torch": lambda q: q @ items.T,
        "numpy": lambda q: np.matmul(q.numpy(), items.numpy().T),
        "inner_products": lambda q: inner_products(q, items),
    }
    rows = {}
    with torch.inference_mode():
        for name, product in kernels.items():
            seconds = best_seconds(blocks(product), args.repeats)
            rows[name] = {"seconds": seconds, "gflops": gflop / seconds}
            print(f"{name:15s} {seconds:6.2f} s  {gflop / seconds:5.1f} GFLOP/s", flush=True)
        scores = [inner_products(users[s : s + batch], items) for s in starts[:20]]
        topk_seconds = best_seconds(
            lambda: [torch.topk(s, 20, dim=1, sorted=False) for s in scores], args.repeats
        ) * (len(starts) / len(scores))
        ranker = NormSortedItems(items)
        pruned_seconds = best_seconds(
            lambda: [
                ranker.topk(users[s : s + FACTOR_BATCH_USERS], 20)
                for s in range(0, args.users, FACTOR_BATCH_USERS)
            ],
            args.repeats,
        )
        scored = ranker.scored / (args.repeats * args.users * args.items)
    training = {
        name: training_product(*shape, args.repeats) for name, shape in TRAINING_SHAPES.items()
    }
    print(f"top-20          {topk_seconds:6.2f} s (all users)")
    print(f"norm-pruned     {pruned_seconds:6.2f} s (product and top-20, {scored:.0%} scored)")
    out = {
        "benchmark": "full-ranking scoring kernel: score blocks through torch vs numpy BLAS",
        "created": now_utc(),
        "shape": {"users": args.users, "items": args.items, "factors": args.factors},
        "block_users": batch,
        "threads": {"torch": 1, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "cpu": platform.processor() or platform.machine(),
        "numpy_blas_is_faster": numpy_blas_is_faster(),
        "torch_mkl": torch.backends.mkl.is_available(),
        "gemm": rows,
        "topk20_seconds": topk_seconds,
        "norm_pruned_top20": {"seconds": pruned_seconds, "fraction_scored": scored},
        "training_forward_backward": training,
        "versions": versions(),
    }
    path = RESULTS / "scoring_kernel.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
