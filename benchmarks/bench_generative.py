"""Generative retrieval benchmarks: semantic IDs, TIGER vs SASRec, and the preference-discerning
benchmark (SASRec, TIGER, Mender-Emb, Mender-Tok side by side).

``--part tiger``: on a real dataset (default ``amazon-scientific``) embeds item text with
all-MiniLM-L6-v2 (cached), builds semantic IDs with RQ-VAE and RQ-KMeans (codebook usage,
collision rate), trains TIGER (config ``configs/<dataset>/tiger.yaml``) and SASRec on the same
leave-one-out split, each under a wall-clock budget, and reports full-ranking test
Recall/NDCG@10 (history items not masked) and TIGER's invalid-ID rate with and without the
trie constraint. Writes ``results/generative_<dataset>_tiger.json``.

``--part preferences``: :func:`polyrec.bench.preferences.run_preference_benchmark` (also
``polyrec bench preferences``): extractive preferences from review text; SASRec, TIGER,
Mender-Emb and Mender-Tok (each Mender also with the official code's optional training data)
on one split, scored on the five axes of :mod:`polyrec.models.generative.benchmark`. On
``synthetic`` (item categories and rating-consistent reviews) the right answer is known. Writes
``results/generative_<dataset>_preferences.json``.

    POLYREC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/bench_generative.py \\
        --part tiger --dataset amazon-scientific --max-minutes 10
    OMP_NUM_THREADS=1 python benchmarks/bench_generative.py --part preferences --dataset synthetic
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from polyrec.bench.preferences import (
    EXTRA_DATA,
    MODELS,
    benchmark_dataset,
    run_preference_benchmark,
)
from polyrec.config import load_yaml
from polyrec.data.registry import load_dataset
from polyrec.data.split import leave_one_out
from polyrec.eval import evaluate
from polyrec.features.text import embed_item_texts
from polyrec.models.base import Recommender
from polyrec.models.generative.semantic_ids import (
    SemanticIdConfig,
    build_semantic_ids,
)
from polyrec.models.generative.tiger import TIGER
from polyrec.models.sequential.sasrec import SASRec
from polyrec.models.torch_base import TorchRecommender
from polyrec.record import peak_rss_mb, versions

ROOT = Path(__file__).resolve().parent
KS = (5, 10)
PAPER = {"amazon-beauty": {"tiger": {"recall@10": 0.0648, "ndcg@10": 0.0384}}}


class TimeBudget(Exception):
    """Raised by SIGALRM when a training run's budget is spent."""


def _alarm(signum: int, frame: Any) -> None:
    raise TimeBudget


def fit_within(model: Recommender, train: Any, valid: Any, minutes: float) -> dict[str, Any]:
    """Fit under a wall-clock budget; a run cut short keeps the weights it has reached."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(minutes * 60)))
    start, cpu = time.perf_counter(), time.process_time()
    status = "finished"
    # the trainer hands its history over only when fit returns: keep a cut-short run's epochs
    seen: list[dict[str, Any]] = []
    if isinstance(model, TorchRecommender):
        model.epoch_callbacks.append(seen.append)
    try:
        model.fit(train, valid)
        signal.alarm(0)
    except TimeBudget:
        status = f"stopped by the {minutes} min budget (weights as reached, not best-valid)"
        model.module.eval()
        if isinstance(model, SASRec | TIGER):
            model.set_histories(train, valid)
    return {
        "status": status,
        "fit_seconds": time.perf_counter() - start,
        "fit_cpu_seconds": time.process_time() - cpu,
        "epochs_run": len(seen),
        "best_epoch": getattr(model, "best_epoch", None),
        "history": [
            {k: v for k, v in h.items() if k in ("epoch", "loss", "seconds", "valid")} for h in seen
        ],
    }


def test_metrics(model: Recommender, test: Any) -> dict[str, float]:
    result = evaluate(model, test, exclude=[], ks=KS, beyond=False)
    return {k: float(v) for k, v in result.summary.items() if k.split("@")[0] in ("recall", "ndcg")}


def part_tiger(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.dataset)
    split = leave_one_out(ds)
    cfg = load_yaml(ROOT.parent / "configs" / args.dataset / "tiger.yaml")
    for key in ("model", "dataset", "split"):
        cfg.pop(key, None)
    t0 = time.perf_counter()
    emb = embed_item_texts(
        ds,
        cfg.get("text_model", "all-MiniLM-L6-v2"),
        fields=tuple(cfg.get("text_fields", ("title", "brand", "categories"))),
        progress=False,
    )
    out: dict[str, Any] = {
        "embedding": {"shape": list(emb.shape), "seconds": time.perf_counter() - t0}
    }
    sid = SemanticIdConfig(**cfg.get("semantic_ids", {}))
    reports, maps = {}, {}
    for method in ("rqvae", "rqkmeans"):
        t0 = time.perf_counter()
        one = SemanticIdConfig(method=method, rqvae=sid.rqvae, rqkmeans=sid.rqkmeans)
        maps[method], rep = build_semantic_ids(emb, one)
        hist = rep.pop("history")
        rep["seconds"] = time.perf_counter() - t0
        if hist:
            rep["loss_first_last"] = [hist[0]["loss"], hist[-1]["loss"]]
            rep["recon_first_last"] = [hist[0]["recon"], hist[-1]["recon"]]
            rep["usage_last_epoch"] = hist[-1]["usage"]
        reports[method] = rep
    out["semantic_ids"] = reports
    tiger = TIGER(cfg, progress=False)
    tiger.use_semantic_ids(maps[sid.method], reports[sid.method])  # built once, above
    out["tiger"] = fit_within(tiger, split.train, split.valid, args.max_minutes)
    out["tiger"]["test"] = test_metrics(tiger, split.test)
    out["tiger"]["semantic_id_report"] = {
        k: v for k, v in tiger.semantic_id_report.items() if k != "history"
    }
    users = split.test.active_users[:2000]
    for constrained in (True, False):
        tiger.reset_invalid_count()
        for start in range(0, len(users), 256):
            tiger.generate(
                tiger.histories[users[start : start + 256]],
                users[start : start + 256],
                constrained=constrained,
            )
        out["tiger"][f"invalid_id_rate_{'constrained' if constrained else 'unconstrained'}"] = (
            tiger.invalid_id_rate
        )
    sas_cfg = load_yaml(ROOT.parent / "configs" / "amazon-beauty" / "sasrec.yaml")
    for key in ("model", "dataset", "split"):
        sas_cfg.pop(key, None)
    sasrec = SASRec(sas_cfg, progress=False)
    out["sasrec"] = fit_within(sasrec, split.train, split.valid, args.max_minutes)
    out["sasrec"]["test"] = test_metrics(sasrec, split.test)
    out["sasrec"]["config"] = sas_cfg
    out["tiger"]["config"] = tiger.config.model_dump()
    if args.dataset in PAPER:
        out["paper"] = PAPER[args.dataset]
    return out


def part_preferences(args: argparse.Namespace) -> dict[str, Any]:
    extra = {**EXTRA_DATA, "steering_pairs": True} if args.steering_pairs else EXTRA_DATA
    return run_preference_benchmark(
        benchmark_dataset(args.dataset),
        args.models or MODELS,
        max_minutes=args.max_minutes,
        extra_data=extra,
        log=print,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("tiger", "preferences"), default="tiger")
    parser.add_argument("--dataset", default="amazon-scientific")
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--models", nargs="+", choices=MODELS, help="preferences: models to run")
    parser.add_argument(
        "--steering-pairs",
        action="store_true",
        help="preferences: the _data Menders also train on steering pairs (ablation)",
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    body = part_tiger(args) if args.part == "tiger" else part_preferences(args)
    result = {
        "benchmark": f"generative_{args.part}",
        "dataset": args.dataset,
        "protocol": "leave-one-out, full ranking over all items, history items not masked",
        "command": "python " + " ".join(sys.argv),
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "versions": versions(),
        **body,
    }
    out = Path(args.out or ROOT / "results" / f"generative_{args.dataset}_{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(
        json.dumps({k: result[k] for k in result if k not in ("versions",)}, default=float)[:3000]
    )


if __name__ == "__main__":
    main()
