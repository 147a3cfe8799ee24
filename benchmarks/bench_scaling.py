"""How polyrec's BPR-MF scales: one training epoch, full-ranking evaluation and peak memory on
synthetic data of 100k, 1M and 10M interactions.

    python benchmarks/bench_scaling.py                    # 1e5 1e6 1e7
    python benchmarks/bench_scaling.py --sizes 100000 1000000

Sizes: ``n`` interactions over ``n / 25`` users and ``n / 100`` items (25 interactions per user
on average, as Gowalla's 27; 100 per item), from :func:`polyrec.data.synthetic.make_synthetic`
(seed 0, no review text; it drops the few repeated pairs, so ``interactions`` is ~2% below the
target ``n``). Each dataset is generated once and cached in
``benchmarks/work/synthetic_<n>.npz`` (``--regenerate`` rebuilds it).

Each size runs in a fresh subprocess, so its memory peak is its own: it loads the cached
interactions, splits them per user 80/20 (:func:`polyrec.data.split.ratio_split`, seed 0),
trains BPR-MF for one epoch (64 factors, batch 2048, Adam lr 1e-3; the epoch time is the
trainer's, negative sampling included) and evaluates every test user by full ranking over the
whole catalogue (training items masked, Recall/NDCG@10,20; users scored ``--eval-batch`` at a
time, so memory is bounded by ``eval_batch x n_items`` scores). Resident memory (RSS) is
sampled every 5 ms by a thread (psutil); ``peak_rss_mb`` is the process's high-water mark
(``getrusage``), ``fit_peak_rss_mb`` / ``eval_peak_rss_mb`` the sampled peaks of each phase
and ``data_rss_mb`` the RSS once the split is built.

Writes ``benchmarks/results/scaling.json`` and the log-log plot ``benchmarks/results/
scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work"
SIZES = (100_000, 1_000_000, 10_000_000)
USERS_PER = 25  # interactions per user
ITEMS_PER = 100  # interactions per item


def cache_path(n: int) -> Path:
    return WORK / f"synthetic_{n}.npz"


def generate(n: int) -> dict[str, Any]:
    """Make and cache the synthetic interactions of size ``n`` (run in a subprocess)."""
    from polyrec.data.synthetic import make_synthetic

    start = time.perf_counter()
    ds = make_synthetic(n // USERS_PER, n // ITEMS_PER, n, reviews=False, seed=0)
    seconds = time.perf_counter() - start
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache_path(n),
        users=ds.users.astype(np.int32),
        items=ds.items.astype(np.int32),
        n_users=ds.n_users,
        n_items=ds.n_items,
        generate_seconds=seconds,
    )
    return {"generate_seconds": seconds, "interactions": ds.n_interactions}


class RssSampler:
    """Samples this process's RSS in a background thread; ``peak()`` since the last reset."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak()
            time.sleep(self._interval)

    def reset(self) -> int:
        """Current RSS (bytes); the peak restarts from it."""
        with self._lock:
            self._peak = self._proc.memory_info().rss
            return self._peak

    def peak(self) -> int:
        """Highest RSS (bytes) seen since the last reset."""
        with self._lock:
            self._peak = max(self._peak, self._proc.memory_info().rss)
            return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(n: int, eval_batch: int) -> dict[str, Any]:
    """One size: load, split, one BPR epoch, full-ranking evaluation (run in a subprocess)."""
    import torch

    from polyrec.data.dataset import Dataset, IdMap
    from polyrec.data.split import ratio_split
    from polyrec.eval import evaluate
    from polyrec.models.registry import get_model_class

    mb = 1 / 2**20
    sampler = RssSampler()
    with np.load(cache_path(n)) as z:
        n_users, n_items = int(z["n_users"]), int(z["n_items"])
        ds = Dataset(
            users=z["users"],
            items=z["items"],
            user_ids=IdMap(np.arange(n_users)),
            item_ids=IdMap(np.arange(n_items)),
            name=f"synthetic-{n}",
        )
        generate_seconds = float(z["generate_seconds"])
    start = time.perf_counter()
    split = ratio_split(ds, test=0.2, seed=0)
    split_seconds = time.perf_counter() - start
    n_interactions = ds.n_interactions
    del ds
    data_rss = sampler.reset()
    _log(f"{n:,}: split in {split_seconds:.1f}s, RSS {data_rss * mb:.0f} MB; training 1 epoch")

    model = get_model_class("bpr")(
        factors=64,
        epochs=1,
        batch_size=2048,
        lr=1e-3,
        early_stopping=None,
        progress=False,
        score_batch_size=eval_batch,
    )
    start = time.perf_counter()
    model.fit(split.train)
    fit_seconds = time.perf_counter() - start
    fit_peak = sampler.peak()
    _log(f"{n:,}: fit in {fit_seconds:.1f}s; evaluating")

    sampler.reset()
    result = evaluate(
        model,
        split.test,
        ks=(10, 20),
        metrics=("recall", "ndcg"),
        batch_size=eval_batch,
        beyond=False,
    )
    eval_peak = sampler.peak()
    sampler.stop()
    return {
        "target_interactions": n,
        "interactions": n_interactions,
        "n_users": n_users,
        "n_items": n_items,
        "train_interactions": split.train.n_interactions,
        "test_interactions": split.test.n_interactions,
        "eval_users": result.protocol["n_users"],
        "eval_batch": eval_batch,
        "generate_seconds": generate_seconds,
        "split_seconds": split_seconds,
        "fit_seconds": fit_seconds,
        "epoch_seconds": model.history[0]["seconds"],
        "eval_seconds": result.seconds,
        "metrics": result.summary,
        "data_rss_mb": data_rss * mb,
        "fit_peak_rss_mb": fit_peak * mb,
        "eval_peak_rss_mb": eval_peak * mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def _log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _subprocess(args: list[str]) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=False
    )  # the worker's stderr (progress, errors) goes straight to ours
    if proc.returncode != 0:
        raise SystemExit(f"bench_scaling {' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Log-log time and memory against the number of interactions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["interactions"] for r in rows], dtype=float)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("epoch_seconds", "BPR epoch"), ("eval_seconds", "full-ranking eval")):
        ax_t.plot(n, [r[key] for r in rows], "o-", label=label)
    ax_t.plot(n, rows[0]["epoch_seconds"] * n / n[0], ":", color="grey", label="~ n")
    ax_t.plot(
        n,
        rows[0]["eval_seconds"] * (n / n[0]) ** 2,
        "--",
        color="grey",
        label="~ n^2 (users x items)",
    )
    ax_t.set(xscale="log", yscale="log", xlabel="interactions", ylabel="seconds")
    threads = rows[0]["torch_threads"]
    ax_t.set_title(f"time ({threads} thread{'s' * (threads != 1)}, {os.cpu_count()} cores)")
    ax_t.legend()
    for key, label in (
        ("data_rss_mb", "after load + split"),
        ("fit_peak_rss_mb", "peak during fit"),
        ("eval_peak_rss_mb", "peak during eval"),
    ):
        ax_m.plot(n, [r[key] for r in rows], "o-", label=label)
    ax_m.set(xscale="log", yscale="log", xlabel="interactions", ylabel="RSS (MB)")
    ax_m.set_title("resident memory")
    ax_m.legend()
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"polyrec BPR-MF on synthetic data (users = n/{USERS_PER}, items = n/{ITEMS_PER})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--eval-batch", type=int, default=1024, help="users scored at once")
    p.add_argument("--threads", type=int, default=0, help="torch + BLAS threads (0: default)")
    p.add_argument("--regenerate", action="store_true", help="rebuild cached datasets")
    p.add_argument("--generate", type=int, help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args(argv)
    if args.threads:  # torch's intra-op pool and the BLAS / OpenMP pools numpy and scipy use
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    if args.generate:
        print(json.dumps(generate(args.generate)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.eval_batch)))
        return

    import matplotlib
    import torch

    import polyrec

    rows = []
    for n in sorted(args.sizes):
        if args.regenerate or not cache_path(n).is_file():
            print(f"generating {n:,} interactions ...", flush=True)
            _subprocess(["--generate", str(n)])
        row = _subprocess(
            [
                "--measure",
                str(n),
                "--eval-batch",
                str(args.eval_batch),
                "--threads",
                str(args.threads),
            ]
        )
        rows.append(row)
        print(
            f"{row['interactions']:>11,}: users {row['n_users']:,} items {row['n_items']:,}  "
            f"epoch {row['epoch_seconds']:.2f}s  eval {row['eval_seconds']:.2f}s "
            f"({row['eval_users']:,} users)  peak RSS fit {row['fit_peak_rss_mb']:.0f} MB, "
            f"eval {row['eval_peak_rss_mb']:.0f} MB",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "scaling",
        "model": "bpr",
        "sizes": {"users": f"n/{USERS_PER}", "items": f"n/{ITEMS_PER}"},
        "rows": rows,
        "environment": {
            "versions": {
                "polyrec": polyrec.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "matplotlib": matplotlib.__version__,
                "python": platform.python_version(),
            },
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    (RESULTS / "scaling.json").write_text(json.dumps(record, indent=2))
    plot(rows, RESULTS / "scaling.png")
    print(f"wrote {RESULTS / 'scaling.json'} and {RESULTS / 'scaling.png'}")


if __name__ == "__main__":
    main()
