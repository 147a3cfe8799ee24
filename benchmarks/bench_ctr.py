"""Long-sequence CTR on the Taobao UserBehavior head (and ml-1m): DIN, SIM, TWIN, DARE, no-history.

Every model reads ``configs/taobao/<config>.yaml`` (``--suite ml-1m``: ``configs/ml-1m-ctr/``,
the DARE paper's protocol on MovieLens-1M's users with >= 210 ratings, genres as categories,
results ``ctr_ml-1m_<config>.json``; ``--suite synthetic``: ``configs/synthetic-ctr/``, a generated
log with histories of up to 1,000 behaviours, no download) and trains on the **same samples** (built
once from the config's protocol, sample seed 0) with the same model seeds. Per config and seed
the results file records test AUC / gAUC / logloss, the GSU's search recall (share of top-k
slots holding behaviours of the target's category), training throughput, fit time, the best
epoch and this process's peak RSS. Per-user test AUCs (mean over seeds) are kept for paired tests.

``--set key=value --tag NAME`` runs an ablation: the configs' params changed, results in
``<prefix><config>_<NAME>.json`` beside the unchanged ones (``--summarize`` lists them too).
``--resume`` keeps the seeds a results file already has (same params, protocol and samples)
and trains only the others, so ``--seeds 0 1 2 3 4`` after ``--seeds 0 1 2`` adds two.

``--timing`` measures, for search-based taobao configs, the search-stage (GSU) and full-scoring
time for 1,000 candidates against one 2,000-event history (one thread, wall and CPU time), into
``ctr_search_timing.json``.

``--conflict`` compares, per config, the gradients the item table gets from the attention
path and from the representation path (norm ratio, cosine, share of conflicting rows), at
initialisation and after training, into ``ctr_gradient_conflict_<suite>.json``.

``--summarize`` reads every ``ctr_taobao_head_<config>.json`` and writes
``ctr_taobao_head_summary.json``: mean and std over seeds per config, DeLong tests of the test
AUC of every ``dare*`` config against each other config (per seed and on seed-averaged
predictions), paired t / Wilcoxon tests of per-user test AUC between DARE and each baseline,
and DARE's attention dim 16 vs 64 (search speed-up and AUC difference; each width at the
DARE config or ablation with its best mean validation AUC; and the AUC of the positives whose
target item is already in the history, against every negative, apart from the other
positives'). The last needs the suite's data (``POLYREC_DATA_DIR``) to rebuild the samples.

    OMP_NUM_THREADS=1 POLYREC_DATA_DIR=/work/shared/data python benchmarks/bench_ctr.py \\
        --configs dare twin --seeds 0 1 2
    python benchmarks/bench_ctr.py --timing dare dare_att64 twin sim sim_soft --summarize
    python benchmarks/bench_ctr.py --suite ml-1m --configs din twin dare dare_att64 --summarize
    python benchmarks/bench_ctr.py --configs dare --set attention_std=1.414 --tag std1.41
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyrec.config import build, load_yaml, merge, parse_overrides
from polyrec.errors import PolyrecError
from polyrec.eval.ctr_metrics import auc, per_user_auc
from polyrec.eval.significance import delong_test, paired_tests, summarize_seeds
from polyrec.models.ranking.analysis import gradient_conflict, search_timing, target_in_history
from polyrec.models.ranking.base import get_ranker_class
from polyrec.models.ranking.experiment import CTRRunConfig, load_samples, train_eval
from polyrec.models.ranking.twostage import TwoStageNet
from polyrec.record import peak_rss_mb, versions

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SUITES = {  # --suite: (config folder, prefix of the result files)
    "taobao": (ROOT.parent / "configs" / "taobao", "ctr_taobao_head_"),
    "ml-1m": (ROOT.parent / "configs" / "ml-1m-ctr", "ctr_ml-1m_"),
    "synthetic": (ROOT.parent / "configs" / "synthetic-ctr", "ctr_synthetic_"),
}


def load_configs(suite: str, names: list[str]) -> dict[str, CTRRunConfig]:
    """The suite's configs by name."""
    folder = SUITES[suite][0]
    return {name: build(CTRRunConfig, load_yaml(folder / f"{name}.yaml")) for name in names}


def run(
    configs: list[str],
    seeds: list[int],
    data_dir: str | None,
    suite: str,
    overrides: dict[str, Any],
    tag: str | None,
    resume: bool = False,
) -> None:
    """Train and evaluate each config for each seed; one results file per config (named
    ``<config>_<tag>`` when ``overrides`` change its params). With ``resume``, the seeds an
    existing file of the same params and protocol already has are kept, not retrained."""
    torch.set_num_threads(1)
    cfgs = load_configs(suite, configs)
    for cfg in cfgs.values():
        cfg.params = merge(cfg.params, overrides)
    protocols = {c.data.model_dump_json() for c in cfgs.values()}
    if len(protocols) != 1:
        raise SystemExit("all configs must share the data section (same samples)")
    first = next(iter(cfgs.values()))
    data = load_samples(first.data, data_dir)
    for config_name, cfg in cfgs.items():
        name = f"{config_name}_{tag}" if tag else config_name
        out: dict[str, Any] = {
            "config": name,
            "model": cfg.model,
            "params": cfg.params,
            # the model's whole config, defaults included (a file without it, or without one
            # of its keys, predates that option: see objective)
            "model_config": get_ranker_class(cfg.model)(cfg.params).config.model_dump(),
            "protocol": cfg.data.protocol.model_dump(),
            "data": data.summary(),
            "versions": versions(),
            "runs": [],
        }
        path = RESULTS / f"{SUITES[suite][1]}{name}.json"
        kept = finished_seeds(path, out) if resume else {}
        user_aucs, test_scores = [], []
        for seed in seeds:
            if seed in kept:
                result, scores = kept[seed]
            else:
                start_cpu = time.process_time()
                model, result = train_eval(cfg.model, cfg.params, data, seed)
                result["cpu_seconds"] = time.process_time() - start_cpu
                result["train_samples_per_second"] = float(
                    np.mean([h["samples_per_second"] for h in result["history"]])
                )
                scores = np.round(model.predict_proba(data.test), 6)
                result["peak_rss_mb"] = peak_rss_mb()
            users, aucs, _ = per_user_auc(data.test.user, data.test.label, scores)
            user_aucs.append(aucs)
            test_scores.append(scores.tolist())
            out["runs"].append(result)
            out["summary"] = summarize_seeds([r["test"] for r in out["runs"]])
            out["per_user_test_auc"] = {
                "users": users.tolist(),
                "auc_mean_over_seeds": np.mean(user_aucs, axis=0).tolist(),
            }
            # every test prediction, per seed, for DeLong tests between configs
            out["test_labels"] = data.test.label.astype(int).tolist()
            out["test_scores"] = {"seeds": seeds[: len(test_scores)], "scores": test_scores}
            path.write_text(json.dumps(out, indent=1) + "\n")
            print(name, seed, {k: round(v, 4) for k, v in result["test"].items()}, flush=True)


def finished_seeds(path: Path, out: dict[str, Any]) -> dict[int, tuple[dict, np.ndarray]]:
    """The runs (result record, test scores) by seed of an earlier results file at ``path``;
    refuses a file whose params, model config, protocol or samples differ from ``out``'s."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    keys = ("params", "model_config", "protocol", "data")
    same = json.loads(json.dumps({k: out[k] for k in keys}))
    if any(old.get(k) != v for k, v in same.items()):
        raise SystemExit(
            f"{path}: params, model config, protocol or samples differ; rerun without --resume"
        )
    scores = old["test_scores"]
    return {r["seed"]: (r, np.array(s)) for r, s in zip(old["runs"], scores["scores"], strict=True)}


def timing(configs: list[str], rounds: int, data_dir: str | None) -> None:
    """Search-stage and scoring time of each search-based config (untrained weights: the
    time does not depend on them), interleaved over ``rounds`` so load spikes hit all alike."""
    torch.set_num_threads(1)
    cfgs = load_configs("taobao", configs)
    first = next(iter(cfgs.values()))
    dims = load_samples(first.data, data_dir).dims
    models = {}
    for name, cfg in cfgs.items():
        model = get_ranker_class(cfg.model)(cfg.params)
        model.dims, model.net = dims, model._build(dims)
        if not isinstance(model.net, TwoStageNet):
            raise SystemExit(f"{name} has no search stage")
        models[name] = model
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            per_round[name].append(search_timing(model, history_len=2000, n_candidates=1000))
    out = {
        "setting": "1 user, 2,000-event history, 1,000 candidates, 1 thread; "
        f"median over {rounds} rounds of the median of 20 runs",
        "versions": versions(),
        "configs": {
            name: {
                key: float(np.median([r[key] for r in rounds_]))
                for key in rounds_[0]
                if key.endswith("_per_1k")
            }
            for name, rounds_ in per_round.items()
        },
    }
    (RESULTS / "ctr_search_timing.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["configs"], indent=1))


def conflict(configs: list[str], data_dir: str | None, suite: str) -> None:
    """Attention- vs representation-path gradients of the item table (DARE paper, Sec. 3),
    at initialisation and after training with seed 0, on the training samples."""
    torch.set_num_threads(1)
    cfgs = load_configs(suite, configs)
    first = next(iter(cfgs.values()))
    data = load_samples(first.data, data_dir)
    out: dict[str, Any] = {"versions": versions(), "configs": {}}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        model = get_ranker_class(cfg.model)({**cfg.params, "seed": 0})
        model.dims, model.net = data.dims, model._build(data.dims)
        at_init = gradient_conflict(model, data.train)
        model, result = train_eval(cfg.model, cfg.params, data, 0)
        out["configs"][name] = {
            "init": at_init,
            "trained": gradient_conflict(model, data.train),
            "test_auc": result["test"]["auc"],
        }
        print(name, out["configs"][name], flush=True)
    (RESULTS / f"ctr_gradient_conflict_{suite}.json").write_text(json.dumps(out, indent=1) + "\n")


def paired_delong(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """DeLong tests of two result files' test AUC on the same samples: per seed (same seed
    index) and for the predictions averaged over their common seeds."""
    y = np.array(mine["test_labels"])
    a, b = np.array(mine["test_scores"]["scores"]), np.array(theirs["test_scores"]["scores"])
    n = min(len(a), len(b))
    return {
        "per_seed": [delong_test(y, a[i], b[i]) for i in range(n)],
        "seed_mean_scores": delong_test(y, a[:n].mean(0), b[:n].mean(0)),
    }


def delong_vs_dare(res: dict[str, Any]) -> dict[str, Any]:
    """:func:`paired_delong` of each DARE config against every non-DARE config scored on the
    same samples."""
    out: dict[str, Any] = {}
    scored = {name: r for name, r in res.items() if "test_scores" in r}
    for mine in sorted(n for n in scored if n.startswith("dare")):
        for other in sorted(n for n in scored if not n.startswith("dare")):
            if scored[other]["test_labels"] == scored[mine]["test_labels"]:
                out[f"{mine}_vs_{other}"] = paired_delong(scored[mine], scored[other])
    return out


def attention_dim_comparison(res: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """DARE attention dim 16 vs 64: AUC difference (points), DeLong on the seed-averaged
    predictions, and the search speed-up from ``ctr_search_timing.json`` (measured on one
    synthetic 2,000-event history: the search cost does not depend on the data)."""
    out: dict[str, Any] = {
        "auc_diff_points": 100
        * (table["dare"]["auc"]["mean"] - table["dare_att64"]["auc"]["mean"]),
        "delong_seed_mean_scores": paired_delong(res["dare"], res["dare_att64"])[
            "seed_mean_scores"
        ],
    }
    timing_file = RESULTS / "ctr_search_timing.json"
    if timing_file.is_file():
        times = json.loads(timing_file.read_text())["configs"]
        t16, t64 = times["dare"], times["dare_att64"]
        out["search_speedup_wall"] = t64["search_ms_per_1k"] / t16["search_ms_per_1k"]
        out["search_speedup_cpu"] = t64["search_cpu_ms_per_1k"] / t16["search_cpu_ms_per_1k"]
        out["timing"] = {"dare": t16, "dare_att64": t64}
    return out


def objective(result: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a results file's runs trained with the auxiliary loss and with time in the
    representation (a file without ``model_config``, or without the key, predates the
    option: no)."""
    cfg = result.get("model_config") or {}
    return bool(cfg.get("aux_loss", False)), bool(cfg.get("time_in_representation", False))


def best_validation_widths(res: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """DARE attention dim 16 vs 64 with each width at its own best hyperparameters: among the
    DARE configs and ablations run on the same seeds and objective as ``dare``, the one with
    the highest mean validation AUC per attention dim; their test AUC difference (points) and
    DeLong on the seed-averaged predictions."""
    seeds = table["dare"]["seeds"]
    best: dict[int, str] = {}
    for name, r in res.items():
        if r["model"] != "dare" or table[name]["seeds"] != seeds:
            continue
        if objective(r) != objective(res["dare"]):  # trained by another objective or model
            continue
        dim = r["params"]["attention_dim"]
        if dim not in best or table[name]["valid_auc_mean"] > table[best[dim]]["valid_auc_mean"]:
            best[dim] = name
    if not {16, 64} <= best.keys():
        return {}
    a, b = best[16], best[64]
    return {
        "seeds": seeds,
        "configs": {"16": a, "64": b},
        "valid_auc": {"16": table[a]["valid_auc_mean"], "64": table[b]["valid_auc_mean"]},
        "test_auc": {"16": table[a]["auc"]["mean"], "64": table[b]["auc"]["mean"]},
        "auc_diff_points": 100 * (table[a]["auc"]["mean"] - table[b]["auc"]["mean"]),
        "delong_seed_mean_scores": paired_delong(res[a], res[b])["seed_mean_scores"],
    }


def repeat_breakdown(res: dict[str, Any], repeat: np.ndarray) -> dict[str, Any]:
    """DARE attention dim 16 vs 64 split by the positives' kind: the AUC of the positives
    whose target is already in the history (``repeat``) against every negative, and of the
    other positives against every negative; per width the mean over seeds, and the share of
    repeats among the positives."""
    y = np.array(res["dare"]["test_labels"])
    # no negative is a repeat: the sampler draws items the user never touched
    out: dict[str, Any] = {"repeat_share_of_positives": float(repeat[y == 1].mean())}
    for kind, positives in (("repeat", repeat), ("new", ~repeat)):
        keep = (y == 0) | ((y == 1) & positives)
        if y[keep].min() == y[keep].max():
            continue
        out[kind] = {}
        for name in ("dare", "dare_att64"):
            seeds = np.array(res[name]["test_scores"]["scores"])
            out[kind][name] = float(np.mean([auc(y[keep], s[keep]) for s in seeds]))
    return out


def repeated_test_targets(
    suite: str, data_dir: str | None, res: dict[str, Any]
) -> np.ndarray | None:
    """:func:`target_in_history` of the suite's test samples, rebuilt from its data, or
    ``None`` (with a message) when the data is missing; refuses samples whose labels differ
    from the stored runs' (changed config or data)."""
    cfg = load_configs(suite, ["dare"])["dare"]
    try:
        test = load_samples(cfg.data, data_dir).test
    except PolyrecError as err:
        print(f"no repeat breakdown: {err}")
        return None
    for name in ("dare", "dare_att64"):
        if test.label.astype(int).tolist() != res[name]["test_labels"]:
            raise SystemExit(f"{name}: the rebuilt test samples differ from the stored run's")
    return target_in_history(test)


def summarize(suite: str, data_dir: str | None) -> None:
    """Aggregate every per-config file into the summary (see module docstring)."""
    prefix = SUITES[suite][1]
    loaded = {
        p.stem[len(prefix) :]: json.loads(p.read_text()) for p in RESULTS.glob(f"{prefix}*.json")
    }
    # per-config run files only (not the summary, the gradient analysis or the oracle)
    res = {name: r for name, r in sorted(loaded.items()) if "runs" in r}
    table = {
        name: {
            "seeds": [r["seed"] for r in r_["runs"]],
            **r_["summary"],
            "valid_auc_mean": float(np.mean([r["valid"]["auc"] for r in r_["runs"]])),
            "train_samples_per_second": float(
                np.mean([r["train_samples_per_second"] for r in r_["runs"]])
            ),
            "fit_seconds": float(np.mean([r["fit_seconds"] for r in r_["runs"]])),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in r_["runs"]),
        }
        for name, r_ in res.items()
    }
    paired = {}
    if "dare" in res:
        dare = res["dare"]["per_user_test_auc"]
        for other in sorted(set(res) - {"dare"}):
            theirs = res[other]["per_user_test_auc"]
            if theirs["users"] != dare["users"]:
                continue
            paired[f"dare_vs_{other}"] = paired_tests(
                np.array(dare["auc_mean_over_seeds"]), np.array(theirs["auc_mean_over_seeds"])
            )
    summary: dict[str, Any] = {
        "table": table,
        "paired_per_user_test_auc": paired,
        "delong_test_auc": delong_vs_dare(res),
    }
    if "dare" in table and "dare_att64" in table:
        summary["dare_attention_dim_16_vs_64"] = attention_dim_comparison(res, table)
        summary["dare_attention_dim_best_validation"] = best_validation_widths(res, table)
        repeat = repeated_test_targets(suite, data_dir, res)
        if repeat is not None:
            summary["dare_attention_dim_by_repeat"] = repeat_breakdown(res, repeat)
    (RESULTS / f"{prefix}summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=[])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--set", action="append", default=[], help="override a model param (key=value)"
    )
    parser.add_argument("--tag", help="with --set: results go to <config>_<tag>.json")
    parser.add_argument(
        "--resume", action="store_true", help="keep the seeds a config's results file already has"
    )
    parser.add_argument("--timing", nargs="*", default=[], help="search-based configs to time")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conflict", nargs="*", default=[], help="configs to analyse")
    parser.add_argument("--summarize", action="store_true")
    parser.add_argument("--data-dir", default=os.environ.get("POLYREC_DATA_DIR"))
    parser.add_argument(
        "--suite", choices=sorted(SUITES), default="taobao", help="configs and result files"
    )
    args = parser.parse_args()
    if bool(args.set) != bool(args.tag):
        parser.error("--set and --tag go together (a changed config must not overwrite its file)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.configs:
        run(
            args.configs,
            args.seeds,
            args.data_dir,
            args.suite,
            parse_overrides(args.set),
            args.tag,
            args.resume,
        )
    if args.timing:
        timing(args.timing, args.rounds, args.data_dir)
    if args.conflict:
        conflict(args.conflict, args.data_dir, args.suite)
    if args.summarize:
        summarize(args.suite, args.data_dir)


if __name__ == "__main__":
    main()
