"""Modality ablation on a real dataset: BPR-MF, LightGCN, FREEDOM (ID only / +text), VBPR (+text).

Text features: MiniLM (polyrec.features.text) of the item text fields, PCA to 64 dims, written
as MMRec's text_feat.npy and loaded by polyrec.features.matrix. No product images exist in the
staged data, so the +image / +both rows are not run here (the image path is exercised only by
tests/test_multimodal.py on images the test writes).

    OMP_NUM_THREADS=1 python benchmarks/bench_multimodal.py --dataset amazon-scientific

Writes benchmarks/results/multimodal_<dataset>.json (a list of run records).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from mm_common import ROOT, dataset_with_text, model_options

from polyrec.data.split import ratio_split
from polyrec.eval import evaluate
from polyrec.models.registry import get_model_class
from polyrec.record import now_utc, peak_rss_mb, versions

CONFIG_DIR = {"amazon-scientific": "amazon-scientific", "amazon-beauty": "amazon-beauty"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="amazon-scientific", choices=sorted(CONFIG_DIR))
    parser.add_argument(
        "--data-dir", default=os.environ.get("POLYREC_DATA_DIR", "/work/shared/data")
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = CONFIG_DIR[args.dataset]
    freedom, features = model_options(f"{folder}/freedom.yaml")
    vbpr, _ = model_options(f"{folder}/vbpr.yaml")
    ds, feature_info = dataset_with_text(args.dataset, args.data_dir, features["text"])
    split = ratio_split(ds, test=0.2, valid=0.1, seed=args.seed)
    train_opts = {
        "epochs": args.epochs,
        "eval_every": 5,
        "patience": 4,
        "early_stopping": "recall@20",
        "progress": False,
        "seed": args.seed,
    }
    runs = [
        ("bpr", "id", {"lr": 1e-3, "batch_size": 2048}),
        ("lightgcn", "id", {"n_layers": 2, "lr": 1e-3, "batch_size": 2048}),
        ("freedom", "id", {**freedom, "modalities": []}),
        ("freedom", "id+text", freedom),
        ("vbpr", "id+text", vbpr),
    ]
    records = []
    for name, modalities, opts in runs:
        cls = get_model_class(name)
        model = cls({**opts, **train_opts})
        start = time.perf_counter()
        model.fit(split.train, split.valid)
        fit_seconds = time.perf_counter() - start
        result = evaluate(
            model,
            split.test,
            exclude={"train": split.train.binary_csr, "valid": split.valid.binary_csr},
            ks=(10, 20),
            beyond=False,
        )
        rec = {
            "model": name,
            "modalities": modalities,
            "dataset": args.dataset,
            "protocol": {
                "split": "ratio 0.7/0.1/0.2 per user",
                "seed": args.seed,
                "ranking": "full, train+valid masked",
                **result.protocol,
            },
            "features": feature_info if "text" in modalities else None,
            "config": model.config.model_dump(),
            "metrics": {"test": {k: v for k, v in result.summary.items()}},
            "best_epoch": model.best_epoch,
            "epochs_run": len(model.history),
            "timings": {"fit_seconds": fit_seconds, "eval_seconds": result.seconds},
        }
        records.append(rec)
        print(
            f"{name:9s} {modalities:8s} recall@20 {result.summary['recall@20']:.4f} "
            f"ndcg@20 {result.summary['ndcg@20']:.4f} best epoch {model.best_epoch} "
            f"fit {fit_seconds:.0f}s",
            flush=True,
        )
    out = {
        "benchmark": "multimodal modality ablation",
        "created": now_utc(),
        "note": "no item images exist in the staged data: +image and +both ablation rows are "
        "not measured; image features are covered only by unit tests on generated images",
        "peak_rss_mb": peak_rss_mb(),
        "versions": versions(),
        "runs": records,
    }
    path = ROOT / "benchmarks" / "results" / f"multimodal_{args.dataset}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
