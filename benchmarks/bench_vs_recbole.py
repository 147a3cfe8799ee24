"""polyrec vs RecBole 1.2.1 on the same split: epoch time, full-ranking eval time and metrics.

    python benchmarks/bench_vs_recbole.py                       # ml-100k and gowalla, all models
    python benchmarks/bench_vs_recbole.py --datasets ml-100k --models bpr ease

Runs in the polyrec venv. polyrec is run in-process; RecBole runs as a subprocess of
``benchmarks/.recbole-venv/bin/python benchmarks/recbole_runner.py`` (build it once with
``bash benchmarks/make_recbole_venv.sh``). Both libraries get the *same* split, exported as
RecBole atomic files to ``benchmarks/work/<dataset>-split/`` and read by RecBole through
``benchmark_filename`` with every filter off, and the same hyper-parameters (BPR: embedding 64,
Adam lr 1e-3 (polyrec steps Gowalla's large tables with ``RowSparseAdam``, dense Adam's updates
at the cost of the batch's rows; the record says which), no L2, batch 2048, one uniform negative
per positive, same number of epochs,
both libraries' default Xavier-normal initialisation; EASE lambda 250; ItemKNN k=100, shrink
0). The two libraries run one after the other, never at once.

Protocols:

- ``ml-100k``: every rating is an implicit interaction; per-user random 80/10/10 split
  (:func:`polyrec.data.split.ratio_split`, seed 0). Test ranking masks train and valid items,
  as RecBole does in its test phase. Validation is not used for training by either library.
- ``gowalla``: the LightGCN/NGCF train/test files as given. RecBole needs a valid file, so it
  gets the test file again; it is never evaluated (``Trainer.fit`` gets no valid loader) and,
  since train and test are disjoint, its test-phase mask (train + valid - test positives) is
  exactly the training items, as polyrec's.

Each (dataset, model) writes polyrec's and RecBole's records and the ratios to
``benchmarks/results/vs_recbole_<dataset>.json``; targets (BPR epoch >= 3x faster, evaluation
>= 5x faster, metrics >= RecBole's) are printed and stored as ``checks``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
import torch

import polyrec
from polyrec.data.registry import load_dataset, load_given_split
from polyrec.data.split import Split, ratio_split
from polyrec.eval import evaluate
from polyrec.models.registry import get_model_class
from polyrec.ranking import auto_batch_size

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work"
RECBOLE_PYTHON = HERE / ".recbole-venv" / "bin" / "python"
RUNNER = HERE / "recbole_runner.py"

DATASETS = ("ml-100k", "gowalla")
MODELS = ("bpr", "pop", "itemknn", "ease")
RECBOLE_NAME = {"bpr": "BPR", "pop": "Pop", "itemknn": "ItemKNN", "ease": "EASE"}
BPR_EPOCHS = {"ml-100k": 20, "gowalla": 5}
# EASE on gowalla needs a dense 40,981^2 matrix several times over (~20 GB in either library):
# more than this 24 GB machine can hold next to anything else.
SKIP = {("gowalla", "ease"): "dense 41k x 41k item-item matrix does not fit in 24 GB"}
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
TARGETS = {"epoch_speedup": 3.0, "eval_speedup": 5.0}

HP = {
    "embedding_size": 64,
    "train_batch_size": 2048,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "ease_l2": 250.0,
    "knn_k": 100,
    "shrink": 0.0,
    "seed": 2020,
}


# ---------------------------------------------------------------------- data
def data_dir(arg: str | None) -> Path:
    """``--data-dir``, else ``$POLYREC_DATA_DIR``, else ``../shared/data`` next to the repo."""
    return Path(arg or os.environ.get("POLYREC_DATA_DIR") or HERE.parent.parent / "shared/data")


def load_split(name: str, root: Path) -> Split:
    """The benchmark split of ``name`` (see the module docstring for the protocols)."""
    if name == "ml-100k":
        ds = load_dataset(name, root, download=False)
        # implicit feedback: every rating is one interaction of weight 1
        ds = ds.with_interactions(users=ds.users, items=ds.items, timestamps=ds.timestamps)
        return ratio_split(ds, test=0.1, valid=0.1, seed=0)
    return load_given_split(name, root, download=False)


def export_atomic(split: Split, token: str) -> Path:
    """Write ``<token>.{train,valid,test}.inter`` (external ids) for RecBole; valid falls back
    to the test set when the split has none."""
    out = WORK / token
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        ds = getattr(split, part) or split.test
        frame = pd.DataFrame(
            {
                "user_id:token": ds.user_ids.to_external(ds.users),
                "item_id:token": ds.item_ids.to_external(ds.items),
            }
        )
        frame.to_csv(out / f"{token}.{part}.inter", sep="\t", index=False)
    return WORK


# ---------------------------------------------------------------------- polyrec side
def polyrec_model(model: str, seed: int, epochs: int) -> Any:
    """The polyrec model with the benchmark's hyper-parameters (RecBole's, see ``HP``)."""
    cls = get_model_class(model)
    common = {"seed": seed}
    if model == "bpr":
        options = {
            "factors": HP["embedding_size"],
            "epochs": epochs,
            "batch_size": HP["train_batch_size"],
            "lr": HP["lr"],
            "reg": HP["weight_decay"],
            "early_stopping": None,
            "progress": False,
        }
        return cls(common, **options)
    if model == "ease":
        return cls(common, l2=HP["ease_l2"])
    if model == "itemknn":
        return cls(common, k=HP["knn_k"], shrink=HP["shrink"])
    return cls(common)


def run_polyrec(split: Split, model: str, seed: int, epochs: int) -> dict[str, Any]:
    """Fit and evaluate one polyrec model in this process; a run-record-like dict."""
    rec = polyrec_model(model, seed, epochs)
    start = time.perf_counter()
    rec.fit(split.train)
    fit_seconds = time.perf_counter() - start
    exclude = {"train": split.train.binary_csr}
    if split.valid is not None:  # RecBole's test phase masks train and valid items
        exclude["valid"] = split.valid.binary_csr
    start = time.perf_counter()
    result = evaluate(
        rec,
        split.test,
        exclude=exclude,
        ks=(10, 20),
        metrics=("recall", "ndcg"),
        beyond=False,
    )
    eval_seconds = time.perf_counter() - start
    history = getattr(rec, "history", [])
    return {
        "library": "polyrec",
        "model": model,
        "seed": seed,
        "config": rec.config.model_dump(),
        "optimizer": getattr(rec, "optimizer_name", None),
        "metrics": {k: result.summary[k] for k in METRICS},
        "timings": {
            "fit_seconds": fit_seconds,
            "epoch_seconds": [h["seconds"] for h in history],
            "eval_seconds": eval_seconds,
        },
        "train_loss": [h["loss"] for h in history],
        "protocol": result.protocol,
    }


# ---------------------------------------------------------------------- RecBole side
def run_recbole(
    token: str, model: str, seed: int, epochs: int, python: Path, threads: int, n_items: int
) -> dict[str, Any]:
    """Run ``recbole_runner.py`` in the RecBole venv and parse its JSON line. RecBole scores as
    many users per evaluation batch as polyrec's default (``auto_batch_size``)."""
    cmd = [
        str(python),
        str(RUNNER),
        "--data-dir",
        str(WORK),
        "--dataset",
        token,
        "--model",
        RECBOLE_NAME[model],
        "--epochs",
        str(epochs),
        "--embedding-size",
        str(HP["embedding_size"]),
        "--train-batch-size",
        str(HP["train_batch_size"]),
        "--eval-batch-users",
        str(auto_batch_size(n_items)),
        "--lr",
        str(HP["lr"]),
        "--weight-decay",
        str(HP["weight_decay"]),
        "--reg-weight",
        str(HP["ease_l2"]),
        "--knn-k",
        str(HP["knn_k"]),
        "--shrink",
        str(HP["shrink"]),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
    ]
    return call_runner(cmd)


def call_runner(cmd: list[str]) -> dict[str, Any]:
    """Run a ``recbole_runner.py`` command line; its last JSON line, with the command added."""
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"RecBole run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1])
    out["command"] = cmd
    return out


# ---------------------------------------------------------------------- comparison
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std of metrics over seeds, median epoch / eval / fit seconds."""
    epochs = [s for r in runs for s in r["timings"]["epoch_seconds"]]
    return {
        "metrics": {
            k: {
                "mean": float(np.mean([r["metrics"][k] for r in runs])),
                "std": float(np.std([r["metrics"][k] for r in runs])),
            }
            for k in METRICS
        },
        "epoch_seconds_median": float(np.median(epochs)) if epochs else None,
        "eval_seconds_median": float(np.median([r["timings"]["eval_seconds"] for r in runs])),
        "eval_with_loader_seconds_median": float(
            np.median(
                [
                    r["timings"]["eval_seconds"] + r["timings"].get("test_loader_seconds", 0.0)
                    for r in runs
                ]
            )
        ),
        "fit_seconds_median": float(np.median([r["timings"]["fit_seconds"] for r in runs])),
        "n_runs": len(runs),
    }


def compare(ours: dict[str, Any], theirs: dict[str, Any], model: str, tol: float) -> dict:
    """Speed-ups (RecBole time / polyrec time) and the target checks."""
    eval_speedup = theirs["eval_seconds_median"] / ours["eval_seconds_median"]
    out: dict[str, Any] = {
        "eval_speedup": eval_speedup,
        "eval_with_loader_speedup": theirs["eval_with_loader_seconds_median"]
        / ours["eval_seconds_median"],
        "fit_speedup": theirs["fit_seconds_median"] / ours["fit_seconds_median"],
        "metric_ratio": {
            k: ours["metrics"][k]["mean"] / theirs["metrics"][k]["mean"]
            if theirs["metrics"][k]["mean"] > 0
            else None
            for k in METRICS
        },
    }
    checks = {
        "eval_speedup>=5": eval_speedup >= TARGETS["eval_speedup"],
        f"metrics>=recbole(-{tol:.0%})": all(
            ours["metrics"][k]["mean"] >= theirs["metrics"][k]["mean"] * (1 - tol) for k in METRICS
        ),
    }
    if model.startswith("bpr"):
        out["epoch_speedup"] = theirs["epoch_seconds_median"] / ours["epoch_seconds_median"]
        checks["epoch_speedup>=3"] = out["epoch_speedup"] >= TARGETS["epoch_speedup"]
    out["checks"] = checks
    return out


def environment() -> dict[str, Any]:
    return {
        "versions": {
            "polyrec": polyrec.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _metric_cell(ours: dict, theirs: dict, key: str) -> str:
    a, b = ours["metrics"][key], theirs["metrics"][key]
    if ours["n_runs"] > 1:
        return f"{a['mean']:.4f}±{a['std']:.4f} / {b['mean']:.4f}±{b['std']:.4f}"
    return f"{a['mean']:.4f} / {b['mean']:.4f}"


def markdown(names: list[str]) -> str:
    """The README scoreboard from the stored ``vs_recbole_<dataset>.json`` files."""
    rows = [
        "| dataset | model | epoch s polyrec / RecBole | epoch x | fit s polyrec / RecBole "
        "| eval s polyrec / RecBole | eval x | eval x with RecBole's loader build "
        "| Recall@20 polyrec / RecBole | NDCG@20 polyrec / RecBole |",
        "|---" * 10 + "|",
    ]
    for name in names:
        path = RESULTS / f"vs_recbole_{name}.json"
        if not path.is_file():
            continue
        for res in json.loads(path.read_text())["results"]:
            if "skipped" in res:
                rows.append(f"| {name} | {res['model']} | skipped: {res['skipped']} |" + " |" * 7)
                continue
            ours, theirs = res["polyrec"]["summary"], res["recbole"]["summary"]
            cmp = res["comparison"]
            if "epoch_speedup" in cmp:
                model = f"{res['model']} ({res['epochs']} epochs)"
                epoch = f"{ours['epoch_seconds_median']:.3f} / {theirs['epoch_seconds_median']:.3f}"
            else:
                model, epoch = res["model"], "-"
            rows.append(
                f"| {name} | {model} | {epoch} | {_num(cmp.get('epoch_speedup'), '.1f')} "
                f"| {ours['fit_seconds_median']:.3f} / {theirs['fit_seconds_median']:.3f} "
                f"| {ours['eval_seconds_median']:.3f} / {theirs['eval_seconds_median']:.3f} "
                f"| {cmp['eval_speedup']:.1f} "
                f"| {_num(cmp.get('eval_with_loader_speedup'), '.1f')} "
                f"| {_metric_cell(ours, theirs, 'recall@20')} "
                f"| {_metric_cell(ours, theirs, 'ndcg@20')} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--data-dir", help="shared data folder (default $POLYREC_DATA_DIR)")
    p.add_argument("--seeds", type=int, default=3, help="seeds for BPR (other models: 1)")
    p.add_argument("--bpr-epochs", type=int, help="override the per-dataset BPR epochs")
    p.add_argument("--tolerance", type=float, default=0.01, help="relative metric tolerance")
    p.add_argument("--recbole-python", type=Path, default=RECBOLE_PYTHON)
    p.add_argument("--threads", type=int, default=0, help="torch + BLAS threads, both (0: default)")
    p.add_argument(
        "--markdown", action="store_true", help="print the table of the stored results and exit"
    )
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(args.datasets))
        return
    if args.threads:  # torch's intra-op pool and the BLAS / OpenMP pools numpy and scipy use
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    if not args.recbole_python.is_file():
        raise SystemExit(
            f"{args.recbole_python} not found: run `bash benchmarks/make_recbole_venv.sh` first"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    root = data_dir(args.data_dir)
    env = environment()
    for name in args.datasets:
        split = load_split(name, root)
        token = f"{name}-split"
        export_atomic(split, token)
        record: dict[str, Any] = {
            "dataset": name,
            "protocol": {
                **split.protocol,
                "train": split.train.n_interactions,
                "valid": None if split.valid is None else split.valid.n_interactions,
                "test": split.test.n_interactions,
                "users": split.train.n_users,
                "items": split.train.n_items,
                "eval": "full ranking, train (+valid) items masked, users with a test item",
            },
            "hyperparameters": HP,
            "environment": env,
            "results": [],
        }
        out_path = RESULTS / f"vs_recbole_{name}.json"
        # models not re-run keep their stored results (each result says when it was measured)
        if out_path.exists():
            stored = json.loads(out_path.read_text())
            if stored.get("protocol") == record["protocol"]:
                record["results"] = [r for r in stored["results"] if r["model"] not in args.models]
        for model in args.models:
            if (name, model) in SKIP:
                print(f"{name:8s} {model:8s} skipped: {SKIP[(name, model)]}")
                record["results"].append({"model": model, "skipped": SKIP[(name, model)]})
                continue
            epochs = (args.bpr_epochs or BPR_EPOCHS[name]) if model == "bpr" else 1
            seeds = range(args.seeds if model == "bpr" else 1)
            theirs: list[dict[str, Any]] = []
            ours: list[dict[str, Any]] = []
            for s in seeds:
                seed = HP["seed"] + s
                theirs.append(
                    run_recbole(
                        token,
                        model,
                        seed,
                        epochs,
                        args.recbole_python,
                        args.threads,
                        split.train.n_items,
                    )
                )
                ours.append(run_polyrec(split, model, seed, epochs))
            summ_theirs = summarize(theirs)
            record["environment"]["recbole_versions"] = theirs[0]["versions"]
            summ_ours = summarize(ours)
            comparison = compare(summ_ours, summ_theirs, model, args.tolerance)
            record["results"].append(
                {
                    "model": model,
                    "recbole_model": RECBOLE_NAME[model],
                    "epochs": epochs,
                    "polyrec": {"summary": summ_ours, "runs": ours},
                    "recbole": {"summary": summ_theirs, "runs": theirs},
                    "comparison": comparison,
                    "measured": {"date": env["date"], "load_average": list(os.getloadavg())},
                }
            )
            record["results"].sort(
                key=lambda r: MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS)
            )
            print_row(name, model, summ_ours, summ_theirs, comparison)
            out_path.write_text(json.dumps(record, indent=2, default=float))
        print(f"wrote {out_path}")


def print_row(name: str, model: str, ours: dict, theirs: dict, cmp: dict) -> None:
    epoch = (
        f"epoch {_num(ours['epoch_seconds_median'])} vs {_num(theirs['epoch_seconds_median'])} "
        f"(x{cmp['epoch_speedup']:.1f})  "
        if "epoch_speedup" in cmp
        else ""
    )
    print(
        f"{name:8s} {model:17s} {epoch}"
        f"fit {_num(ours['fit_seconds_median'])} vs {_num(theirs['fit_seconds_median'])}  "
        f"eval {_num(ours['eval_seconds_median'])} vs {_num(theirs['eval_seconds_median'])} "
        f"(x{cmp['eval_speedup']:.1f}; x{cmp['eval_with_loader_speedup']:.1f} with RecBole's "
        "test-loader build)"
    )
    print(
        "    "
        + "  ".join(
            f"{k} {ours['metrics'][k]['mean']:.4f} vs {theirs['metrics'][k]['mean']:.4f}"
            for k in METRICS
        )
        + "  checks: "
        + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in cmp["checks"].items())
    )


if __name__ == "__main__":
    main()
