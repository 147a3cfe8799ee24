"""Sequential models under the full-ranking leave-one-out protocol, with a learning curve.

Trains one sequential model (config from ``configs/<dataset>/<model>.yaml``) on the
leave-one-out split (last item test, second-last validation), picks the epoch by validation
NDCG@10 (the trainer's early stopping) and ranks **all** items for every test user, history items
not masked (``evaluate(model, test, exclude=[])``). After every epoch the current weights are
also scored on the test items when validation improved (histories = train + valid), so a run
stopped by its time budget still reports where its learning curve got to; the results file is
rewritten after each epoch. Each entry also has ``cpu_seconds`` (this process's CPU time so
far): on a shared machine wall-clock seconds per epoch depend on the load, CPU time much less.

    POLYREC_DATA_DIR=/work/shared/data python benchmarks/bench_sequential.py \\
        --model sasrec --dataset ml-1m --measure 10        # seconds per batch / epoch only
    POLYREC_DATA_DIR=/work/shared/data python benchmarks/bench_sequential.py \\
        --model tiger --dataset amazon-beauty --measure 10 \\
        --out benchmarks/results/step_time_amazon-beauty_tiger.json  # ... written to a file
    POLYREC_DATA_DIR=/work/shared/data nohup python benchmarks/bench_sequential.py \\
        --model sasrec --dataset ml-1m --max-minutes 25 &  # writes results/sequential_*.json

With ``--set checkpoint=PATH`` the fit saves its state after every epoch and the same command
continues it (``--max-minutes`` then counts every sitting's training); the results file keeps
the earlier sittings' epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyrec.config import parse_overrides
from polyrec.data.split import Split
from polyrec.eval import evaluate
from polyrec.experiment import RunSpec, prepare_data, resolve_config
from polyrec.models.generative.decoding import item_feature_matrix
from polyrec.models.generative.semantic_ids import build_semantic_ids
from polyrec.models.generative.tiger import TIGER
from polyrec.models.registry import get_model_class
from polyrec.models.sequential import SequentialRecommender
from polyrec.record import peak_rss_mb, versions
from polyrec.train.checkpoint import saved_history

ROOT = Path(__file__).resolve().parent
KS = (10, 20)
# Published full-ranking numbers and the bar this project must reach (issue 5).
TARGETS = {
    ("sasrec", "ml-1m"): {
        "published": {"hr@10": 0.2853, "ndcg@10": 0.1603},
        "target": {"hr@10": 0.28, "ndcg@10": 0.155},
    },
    ("bert4rec", "ml-1m"): {
        "published": {"hr@10": 0.2843, "ndcg@10": 0.1537},
        "target": {"hr@10": 0.27, "ndcg@10": 0.145},
    },
    ("hstu", "ml-1m"): {"published": {"hr@10": 0.3097, "ndcg@10": 0.1720}},
    ("sasrec", "amazon-beauty"): {
        "published": {"recall@10": 0.0605, "ndcg@10": 0.0318},
        "target": {"recall@10": 0.058, "ndcg@10": 0.030},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--config", help="default: configs/<dataset>/<model>.yaml")
    parser.add_argument("--set", action="append", default=[], help="override key=value")
    parser.add_argument("--max-minutes", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--measure", type=int, default=0, help="only time this many batches")
    parser.add_argument(
        "--out", help="default: benchmarks/results/sequential_<dataset>_<model>.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = Path(args.config or ROOT.parent / "configs" / args.dataset / f"{args.model}.yaml")
    spec = resolve_config(
        args.model, args.dataset, config_path=config, overrides=parse_overrides(args.set)
    )
    data = prepare_data(spec)
    split = data.split
    model = get_model_class(spec.model)(spec.model_config, max_seconds=args.max_minutes * 60)
    assert isinstance(model, SequentialRecommender)
    if args.measure:
        timing = {
            "benchmark": "training step time",
            **_run_fields(spec, args.threads),
            **measure(model, split, args.measure),
        }
        print(json.dumps({k: v for k, v in timing.items() if k != "config"}, indent=2))
        if args.out:
            _write(Path(args.out), timing)
        return

    out = Path(args.out or ROOT / "results" / f"sequential_{args.dataset}_{args.model}.json")
    result: dict[str, Any] = {
        "benchmark": "sequential",
        **_run_fields(spec, args.threads),
        "dataset_fingerprint": data.fingerprint,
        "protocol": {
            "split": split.protocol,
            "ranking": "full, all items",
            "exclude": "none (history items not masked)",
            "selection": f"epoch with the best validation {spec.model_config.early_stopping}",
            "n_test_users": len(split.test.active_users),
        },
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "max_minutes": args.max_minutes,
        "status": "running",
        "epochs": [],
        **TARGETS.get((spec.model, spec.dataset), {}),
    }
    start = time.perf_counter()
    checkpoint = spec.model_config.checkpoint
    previous = saved_history(checkpoint) if checkpoint else []
    model.epoch_callbacks.append(_EpochTracker(model, split, result, out, start, previous))
    model.fit(split.train, split.valid)
    result["status"] = f"finished: {model.stop_reason}"
    result["best_epoch"] = model.best_epoch
    result["test"] = _test(model, split, exclude=[])
    exclude = [split.train.binary_csr] + ([split.valid.binary_csr] if split.valid else [])
    result["test_history_masked"] = _test(model, split, exclude=exclude)
    result["fit_seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time()
    result["peak_rss_mb"] = peak_rss_mb()
    _summarise(result)
    _write(out, result)
    shown = ("status", "best_epoch", "test", "test_at_best_valid", "seconds_per_epoch")
    print(json.dumps({k: result.get(k) for k in shown}, indent=2))


def _run_fields(spec: RunSpec, threads: int) -> dict[str, Any]:
    """What every record of this script states about the run: model, data, resolved config,
    command line, threads and versions."""
    return {
        "model": spec.model,
        "dataset": spec.dataset,
        "config": spec.to_dict(),
        "command": "python " + " ".join(sys.argv),
        "threads": threads,
        "versions": versions(),
    }


def measure(model: SequentialRecommender, split: Split, n_batches: int) -> dict[str, Any]:
    """Seconds per training batch (after two warm-up batches) and the implied epoch time.
    TIGER gets training-free RQ-KMeans semantic IDs of its configured item features: a step's
    cost depends on the ID vocabulary's shape, not on how the codes were learned."""
    torch.manual_seed(model.config.seed)
    model.user_ids, model.item_ids = split.train.user_ids, split.train.item_ids
    if isinstance(model, TIGER):
        cfg = model.config
        features = item_feature_matrix(
            split.train, cfg.item_features, cfg.text_model, cfg.text_fields, progress=False
        )
        ids = cfg.semantic_ids.model_copy(update={"method": "rqkmeans"})
        model.id_map, _ = build_semantic_ids(features, ids)
    model.dims = model._dims(split.train)
    model.module = model.train_module = model._build(model.dims)
    optimizer = torch.optim.Adam(model.module.parameters(), lr=model.config.lr)
    batches = list(model._batches(split.train, np.random.default_rng(0)))
    times = []
    for batch in batches[: n_batches + 2]:
        tic = time.perf_counter()
        loss = model._loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tic)
    per_batch = float(np.mean(times[2:]))
    return {
        "batches_per_epoch": len(batches),
        "seconds_per_batch": per_batch,
        "seconds_per_epoch_estimate": per_batch * len(batches),
        "batch_size": model.config.batch_size,
        "load_average": list(os.getloadavg()),
    }


class _EpochTracker:
    """An epoch callback: records the epoch and scores the weights on test when validation
    (every ``eval_every`` epochs) improved, so ``test_at_best_valid`` is what a finished run
    would report. What it measures goes into the trainer's epoch entry too, so a resumed fit
    (``--set checkpoint=PATH``) continues the record from the checkpoint's ``previous``
    epochs."""

    def __init__(
        self,
        model: SequentialRecommender,
        split: Split,
        result: dict[str, Any],
        out: Path,
        start: float,
        previous: list[dict[str, Any]],
    ) -> None:
        self.model, self.split, self.result, self.out = model, split, result, out
        self.metric = model.config.early_stopping
        result["epochs"] = [_row(e, self.metric) for e in previous]
        self.best = max(
            (r[f"valid_{self.metric}"] for r in result["epochs"] if "test" in r), default=-np.inf
        )
        self.start = start - (previous[-1]["elapsed_seconds"] if previous else 0.0)

    def __call__(self, entry: dict[str, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        value = entry.get("valid", {}).get(self.metric)
        if value is not None and value > self.best:
            # the weights the trainer keeps (best validation so far): score them on test
            self.best = value
            split = self.split
            self.model.set_histories(*[p for p in (split.train, split.valid) if p is not None])
            extra["test"] = _test(self.model, split, exclude=[])
            self.model.set_histories(split.train)
        extra["elapsed_seconds"] = time.perf_counter() - self.start
        extra["cpu_seconds"] = time.process_time()  # this process, all threads, since start
        self.result["epochs"].append(_row(entry | extra, self.metric))
        _summarise(self.result)
        _write(self.out, self.result)
        return extra


def _row(entry: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """The record's line for a trainer epoch entry."""
    row: dict[str, Any] = {k: entry[k] for k in ("epoch", "loss", "seconds")}
    value = entry.get("valid", {}).get(metric)
    if value is not None:
        row[f"valid_{metric}"] = value
    keys = ("test", "elapsed_seconds", "cpu_seconds")
    return row | {k: entry[k] for k in keys if k in entry}


def _test(model: SequentialRecommender, split: Split, exclude: list[Any]) -> dict[str, float]:
    res = evaluate(model, split.test, exclude=exclude, ks=KS, beyond=False)
    keep = ("hr", "recall", "ndcg", "mrr")
    return {k: v for k, v in res.summary.items() if k.split("@")[0] in keep}


def _summarise(result: dict[str, Any]) -> None:
    epochs = result["epochs"]
    if not epochs:
        return
    key = next((k for e in epochs for k in e if k.startswith("valid_")), None)
    if key is not None:
        best = max(epochs, key=lambda e: e.get(key, -np.inf))  # first of equal values
        result["best_valid_epoch_so_far"] = best["epoch"]
        result["test_at_best_valid"] = best["test"]
    result["seconds_per_epoch"] = float(np.mean([e["seconds"] for e in epochs]))


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
