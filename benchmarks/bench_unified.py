"""UniMP-style unified model vs single-task models of the same size (and cheap specialists).

Writes ``benchmarks/results/unified_<dataset>.json``: one record per model with per-task test
metrics (leave-one-out: the last event of each user is the test target, the one before it
validation; histories for the test are training + validation events), the fit/eval seconds,
and a ``comparison`` block (unified vs single-task, relative difference per headline metric).

- ``synthetic`` (default): all four tasks (ratings, reviews, titles and item vectors).
  Models: the unified model (task sampling weights 1:1:1:1), four single-task models of the same
  architecture and batch size, each trained on its task alone for ``--steps`` steps, the
  unified model for four times as many (so it sees as many examples of each task as each
  single-task model: multi-task training on the union of the tasks' data), SASRec (next
  item), biased MF (rating; Koren et al. 2009, trained on MSE), and three floors: training
  popularity as the next item, the global-mean rating and the most frequent training review
  as the explanation. ``--temperature`` sets the generator's choice temperature (its default
  0.3 leaves popularity above every next-item model; 0.1 makes choices follow taste).
- ``amazon-scientific`` (``--dataset amazon-scientific``, needs ``POLYREC_DATA_DIR``): next item
  and search only (the data has titles and categories, no ratings or reviews); items' MiniLM
  text embeddings as features; ``--max-users`` keeps the CPU cost bounded.

Because the unified model then trains four times as many steps, ``--controls next,search``
(the default) also trains compute-matched single-task controls (as many steps as the unified
model) with their own comparison (``summary_equal_steps``), TIGER (same semantic IDs and width,
early-stopped, with and without the paper's user tokens, and with as many transformer blocks as
the unified model: :data:`TIGER_VARIANTS`), the unified model early-stopped on
next-item validation NDCG@10 as TIGER is, the unified model early-stopped on all its tasks'
validation (``tasks_geomean@10``: the geometric mean of the tasks' headline metrics), and
every single-task model early-stopped on its own task's validation metric, in rounds of the
same number of examples of its task (``summary_early_stopped`` and
``summary_early_stopped_all_tasks``: the protocols' best checkpoints side by side), and the
unified model early-stopped on all tasks with task sampling weights paced by how many rounds each
single-task model needed (``summary_paced_all_tasks``; see :func:`convergence_pacing`), the
latter also with twice the layers, as many transformer blocks as TIGER's encoder and decoder
together (its next item against TIGER's: ``summary_paced_tiger_depth_vs_tiger``). ``--resume``
keeps the records an earlier results file has and trains only the missing models;
``--models`` trains only the named records.

CPU budget: run with ``OMP_NUM_THREADS=1``; on synthetic each seed takes about 120 CPU-minutes
of fitting with the controls (three seeds by default, each with its own generated data);
``--jobs 3`` trains the three seeds side by side, one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyrec.data.dataset import Dataset
from polyrec.data.split import Split, leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.eval import evaluate
from polyrec.models.classic.pop import Pop
from polyrec.models.generative.tiger import TIGER
from polyrec.models.sequential.sasrec import SASRec
from polyrec.models.unified import UniMP
from polyrec.models.unified.evaluate import evaluate_tasks, text_metrics
from polyrec.models.unified.tokens import TASKS
from polyrec.models.unified.unimp import ERROR_METRICS, VALIDATION_HEADLINES

RESULTS = Path(__file__).parent / "results"
HEADLINE = {"next": "ndcg@10", "search": "ndcg@10", "rating": "rmse", "explanation": "rouge_l"}
# each task's validation metric for early stopping (UniMP's names: error metrics negated)
EARLY_STOPPING = {task: name.format(k=10) for task, name in VALIDATION_HEADLINES.items()}


def unimp_config(dataset: str, steps: int, seed: int) -> dict[str, Any]:
    """The shared architecture and training budget of every unified / single-task model."""
    common = {
        "dim": 64,
        "heads": 2,
        "layers": 2,
        "ffn_dim": 256,
        "dropout": 0.1,
        "max_len": 5,
        "max_title_tokens": 8,
        "max_review_tokens": 6,
        "max_explanation_tokens": 12,
        "batch_size": 64,
        "lr": 2e-3,
        "epochs": 1,
        "steps_per_epoch": steps,
        "early_stopping": None,
        "beams": 20,
        "progress": False,
        "seed": seed,
    }
    if dataset == "synthetic":
        common.update(
            item_features="vector:latent",
            text_vocab_size=500,
            semantic_ids={"method": "rqkmeans", "rqkmeans": {"levels": 2, "codebook_size": 16}},
        )
    else:
        common.update(
            item_features="text",
            text_fields=("title", "brand", "categories"),
            history_fields=("feature", "title"),
            text_vocab_size=3000,
            semantic_ids={"method": "rqkmeans", "rqkmeans": {"levels": 3, "codebook_size": 32}},
        )
    return common


def load(
    dataset: str, max_users: int | None, seed: int, temperature: float | None = None
) -> tuple[Dataset, Split]:
    if dataset == "synthetic":
        sharpness = {} if temperature is None else {"temperature": temperature}
        ds = make_synthetic(n_users=500, n_items=200, n_interactions=8000, seed=seed, **sharpness)
    else:
        from polyrec.data.registry import load_dataset

        ds = load_dataset(dataset, os.environ.get("POLYREC_DATA_DIR"))
        if max_users is not None and ds.n_users > max_users:
            keep = ds.users < max_users
            ds = ds.with_interactions(keep)
    return ds, leave_one_out(ds)


def fit_unimp(
    name: str,
    tasks: dict[str, float],
    cfg: dict[str, Any],
    split: Split,
    early_stopped: bool = False,
) -> dict[str, Any]:
    """A fixed step budget (no validation pass), or with ``early_stopped`` the weights of the
    best validation value of the config's ``early_stopping`` metric."""
    model = UniMP(cfg, tasks=tasks)
    start = time.process_time()
    model.fit(split.train, split.valid if early_stopped else None)
    fit_s = time.process_time() - start
    model.set_histories(split.train, split.valid)
    start = time.process_time()
    metrics = evaluate_tasks(model, split.test, ks=(5, 10, 20))
    record: dict[str, Any] = {
        "model": name,
        "tasks": tasks,
        "metrics": {"test": metrics},
        "loss_history": [h["loss"] for h in model.history],
        "valid_history": [h["valid"][cfg["early_stopping"]] for h in model.history if "valid" in h],
        "best_epoch": model.best_epoch,
        "timings": {"fit_cpu_seconds": fit_s, "eval_cpu_seconds": time.process_time() - start},
        "semantic_ids": {
            k: model.semantic_id_report[k]
            for k in ("collision_rate", "unique_fraction", "prefix_sizes")
        },
    }
    if "next" in model.config.active_tasks():
        # the same next-item quality through the shared Recommender evaluator
        res = evaluate(model, split.test, exclude=[], ks=(10, 20), beyond=False)
        record["metrics"]["test_shared_evaluator"] = {k: float(v) for k, v in res.summary.items()}
    print(name, json.dumps(metrics, default=str)[:400], flush=True)
    return record


def fit_sasrec(split: Split, seed: int, epochs: int) -> dict[str, Any]:
    model = SASRec(
        max_len=20,
        dim=64,
        blocks=2,
        heads=1,
        dropout=0.2,
        epochs=epochs,
        batch_size=128,
        early_stopping=None,
        progress=False,
        seed=seed,
    )
    start = time.process_time()
    model.fit(split.train)
    fit_s = time.process_time() - start
    model.set_histories(split.train, split.valid)
    res = evaluate(model, split.test, exclude=[], ks=(5, 10, 20), beyond=False)
    return {
        "model": "sasrec",
        "tasks": {"next": 1.0},
        "metrics": {"test": {"next": {k: float(v) for k, v in res.summary.items()}}},
        "timings": {"fit_cpu_seconds": fit_s},
    }


# TIGER variants: (the paper's 2,000 hashed user tokens?, encoder and decoder layers each as a
# fraction of the unified model's layers); at 1/2, TIGER has as many transformer blocks as the
# unified model, at 1 twice as many
TIGER_VARIANTS = {
    "tiger": (True, 1.0),
    "tiger_no_user_tokens": (False, 1.0),
    "tiger_unified_depth": (True, 0.5),
}


def fit_tiger(split: Split, seed: int, dataset: str, name: str) -> dict[str, Any]:
    """TIGER (variant ``name`` of :data:`TIGER_VARIANTS`) with the same semantic IDs and width
    as the UniMP models, trained with early stopping on the validation split (the unified model
    has no user tokens)."""
    base = unimp_config(dataset, 1, seed)
    user_tokens, depth = TIGER_VARIANTS[name]
    layers = max(1, round(base["layers"] * depth))
    model = TIGER(
        n_user_tokens=2000 if user_tokens else 0,
        dim=base["dim"],
        heads=base["heads"],
        encoder_layers=layers,
        decoder_layers=layers,
        ffn_dim=base["ffn_dim"],
        dropout=base["dropout"],
        max_len=base["max_len"],
        item_features=base["item_features"],
        semantic_ids=base["semantic_ids"],
        beams=base["beams"],
        epochs=50,
        batch_size=base["batch_size"],
        lr=base["lr"],
        progress=False,
        seed=seed,
    )
    start = time.process_time()
    model.fit(split.train, split.valid)
    fit_s = time.process_time() - start
    model.set_histories(split.train, split.valid)
    res = evaluate(model, split.test, exclude=[], ks=(5, 10, 20), beyond=False)
    return {
        "model": name,
        "tasks": {"next": 1.0},
        "metrics": {"test": {"next": {k: float(v) for k, v in res.summary.items()}}},
        "timings": {"fit_cpu_seconds": fit_s},
    }


def fit_popularity(split: Split) -> dict[str, Any]:
    """Next item by training popularity: the floor a sequential model has to clear."""
    model = Pop().fit(split.train)
    res = evaluate(model, split.test, exclude=[], ks=(5, 10, 20), beyond=False)
    return {
        "model": "popularity",
        "tasks": {"next": 1.0},
        "metrics": {"test": {"next": {k: float(v) for k, v in res.summary.items()}}},
    }


def fit_mf(split: Split, seed: int, dim: int = 16, epochs: int = 200) -> dict[str, Any]:
    """Biased MF on the training + validation ratings (full-batch Adam on MSE + L2)."""
    torch.manual_seed(seed)
    tr = [split.train, split.valid]
    u = torch.from_numpy(np.concatenate([d.users for d in tr]))
    i = torch.from_numpy(np.concatenate([d.items for d in tr]))
    r = torch.from_numpy(np.concatenate([d.ratings for d in tr]).astype(np.float32))
    n_u, n_i = split.train.n_users, split.train.n_items
    mu = float(r.mean())
    p = torch.nn.Parameter(0.01 * torch.randn(n_u, dim))
    q = torch.nn.Parameter(0.01 * torch.randn(n_i, dim))
    bu = torch.nn.Parameter(torch.zeros(n_u))
    bi = torch.nn.Parameter(torch.zeros(n_i))
    opt = torch.optim.Adam([p, q, bu, bi], lr=0.02)
    start = time.process_time()
    for _ in range(epochs):
        pred = mu + bu[u] + bi[i] + (p[u] * q[i]).sum(1)
        reg = 0.05 * (p[u].pow(2).sum(1) + q[i].pow(2).sum(1)).mean()
        loss = ((pred - r) ** 2).mean() + reg
        opt.zero_grad()
        loss.backward()
        opt.step()
    te = split.test
    with torch.no_grad():
        tu, ti = torch.from_numpy(te.users), torch.from_numpy(te.items)
        pred = (mu + bu[tu] + bi[ti] + (p[tu] * q[ti]).sum(1)).clamp(1, 5).numpy()
    truth = te.ratings.astype(np.float64)
    glob = np.full(len(truth), mu)
    return {
        "model": "mf",
        "tasks": {"rating": 1.0},
        "metrics": {
            "test": {
                "rating": _rating(pred, truth),
                "rating_global_mean": _rating(glob, truth),
            }
        },
        "timings": {"fit_cpu_seconds": time.process_time() - start},
    }


def review_floor(split: Split) -> dict[str, Any]:
    """The most frequent training review as every explanation."""
    reviews = split.train.interaction_data["review"].astype(str)
    top = reviews.value_counts().index[0]
    refs = split.test.interaction_data["review"].astype(str).tolist()
    return {
        "model": "most_frequent_review",
        "tasks": {"explanation": 1.0},
        "metrics": {"test": {"explanation": text_metrics([top] * len(refs), refs)}},
    }


def _rating(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
        "mae": float(np.mean(np.abs(pred - truth))),
    }


def compare(
    records: list[dict[str, Any]],
    tasks: list[str],
    single_name: str = "single_{task}",
    unified_name: str = "unimp",
) -> dict[str, Any]:
    """Unified (the record ``unified_name``) vs single-task (the record named ``single_name``)
    per headline metric: values and relative difference (positive = unified better)."""
    by_name = {r["model"]: r for r in records}
    if unified_name not in by_name:  # not among the --models trained
        return {}
    unified = by_name[unified_name]["metrics"]["test"]
    out = {}
    for task in tasks:
        single = by_name.get(single_name.format(task=task))
        if single is None:
            continue
        key = HEADLINE[task]
        a, b = unified[task][key], single["metrics"]["test"][task][key]
        sign = -1.0 if key in ERROR_METRICS else 1.0
        out[task] = {
            "metric": key,
            "unified": a,
            "single_task": b,
            "relative_gain": sign * (a - b) / abs(b) if b else None,
        }
    return out


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of each task's unified / single-task headline values and of
    the relative gain, and on how many seeds the unified model was better."""
    out = {}
    # with --models a seed may lack a comparison another seed has: only tasks every seed has
    for task in [t for t in per_seed[0] if all(t in c for c in per_seed)]:
        rows = [c[task] for c in per_seed]
        gains = np.array([r["relative_gain"] for r in rows], dtype=float)
        out[task] = {
            "metric": rows[0]["metric"],
            "unified_mean": float(np.mean([r["unified"] for r in rows])),
            "single_task_mean": float(np.mean([r["single_task"] for r in rows])),
            "relative_gain_mean": float(gains.mean()),
            "relative_gain_std": float(gains.std()),
            "unified_better_seeds": int((gains > 0).sum()),
        }
    return out


EQUAL_STEPS = "single_{task}_equal_steps"
EARLY_STOPPED = "single_{task}_early_stopped"
ALL_TASKS = "unimp_early_stopped_all_tasks"
PACED = "unimp_paced_all_tasks"
# the paced model with as many transformer blocks as TIGER's encoder and decoder together
PACED_TIGER_DEPTH = "unimp_paced_all_tasks_tiger_depth"


def control_comparisons(
    tasks: list[str], controls: list[str]
) -> dict[str, tuple[list[str], str, str]]:
    """The comparisons ``--controls`` adds (``comparison_<name>`` per seed, ``summary_<name>``
    overall): tasks compared, single-task record names, unified record."""
    return {
        "equal_steps": (controls, EQUAL_STEPS, "unimp"),
        "early_stopped": (tasks, EARLY_STOPPED, "unimp_early_stopped"),
        "early_stopped_all_tasks": (tasks, EARLY_STOPPED, ALL_TASKS),
        "paced_all_tasks": (tasks, EARLY_STOPPED, PACED),
        "paced_vs_tiger": (["next"], "tiger", PACED),
        "paced_tiger_depth_vs_tiger": (["next"], "tiger", PACED_TIGER_DEPTH),
        "paced_vs_tiger_unified_depth": (["next"], "tiger_unified_depth", PACED),
    }


def convergence_pacing(records: list[dict[str, Any]], tasks: list[str]) -> dict[str, float]:
    """Task sampling weights proportional to the validation rounds each task's early-stopped
    single-task model needed to reach its best (a validation-only choice), so that in the
    unified model every task reaches its single-task optimum's number of examples at about
    the same round: a slow task (search) is not left under-trained when a fast one (next item)
    peaks, nor the fast one over-trained while the slow one catches up."""
    by_name = {r["model"]: r for r in records}
    return {t: float(by_name[EARLY_STOPPED.format(task=t)]["best_epoch"]) for t in tasks}


def early_stopped_config(
    dataset: str, steps: int, seed: int, metric: str = "ndcg@10"
) -> dict[str, Any]:
    """A budget of ``steps`` cut into validation rounds of ``steps / 6``, ``metric`` (default
    next-item NDCG@10) on the validation split after each, stop after 3 rounds without a gain
    and at most 50 rounds (TIGER's protocol and epoch cap, at the unified model's
    granularity)."""
    cfg = unimp_config(dataset, max(1, steps // 6), seed)
    cfg.update(epochs=50, eval_every=1, early_stopping=metric, patience=3)
    return cfg


def parallel(fn: Callable[..., Any], arg_tuples: list[tuple[Any, ...]], jobs: int) -> list[Any]:
    """``fn(*args)`` for each tuple, in ``jobs`` worker processes (one torch thread each)."""
    if jobs <= 1:
        return [fn(*a) for a in arg_tuples]
    # SIGTERM as an exception, so that leaving the pool's block terminates its workers: a
    # killed parent would otherwise leave them running (spawned, they outlive it)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return pool.starmap(fn, arg_tuples)


def run_seed(
    dataset: str,
    seed: int,
    tasks: list[str],
    steps: int,
    unified_steps: int,
    args: dict,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every model of the benchmark on one seed's data that ``previous`` (records of an
    earlier run) lacks: the run record and data stats."""
    ds, split = load(dataset, args["max_users"], seed, args["temperature"])
    stats = {
        "users": ds.n_users,
        "active_users": len(ds.active_users),
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "fingerprint": ds.fingerprint(),
    }
    all_tasks = dict.fromkeys(tasks, 1.0)
    unified_cfg = unimp_config(dataset, unified_steps, seed)
    single_cfg = unimp_config(dataset, steps, seed)
    models: dict[str, Callable[[], dict[str, Any]]] = {
        "unimp": lambda: fit_unimp("unimp", all_tasks, unified_cfg, split),
    }
    for task in tasks:
        name = f"single_{task}"
        models[name] = partial(fit_unimp, name, {task: 1.0}, single_cfg, split)
    models["sasrec"] = lambda: fit_sasrec(split, seed, args["sasrec_epochs"])
    models["popularity"] = lambda: fit_popularity(split)
    if dataset == "synthetic":
        models["mf"] = lambda: fit_mf(split, seed)
        models["most_frequent_review"] = lambda: review_floor(split)
    if args["controls"]:
        for name in TIGER_VARIANTS:
            models[name] = partial(fit_tiger, split, seed, dataset, name)
        es_cfg = early_stopped_config(dataset, unified_steps, seed)
        models["unimp_early_stopped"] = lambda: fit_unimp(
            "unimp_early_stopped", all_tasks, es_cfg, split, early_stopped=True
        )
        all_cfg = early_stopped_config(dataset, unified_steps, seed, "tasks_geomean@10")
        models[ALL_TASKS] = lambda: fit_unimp(
            ALL_TASKS, all_tasks, all_cfg, split, early_stopped=True
        )
        for task in args["controls"]:
            name = EQUAL_STEPS.format(task=task)
            models[name] = partial(fit_unimp, name, {task: 1.0}, unified_cfg, split)
        for task in tasks:
            name = EARLY_STOPPED.format(task=task)
            cfg = early_stopped_config(dataset, steps, seed, EARLY_STOPPING[task])
            models[name] = partial(fit_unimp, name, {task: 1.0}, cfg, split, early_stopped=True)
        # after the single-task early-stopped models, whose best rounds set its weights
        models[PACED] = lambda: fit_unimp(
            PACED, convergence_pacing(records, tasks), all_cfg, split, early_stopped=True
        )
        deep_cfg = {**all_cfg, "layers": 2 * all_cfg["layers"]}
        models[PACED_TIGER_DEPTH] = lambda: fit_unimp(
            PACED_TIGER_DEPTH, convergence_pacing(records, tasks), deep_cfg, split, True
        )
    if args["models"]:
        unknown = sorted(set(args["models"]) - set(models))
        if unknown:
            raise SystemExit(f"unknown --models {unknown}; choose from {sorted(models)}")
        models = {name: fit for name, fit in models.items() if name in args["models"]}
    records = list(previous)
    done = {r["model"] for r in previous}
    for name, fit in models.items():
        if name not in done:
            records.append(fit())
    run = {"seed": seed, "records": records, "comparison": compare(records, tasks)}
    if args["controls"]:
        for key, (compared, single, unified) in control_comparisons(
            tasks, args["controls"]
        ).items():
            run[f"comparison_{key}"] = compare(records, compared, single, unified)
    print(f"seed {seed}:", json.dumps(run["comparison"]), flush=True)
    return {"run": run, "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--steps", type=int, default=600, help="optimiser steps per single-task model")
    ap.add_argument(
        "--unified-steps",
        type=int,
        default=None,
        help="optimiser steps of the unified model (default: --steps times the number of "
        "tasks, so it sees as many examples of each task as each single-task model)",
    )
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (data and models)")
    ap.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="synthetic only: the generator's choice temperature (default its 0.3; lower = "
        "choices follow taste more sharply); results go to unified_synthetic_t<T>.json",
    )
    ap.add_argument(
        "--models",
        default="",
        help="comma-separated records to train (default: all); the paced models need the "
        "single_<task>_early_stopped ones, trained in the same call or kept by --resume",
    )
    ap.add_argument("--max-users", type=int, default=1500)
    ap.add_argument("--sasrec-epochs", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=1, help="seeds trained side by side (processes)")
    ap.add_argument(
        "--controls",
        default="next,search",
        help="comma-separated tasks whose single-task models are also trained as many steps as "
        "the unified model, beside TIGER (empty: no controls)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the models an earlier results file (same config and step budget) already "
        "has for a seed; train the rest",
    )
    args = ap.parse_args()
    if args.temperature is not None and args.dataset != "synthetic":
        ap.error("--temperature is for --dataset synthetic (the generator's choices)")
    torch.set_num_threads(1)
    wall = time.perf_counter()
    seeds = [int(x) for x in args.seeds.split(",")]
    tasks = list(TASKS) if args.dataset == "synthetic" else ["next", "search"]
    unified_steps = args.unified_steps or args.steps * len(tasks)
    controls = [t for t in args.controls.split(",") if t]
    options = {
        "max_users": args.max_users,
        "sasrec_epochs": args.sasrec_epochs,
        "controls": controls,
        "temperature": args.temperature,
        "models": [m for m in args.models.split(",") if m],
    }
    suffix = "" if args.temperature is None else f"_t{args.temperature:g}"
    path = RESULTS / f"unified_{args.dataset}{suffix}.json"
    if options["models"] and path.exists() and not args.resume:
        ap.error(f"--models without --resume would replace {path} with only those models")
    previous: dict[int, list[dict[str, Any]]] = {}
    earlier_wall = 0.0
    if args.resume and path.exists():
        earlier = json.loads(path.read_text())
        # every seed's models share the config but its seed (the file stores the first seed's)
        config = unimp_config(args.dataset, unified_steps, earlier["config"]["seed"])
        budget = {"single_task_steps": args.steps, "unified_steps": unified_steps}
        same = earlier["config"] == json.loads(json.dumps(config, default=float)) and all(
            earlier["protocol"].get(k) == v for k, v in budget.items()
        )
        if not same:
            raise SystemExit(f"{path}: config or step budget differ; rerun without --resume")
        previous = {r["seed"]: r["records"] for r in earlier["runs"]}
        earlier_wall = earlier.get("total_wall_seconds", 0.0)
    per_seed = parallel(
        run_seed,
        [
            (args.dataset, s, tasks, args.steps, unified_steps, options, previous.get(s, []))
            for s in seeds
        ],
        args.jobs,
    )
    runs = [r["run"] for r in per_seed]
    stats = {s: r["stats"] for s, r in zip(seeds, per_seed, strict=True)}
    out = {
        "benchmark": "unified",
        "dataset": args.dataset,
        "dataset_stats": stats,
        "protocol": {
            "split": "leave_one_out",
            "ranking": "full catalogue, beams=20, history not masked",
            "synthetic_temperature": args.temperature,
            "seeds": seeds,
            "single_task_steps": args.steps,
            "unified_steps": unified_steps,
            "budget": "each model sees the same number of examples of each of its tasks "
            "(unified steps = single-task steps x tasks, same batch size)",
            "equal_steps_controls": f"single-task models for {controls} trained "
            f"{unified_steps} steps, as many as the unified model",
            "early_stopped": "the unified model in rounds of "
            f"{max(1, unified_steps // 6)} steps, early-stopped on next-item validation "
            f"NDCG@10; each single-task model in rounds of {max(1, args.steps // 6)} steps "
            f"(as many examples of its task per round), early-stopped on {EARLY_STOPPING}; "
            "the all-tasks unified model early-stopped on tasks_geomean@10 (geometric mean of "
            "the tasks' validation headlines, 1 / RMSE for rating); patience 3 rounds, at most 50; "
            "the paced unified model the same, with task sampling weights proportional to the "
            "single-task early-stopped models' best rounds, and once more with twice the "
            "layers (TIGER's encoder + decoder blocks)",
        },
        "config": unimp_config(args.dataset, unified_steps, seeds[0]),
        "summary": summarize([r["comparison"] for r in runs]),
        **{
            f"summary_{name}": summarize([r[f"comparison_{name}"] for r in runs])
            if controls
            else {}
            for name in control_comparisons(tasks, controls)
        },
        "runs": runs,
        "total_fit_cpu_seconds": sum(
            rec.get("timings", {}).get("fit_cpu_seconds", 0.0)
            for run in runs
            for rec in run["records"]
        ),
        "total_wall_seconds": earlier_wall + time.perf_counter() - wall,
        "jobs": args.jobs,
        "torch_threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out["summary"], indent=2))
    print(f"wrote {path} ({out['total_wall_seconds']:.0f} s wall)")


if __name__ == "__main__":
    main()
