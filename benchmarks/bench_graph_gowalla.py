"""GF-CF, LightGCN and NGCF on the LightGCN/NGCF Gowalla split: learning curve, time, memory.

    python benchmarks/bench_graph_gowalla.py gfcf
    python benchmarks/bench_graph_gowalla.py lightgcn --minutes 20 --eval-every 5
    python benchmarks/bench_graph_gowalla.py ngcf --minutes 20 --eval-every 2
    python benchmarks/bench_graph_gowalla.py lightgcn --set batch_size=8192 --set lr=0.004 \\
        --tag bs8192

Data: ``polyrec.data.registry.load_given_split("gowalla")`` (``POLYREC_DATA_DIR``, or
``--data-dir``): the given train.txt / test.txt, 29,858 users x 40,981 items. Protocol: full
ranking of every item, training items masked, Recall@20 / NDCG@20 over test users, as in both
papers' evaluation code. Hyperparameters: ``configs/gowalla/<model>.yaml`` plus ``--set``.

GF-CF is fitted and evaluated once. The trained models run under the shared trainer without
validation; an epoch callback measures the test metrics every ``--eval-every`` epochs (a
learning curve; no weights are selected on them). Training stops after the configured epochs or
after the epoch that spends ``--minutes`` (the trainer's ``max_seconds``: a CPU cannot run the
papers' 400-1000 epochs in one sitting). ``--checkpoint PATH`` saves the training state after
every epoch and continues from it on the next call (:mod:`polyrec.train.checkpoint`): the
curve and ``--minutes`` then count every sitting's training, so a run reaches the papers'
epochs over several calls::

    python benchmarks/bench_graph_gowalla.py lightgcn --minutes 600 --eval-every 10 \\
        --set batch_size=8192 --set lr=0.004 --checkpoint /tmp/lightgcn.ckpt --tag bs8192

After every evaluation the run
record so far is written to ``benchmarks/results/graph_gowalla_<model>[_<tag>].json`` (a
:class:`polyrec.record.RunRecord`; ``history`` holds per-epoch loss and seconds and, on
evaluated epochs, the test metrics and ``elapsed_seconds``), so a stopped run keeps its curve.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from polyrec.config import load_yaml, parse_overrides
from polyrec.data.registry import load_given_split
from polyrec.data.split import Split
from polyrec.eval import evaluate
from polyrec.models.base import Recommender
from polyrec.models.graph.gfcf import GFCF
from polyrec.models.graph.lightgcn import LightGCN
from polyrec.models.graph.ngcf import NGCF
from polyrec.models.torch_base import TorchRecommender
from polyrec.record import RunRecord, command_line, now_utc, peak_rss_mb, versions
from polyrec.train.checkpoint import saved_history

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs" / "gowalla"
RESULTS = HERE / "results"
MODELS: dict[str, type[Recommender]] = {"gfcf": GFCF, "lightgcn": LightGCN, "ngcf": NGCF}
KS = (20,)
TEST_KEYS = ("recall@20", "ndcg@20")


class Curve:
    """An epoch callback: every ``every`` epochs, the test metrics (a learning curve; nothing is
    selected on them) and the run record so far, written to ``out``."""

    def __init__(
        self,
        model: TorchRecommender,
        split: Split,
        out: Path,
        every: int,
        previous: list[dict[str, Any]],
    ) -> None:
        self.model, self.split, self.out, self.every = model, split, out, every
        # ``previous``: the epochs of earlier sittings (a resumed fit), whose time counts too
        curve = [e for e in previous if "elapsed_seconds" in e]
        self.start = time.perf_counter() - (curve[-1]["elapsed_seconds"] if curve else 0.0)
        self.cpu = time.process_time()
        self.eval_seconds = 0.0
        self.entries = list(previous)

    def __call__(self, entry: dict[str, Any]) -> None:
        entry["cpu_seconds"] = time.process_time() - self.cpu
        self.entries.append(entry)
        if entry["epoch"] % self.every == 0 or entry["epoch"] == self.model.config.epochs:
            split = self.split
            result = evaluate(
                self.model, split.test, exclude=[split.train.binary_csr], ks=KS, beyond=False
            )
            self.eval_seconds = result.seconds
            entry["test"] = {key: float(result.summary[key]) for key in TEST_KEYS}
            entry["eval_seconds"] = result.seconds
            entry["elapsed_seconds"] = time.perf_counter() - self.start
            self.write(self.entries, stopped=None)
        self.cpu = time.process_time()

    def write(self, history: list[dict[str, Any]], stopped: str | None) -> None:
        """The run record so far (metrics: the latest evaluation)."""
        curve = [e for e in history if "test" in e]
        protocol = _protocol(self.split, stopped) | {"cpu_seconds": time.process_time()}
        record = RunRecord(
            model=self.model.name,
            dataset="gowalla",
            dataset_fingerprint=self.split.train.fingerprint(),
            protocol=protocol,
            config=self.model.config.model_dump(),
            history=history,
            metrics={"test": curve[-1]["test"] if curve else {}},
            timings={
                "fit_seconds": time.perf_counter() - self.start,
                "epoch_seconds": [e["seconds"] for e in history],
                "eval_seconds": self.eval_seconds,
            },
            peak_rss_mb=peak_rss_mb(),
            versions=versions(),
            seed=self.model.config.seed,
            command=command_line(),
            created_at=now_utc(),
        )
        self.out.write_text(record.model_dump_json(indent=2) + "\n")


def _protocol(split: Split, stopped: str | None) -> dict[str, Any]:
    return {
        "split": "given (LightGCN/NGCF gowalla train.txt / test.txt)",
        "mode": "full",
        "ks": list(KS),
        "exclude": ["train"],
        "n_users": split.train.n_users,
        "n_items": split.train.n_items,
        "n_train": split.train.n_interactions,
        "n_test": split.test.n_interactions,
        "torch_threads": torch.get_num_threads(),
        "stopped": stopped,
    }


def run_gfcf(split: Split, config: dict[str, Any], out: Path) -> None:
    cpu = time.process_time()
    start = time.perf_counter()
    model = GFCF(config).fit(split.train)
    fit_seconds = time.perf_counter() - start
    result = evaluate(model, split.test, exclude=[split.train.binary_csr], ks=KS, beyond=False)
    protocol = _protocol(split, None) | {"cpu_seconds": time.process_time() - cpu}
    record = RunRecord(
        model="gfcf",
        dataset="gowalla",
        dataset_fingerprint=split.train.fingerprint(),
        protocol=protocol,
        config=model.config.model_dump(),
        metrics={"test": {key: float(result.summary[key]) for key in TEST_KEYS}},
        timings={"fit_seconds": fit_seconds, "eval_seconds": result.seconds},
        peak_rss_mb=peak_rss_mb(),
        versions=versions(),
        seed=model.config.seed,
        command=command_line(),
        created_at=now_utc(),
    )
    out.write_text(record.model_dump_json(indent=2) + "\n")
    print(f"gfcf fit {fit_seconds:.1f}s eval {result.seconds:.1f}s {record.metrics['test']}")


def run_trained(
    name: str, split: Split, config: dict[str, Any], out: Path, minutes: float, every: int
) -> None:
    config = config | {"max_seconds": minutes * 60, "early_stopping": None, "progress": False}
    model = MODELS[name](config)
    assert isinstance(model, TorchRecommender)
    previous = saved_history(model.config.checkpoint) if model.config.checkpoint else []
    curve = Curve(model, split, out, every, previous)
    model.epoch_callbacks.append(curve)
    model.fit(split.train)
    curve.write(model.history, model.stop_reason)
    print(f"{name}: {model.stop_reason}; curve in {out}")
    for point in model.history:
        if "test" in point:
            print(f"  epoch {point['epoch']:4d} {point['elapsed_seconds']:8.0f}s {point['test']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--data-dir", default=os.environ.get("POLYREC_DATA_DIR"))
    parser.add_argument(
        "--minutes",
        type=float,
        default=20.0,
        help="training time budget (with --checkpoint: of all sittings together)",
    )
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", action="append", default=[], help="key=value override")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument(
        "--checkpoint", help="training state file: saved after every epoch, resumed from if present"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = load_given_split("gowalla", args.data_dir)
    config = load_yaml(CONFIGS / f"{args.model}.yaml") | parse_overrides(args.set)
    config = {k: v for k, v in config.items() if k not in ("model", "dataset")}
    if args.checkpoint:
        config["checkpoint"] = args.checkpoint
    suffix = f"_{args.tag}" if args.tag else ""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"graph_gowalla_{args.model}{suffix}.json"
    if args.model == "gfcf":
        run_gfcf(split, config, out)
    else:
        run_trained(args.model, split, config, out, args.minutes, args.eval_every)


if __name__ == "__main__":
    main()
