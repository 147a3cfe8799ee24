"""Unlearning comparison on a real dataset: gold retrain vs SISA vs fine-tune vs MMRecUn.

Base model: FREEDOM with MiniLM text features (configs/<dataset>/freedom.yaml), trained for a
fixed number of epochs (no early stopping, so gold and the original model get the same budget).
For each seed and forget request (random 5% of interactions, 1% of users, 1% of items): the
original model is trained on the training split, then each method unlearns the request, and
polyrec.unlearn.evaluate reports retain-test Recall/NDCG@20, forget-set Recall@20 and mean
percentile rank, the membership-inference AUC and the wall time (speed-up vs gold). SISA is its
own ensemble (4 user-partitioned FREEDOM shards, each trained the same number of epochs); its
time is the time to retrain the affected shards. The split is 70/10/20 per user; MMRecUn's
stopping rule reads the validation part, which no model trains on.

    OMP_NUM_THREADS=1 python benchmarks/bench_unlearn.py --dataset amazon-scientific
    python benchmarks/bench_unlearn.py --requests users:0.01 --first-seed 3 --seeds 6 \
        --out benchmarks/results/unlearn_amazon-scientific_users_seeds3-8.json   # more seeds
    python benchmarks/bench_unlearn.py --requests users:0.01 --methods gold,mmrecun \
        --first-seed 10 --seeds 60 --out ...   # a precise forget-recall gap: gold vs MMRecUn

The file is rewritten after every seed, so an interrupted run keeps the seeds it finished.

Writes benchmarks/results/unlearn_<dataset>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from mm_common import ROOT, add_unlearning_arguments, unlearning_setup
from scipy import stats

from polyrec.models.multimodal.freedom import FREEDOM
from polyrec.record import now_utc, peak_rss_mb, versions
from polyrec.unlearn import SISA, ForgetRequest, apply_request, unlearn
from polyrec.unlearn.base import unwrap
from polyrec.unlearn.evaluate import unlearning_report

METHODS = ("gold", "sisa", "finetune", "mmrecun")


def main() -> None:
    parser = argparse.ArgumentParser()
    add_unlearning_arguments(parser)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, +1, ...")
    parser.add_argument("--out", help="default: results/unlearn_<dataset>.json")
    parser.add_argument("--mmrecun-epochs", type=int, default=None, help="default: mmrecun's (4)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated subset of " + ",".join(METHODS),
    )
    args = parser.parse_args()
    methods = [m for m in METHODS if m in args.methods.split(",")]
    torch.set_num_threads(1)
    opts, feature_info, split, requests = unlearning_setup(args)
    train, test = split.train, split.test
    rows = []
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for seed in seeds:
        start = time.perf_counter()
        original = FREEDOM({**opts, "seed": seed}).fit(train)
        original_seconds = time.perf_counter() - start
        print(f"seed {seed}: original {original_seconds:.0f}s", flush=True)
        if "sisa" in methods:
            sisa = SISA(base="freedom", base_config=opts, n_shards=args.shards, seed=seed)
            sisa.fit(train)
        for kind, fraction in requests:
            request = ForgetRequest.sample(train, kind, fraction, seed=seed)
            applied = apply_request(train, request)
            results = {}
            runs = [
                ("gold", original, "retrain", {}),
                *([("sisa", sisa, "sisa", {})] if "sisa" in methods else []),
                ("finetune", original, "finetune", {"epochs": args.finetune_epochs, "seed": seed}),
                (
                    "mmrecun",
                    original,
                    "mmrecun",
                    {"seed": seed, "reference": split.valid}
                    | ({"epochs": args.mmrecun_epochs} if args.mmrecun_epochs else {}),
                ),
            ]
            for label, model, method, options in runs:
                if label not in methods:
                    continue
                work = copy.deepcopy(model)
                start = time.perf_counter()
                out = unlearn(work, train, request, method, **options)
                seconds = time.perf_counter() - start
                rep = unlearning_report(
                    out, applied, test, seconds=seconds, gold=results.get("gold"), seed=seed
                )
                if label == "sisa":
                    rep["retrained_shards"] = list(work.last_retrained)
                if label == "mmrecun":
                    rep["unlearning_batches"] = unwrap(out)[0].history[-1]["unlearning_batches"]
                results[label] = rep
                rows.append(
                    {
                        "seed": seed,
                        "request": f"{kind} {fraction:.0%}",
                        "n_forget": int(applied.forget.n_interactions),
                        "method": label,
                        **rep,
                    }
                )
                print(
                    f"  {kind} {fraction:.0%} {label:8s} retain R@20 "
                    f"{rep['retain_recall@20']:.4f} forget R@20 "
                    f"{rep.get('forget_recall@20', float('nan')):.4f} MIA "
                    f"{rep.get('mia_auc') or float('nan'):.3f} {seconds:.1f}s",
                    flush=True,
                )
        path = write_results(
            args, opts, feature_info, seeds[: seeds.index(seed) + 1], methods, rows
        )
    print(f"wrote {path}")


def write_results(
    args: argparse.Namespace,
    opts: dict,
    feature_info: dict,
    seeds: list[int],
    methods: list[str],
    rows: list[dict],
) -> Path:
    """Write the rows so far, their mean and std per request and method, and MMRecUn's paired
    forget-recall gap to gold; returns the file's path."""
    summary = {}
    for req in sorted({r["request"] for r in rows}):
        for method in methods:
            sel = [r for r in rows if r["request"] == req and r["method"] == method]
            keys = [k for k in sel[0] if isinstance(sel[0][k], float)]
            summary.setdefault(req, {})[method] = {
                k: {
                    "mean": float(np.mean([r[k] for r in sel if r.get(k) is not None])),
                    "std": float(np.std([r[k] for r in sel if r.get(k) is not None])),
                }
                for k in keys
                if any(r.get(k) is not None for r in sel)
            }
        if {"gold", "mmrecun"} <= set(methods):
            summary[req]["mmrecun_vs_gold_forget_recall"] = forget_recall_gap(
                [r for r in rows if r["request"] == req]
            )
    out = {
        "benchmark": "unlearning: gold retrain vs SISA vs fine-tune vs MMRecUn",
        "created": now_utc(),
        "dataset": args.dataset,
        "base_model": {"name": "freedom", "config": opts, "features": feature_info},
        "protocol": {
            "split": "ratio 0.7/0.1/0.2 per user, seed 0 (validation: MMRecUn's stopping rule)",
            "seeds": seeds,
            "methods": methods,
            "mmrecun_max_epochs": args.mmrecun_epochs or 4,
            "mmrecun_stopping_rule": "forget Recall@20 <= validation Recall@20, same users",
            "finetune_epochs": args.finetune_epochs,
            "sisa_shards": args.shards,
            "sisa_partition": "user",
            "k": 20,
        },
        "summary": summary,
        "rows": rows,
        "peak_rss_mb": peak_rss_mb(),
        "versions": versions(),
    }
    path = Path(args.out or ROOT / "benchmarks" / "results" / f"unlearn_{args.dataset}.json")
    path.write_text(json.dumps(out, indent=2, default=str))
    return path


def forget_recall_gap(rows: list[dict], n_boot: int = 10_000) -> dict:
    """MMRecUn's forget Recall@20 relative to gold's, paired by seed: the ratio of the means
    minus one, a 95% bootstrap interval over seeds, and the paired t-test p-value."""
    by_seed = {
        (r["seed"], r["method"]): r["forget_recall@20"]
        for r in rows
        if r.get("forget_recall@20") is not None
    }
    seeds = sorted({s for s, m in by_seed if m == "mmrecun" and (s, "gold") in by_seed})
    gold = np.array([by_seed[s, "gold"] for s in seeds])
    mm = np.array([by_seed[s, "mmrecun"] for s in seeds])
    if len(seeds) < 2 or gold.sum() == 0:
        return {"seeds": len(seeds)}
    pick = np.random.default_rng(0).integers(0, len(seeds), size=(n_boot, len(seeds)))
    ratios = mm[pick].sum(1) / np.maximum(gold[pick].sum(1), 1e-12) - 1
    return {
        "seeds": len(seeds),
        "gold_mean": float(gold.mean()),
        "mmrecun_mean": float(mm.mean()),
        "relative_gap": float(mm.mean() / gold.mean() - 1),
        "relative_gap_ci95": [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))],
        "paired_t_p": float(stats.ttest_rel(mm, gold).pvalue),
    }


if __name__ == "__main__":
    main()
