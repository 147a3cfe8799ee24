"""Overhead of polyrec's ALS wrapper over calling ``implicit`` directly.

On one synthetic data set, with identical parameters, seed and thread counts, times

- fit: ``implicit.cpu.als.AlternatingLeastSquares.fit(user_items)`` vs ``polyrec ALS.fit(ds)``
  (the latter on a fresh Dataset, so it also pays for building the user x item CSR);
- top-10 for every user, seen items filtered: implicit's ``recommend(userids,
  user_items[userids], N=10)`` vs polyrec's ``recommend`` (external ids, a DataFrame) and
  polyrec's internal path (``score_batches`` + ``mask_seen_`` + ``topk``, what the evaluator runs).

Runs alternate between the two sides (``repeats`` rounds) and the median is reported. Writes
``benchmarks/results/als_overhead.json``::

    python benchmarks/bench_als_overhead.py [--users 50000 --items 20000 --interactions 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import implicit
import numpy as np
import scipy
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from polyrec.data.dataset import Dataset
from polyrec.data.synthetic import make_synthetic
from polyrec.models.classic.als import ALS
from polyrec.ranking import mask_seen_, topk

RESULT = Path(__file__).parent / "results" / "als_overhead.json"


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def fresh(ds: Dataset) -> Dataset:
    """A copy of ``ds`` without cached views (so a fit pays for building its CSR)."""
    return ds.with_interactions(np.ones(len(ds), dtype=bool))


def implicit_fit(user_items: Any, params: dict[str, Any]) -> AlternatingLeastSquares:
    """implicit used as its docs advise: BLAS limited to one thread around the fit."""
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(dtype=np.float32, **params)
        model.fit(user_items, show_progress=False)
    return model


def internal_topk(model: ALS, users: np.ndarray, k: int) -> np.ndarray:
    """Item indices of the top ``k`` per user, seen masked: the evaluator's path."""
    out = []
    for batch, scores in model.score_batches(users):
        mask_seen_(scores, model.seen, batch)
        out.append(topk(scores, k)[1].numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    ds = make_synthetic(args.users, args.items, args.interactions, reviews=False, seed=0)
    user_items = ds.binary_csr
    users = np.arange(ds.n_users)
    params = {
        "factors": 64,
        "regularization": 0.01,
        "alpha": 1.0,
        "iterations": 15,
        "use_native": True,
        "use_cg": True,
        "num_threads": 0,
        "random_state": 42,
    }
    ours_params = {key: val for key, val in params.items() if key != "random_state"}
    ours_params["seed"] = params["random_state"]
    ours_params["alpha"] = params["alpha"] - 1.0  # the paper's alpha: confidence 1 + alpha

    times: dict[str, list[float]] = {
        "implicit_fit": [],
        "polyrec_fit": [],
        "implicit_recommend": [],
        "polyrec_recommend": [],
        "polyrec_internal_topk": [],
    }
    for _ in range(args.repeats):
        t, theirs = timed(implicit_fit, user_items, params)
        times["implicit_fit"].append(t)
        t, ours = timed(ALS(ours_params).fit, fresh(ds))
        times["polyrec_fit"].append(t)
        t, (their_idx, _) = timed(theirs.recommend, users, user_items[users], N=args.k)
        times["implicit_recommend"].append(t)
        t, _ = timed(ours.recommend, ds.user_ids.to_external(users), k=args.k)
        times["polyrec_recommend"].append(t)
        t, our_idx = timed(internal_topk, ours, users, args.k)
        times["polyrec_internal_topk"].append(t)

    median = {key: statistics.median(vals) for key, vals in times.items()}
    same = (our_idx[:, :, None] == their_idx[:, None, :]).any(axis=2).mean()
    result = {
        "benchmark": "als_overhead",
        "dataset": {
            "name": "synthetic",
            "args": {
                "n_users": args.users,
                "n_items": args.items,
                "n_interactions": args.interactions,
                "seed": 0,
            },
            "n_users": ds.n_users,
            "n_items": ds.n_items,
            "n_interactions": ds.n_interactions,
            "fingerprint": ds.fingerprint(),
        },
        "params": {"implicit": params, "polyrec": ours_params, "k": args.k},
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": median,
        "overhead": {
            "fit": median["polyrec_fit"] / median["implicit_fit"] - 1,
            "recommend": median["polyrec_recommend"] / median["implicit_recommend"] - 1,
            "internal_topk": median["polyrec_internal_topk"] / median["implicit_recommend"] - 1,
        },
        "checks": {
            "factors_identical": bool(
                np.array_equal(theirs.item_factors, ours.item_factors.numpy())
                and np.array_equal(theirs.user_factors, ours.user_factors.numpy())
            ),
            "top_k_overlap": float(same),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "load_average_at_end": os.getloadavg(),
        },
        "versions": {
            "python": sys.version.split()[0],
            "polyrec": version("polyrec"),
            "implicit": implicit.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "torch": torch.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_seconds": median, **{k: result[k] for k in ("overhead", "checks")}}))


if __name__ == "__main__":
    main()
