"""polyrec vs RecBole 1.2.1 on sequential models: epoch time and metrics on the same split.

    POLYREC_DATA_DIR=/work/shared/data python benchmarks/bench_seq_vs_recbole.py \\
        --dataset amazon-beauty --models sasrec bert4rec --minutes 15

SASRec and BERT4Rec, leave-one-out (last item test, second-last validation), full ranking over
all items, history items not masked (RecBole does not mask them for sequential models either).
polyrec runs in-process; RecBole runs through ``recbole_runner.py`` in its own venv (``bash
benchmarks/make_recbole_venv.sh``), one library after the other, never at once. The split is
polyrec's, exported as one ``.inter`` file whose ``timestamp`` is each item's rank in its
user's history, so that RecBole's own time-ordered leave-one-out (``LS: valid_and_test``)
gives the same train / valid / test items; the script checks that both report the same
number of test users.

Same settings in both (from ``configs/<dataset>/<model>.yaml``, the model structure as close
as the two implementations allow): ``max_len`` items, hidden size, blocks, heads, hidden
dropout, no attention dropout, Adam with the same learning rate, full softmax cross-entropy,
validation NDCG@10 every epoch with the same patience, the best validated weights tested, and
the same budget of training-epoch seconds (``--minutes``; validation not counted). SASRec's
feed-forward width is polyrec's (``dim``, ReLU, as in the SASRec paper; RecBole's default is 4x
with GELU); BERT4Rec's is BERT's (``4 * dim``, GELU) in both, and RecBole's BERT4Rec gets
``ft_ratio = 0`` (cloze examples only, as in the paper). Early stopping: RecBole counts a
tie with the best validation as an improvement, polyrec does not. The two differ in what one
epoch is: polyrec trains each user's last ``max_len`` items once per epoch (every position
predicts its next item; BERT4Rec masks ``mask_prob`` of them), RecBole turns every prefix of
every history into its own example. Batches are matched by next-item targets: RecBole's batch
holds as many prefixes as polyrec's ``batch_size`` users have training targets on average.

Writes ``benchmarks/results/seq_vs_recbole_<dataset>_<model>.json``: both records, the median
epoch seconds and their ratio (target: polyrec >= 3x faster), epochs run, test HR / NDCG /
Recall @10 and @20 of each within the same budget (target: polyrec's >= RecBole's) and the
validation NDCG@10 of both after the same number of epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from bench_vs_recbole import RECBOLE_PYTHON, RESULTS, RUNNER, WORK, call_runner, environment

from polyrec.data.sequences import merge_interactions
from polyrec.data.split import Split
from polyrec.eval import evaluate
from polyrec.experiment import prepare_data, resolve_config
from polyrec.models.registry import get_model_class
from polyrec.ranking import auto_batch_size

HERE = Path(__file__).resolve().parent
MODELS = {"sasrec": "SASRec", "bert4rec": "BERT4Rec"}
# shared settings on top of configs/<dataset>/<model>.yaml
SHARED = {"dim": 64, "heads": 2, "blocks": 2, "attention_dropout": 0.0, "lr": 1e-3}
LOSS = {"sasrec": {"loss": "ce"}, "bert4rec": {}}  # RecBole's CE: full softmax
KS = (10, 20)
METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")
TARGET_SPEEDUP = 3.0


def export_sequences(split: Split, token: str) -> Path:
    """``<token>.inter`` with each item's rank in its user's (train, valid, test) history as
    its timestamp; checks that the last two items are the valid and test items."""
    parts = [p for p in (split.train, split.valid, split.test) if p is not None]
    seqs = merge_interactions(*parts).sequences
    users = np.repeat(np.arange(len(seqs.lengths)), seqs.lengths)
    rank = np.arange(len(seqs.items)) - np.repeat(seqs.indptr[:-1], seqs.lengths)
    # RecBole splits its prefix examples, not items: a user with 3 items would lose the
    # validation item to training there
    if (seqs.lengths == 3).any():
        raise SystemExit("users with exactly 3 items are split differently by RecBole")
    ends = seqs.indptr[1:]
    for part, offset in ((split.test, 1), (split.valid, 2)):
        if part is not None and not np.array_equal(
            seqs.items[ends[part.users] - offset], part.items
        ):
            raise SystemExit("the merged histories do not end with the valid and test items")
    ids = split.train
    frame = pd.DataFrame(
        {
            "user_id:token": ids.user_ids.to_external(users),
            "item_id:token": ids.item_ids.to_external(seqs.items),
            "timestamp:float": rank.astype(float),
        }
    )
    out = WORK / token
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / f"{token}.inter", sep="\t", index=False)
    return WORK


def run_polyrec(model_name: str, dataset: str, minutes: float) -> tuple[dict[str, Any], Split]:
    """Train with the dataset's config + ``SHARED`` under the time budget; test at the best
    validation epoch."""
    config = HERE.parent / "configs" / dataset / f"{model_name}.yaml"
    overrides = {**SHARED, **LOSS[model_name]}
    spec = resolve_config(model_name, dataset, config_path=config, overrides=overrides)
    split = prepare_data(spec).split
    model = get_model_class(model_name)(spec.model_config, max_seconds=minutes * 60)
    valid_curve: list[float] = []
    model.epoch_callbacks.append(lambda e: valid_curve.append(e["valid"]["ndcg@10"]))
    start = time.perf_counter()
    model.fit(split.train, split.valid)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    res = evaluate(model, split.test, exclude=[], ks=KS, beyond=False)
    record = {
        "library": "polyrec",
        "config": spec.to_dict(),
        "n_test_users": len(split.test.active_users),
        "metrics": {k: float(v) for k, v in res.summary.items()},
        "timings": {
            "fit_seconds": fit_seconds,
            "epoch_seconds": [h["seconds"] for h in model.history],
            "eval_seconds": time.perf_counter() - start,
        },
        "train_loss": [h["loss"] for h in model.history],
        "valid_ndcg@10": valid_curve,
        "best_epoch": model.best_epoch,
        "stopped_by": model.stop_reason,
    }
    return record, split


def run_recbole(
    model_name: str, token: str, polyrec: dict[str, Any], split: Split, minutes: float
) -> dict[str, Any]:
    """RecBole with polyrec's settings (see the module docstring)."""
    cfg = polyrec["config"]
    rows = split.train.sequences.lengths
    targets = np.minimum(rows[rows >= 2] - 1, cfg["max_len"]).sum()
    batch = round(cfg["batch_size"] * float(targets) / float((rows >= 2).sum()))
    inner = cfg["dim"] if model_name == "sasrec" else 4 * cfg["dim"]
    args = {
        "--data-dir": WORK,
        "--dataset": token,
        "--model": MODELS[model_name],
        "--epochs": cfg["epochs"],
        "--embedding-size": cfg["dim"],
        "--train-batch-size": batch,
        "--eval-batch-users": auto_batch_size(split.train.n_items),
        "--lr": cfg["lr"],
        "--weight-decay": cfg["weight_decay"],
        "--seed": cfg["seed"],
        "--threads": torch.get_num_threads(),
        "--max-seq-length": cfg["max_len"],
        "--n-layers": cfg["blocks"],
        "--n-heads": cfg["heads"],
        "--inner-size": inner,
        "--hidden-act": "relu" if model_name == "sasrec" else "gelu",
        "--hidden-dropout": cfg["dropout"],
        "--attn-dropout": cfg["attention_dropout"],
        "--mask-ratio": cfg.get("mask_prob", 0.2),
        "--patience": cfg["patience"] - 1,  # RecBole stops after more than stopping_step
        "--minutes": minutes,
    }
    cmd = [str(RECBOLE_PYTHON), str(RUNNER)] + [str(x) for kv in args.items() for x in kv]
    out = call_runner(cmd)
    out["metrics"] = {k.replace("hit@", "hr@"): v for k, v in out["metrics"].items()}
    return out


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Median epoch seconds, their ratio, and the target checks."""
    epoch = {
        name: float(np.median(rec["timings"]["epoch_seconds"]))
        for name, rec in (("polyrec", ours), ("recbole", theirs))
    }
    speedup = epoch["recbole"] / epoch["polyrec"]
    # validation NDCG@10 after the same number of epochs (the most both ran)
    both = min(len(ours["valid_ndcg@10"]), len(theirs["valid_ndcg@10"]))
    return {
        "epoch_seconds_median": epoch,
        "epochs_run": {
            "polyrec": len(ours["timings"]["epoch_seconds"]),
            "recbole": len(theirs["timings"]["epoch_seconds"]),
        },
        "epoch_speedup": speedup,
        "metrics": {
            k: {"polyrec": ours["metrics"][k], "recbole": theirs["metrics"][k]} for k in METRICS
        },
        "valid_ndcg@10_at_same_epoch": {
            "epoch": both,
            "polyrec": ours["valid_ndcg@10"][both - 1] if both else None,
            "recbole": theirs["valid_ndcg@10"][both - 1] if both else None,
        },
        "checks": {
            "epoch_speedup>=3": speedup >= TARGET_SPEEDUP,
            "metrics>=recbole": all(ours["metrics"][k] >= theirs["metrics"][k] for k in METRICS),
            "same_test_users": ours["n_test_users"] == theirs["n_test_users"],
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per run")
    p.add_argument("--threads", type=int, default=1, help="torch threads (both libraries)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for model_name in args.models:
        ours, split = run_polyrec(model_name, args.dataset, args.minutes)
        token = f"{args.dataset}-loo"
        export_sequences(split, token)
        theirs = run_recbole(model_name, token, ours, split, args.minutes)
        cmp = compare(ours, theirs)
        result = {
            "benchmark": "seq_vs_recbole",
            "dataset": args.dataset,
            "model": model_name,
            "minutes": args.minutes,
            "environment": environment(),
            "load_average_at_end": list(os.getloadavg()),
            "comparison": cmp,
            "polyrec": ours,
            "recbole": theirs,
        }
        out = RESULTS / f"seq_vs_recbole_{args.dataset}_{model_name}.json"
        out.write_text(json.dumps(result, indent=2))
        print(model_name, json.dumps(cmp, indent=2), flush=True)


if __name__ == "__main__":
    main()
