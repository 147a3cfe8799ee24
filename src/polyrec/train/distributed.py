"""Data-parallel training with ``torchrun`` (PyTorch DistributedDataParallel).

Launched by ``torchrun --nproc_per_node=N ...`` (``WORLD_SIZE > 1`` in the environment), the
:class:`~polyrec.train.trainer.Trainer` joins the process group (gloo for CPU models, nccl for
CUDA, one GPU per local rank), wraps the model's module in DistributedDataParallel and gives each
rank its share of every epoch's batches. Every rank draws the same epoch from the same seed and
keeps batch ``i`` of each complete group of ``world_size`` consecutive batches (rank-strided),
so one optimiser step of N ranks with per-rank ``batch_size`` B sees exactly the batches that
one process with batch size N x B would see in one step. Only rank 0 evaluates, saves and
prints; the early-stopping decision is broadcast from it.

``torchrun --nproc_per_node=2 -m polyrec.train.distributed --model bpr --dataset synthetic
--out DIR [--set key=value ...]`` fits a model this way on a per-user ratio split, evaluates it
on rank 0 and writes ``DIR/metrics.json`` (and the model under ``DIR/model``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from polyrec.config import parse_overrides
from polyrec.data.registry import load_dataset
from polyrec.data.split import ratio_split
from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.models.registry import get_model_class

T = TypeVar("T")


def world_size() -> int:
    """Number of processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0 or when not distributed: the process that evaluates, saves and prints."""
    return rank() == 0


def local_rank() -> int:
    """Rank within this node, as set by torchrun (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes, once; returns whether training is distributed.

    The backend follows the model's device: nccl for CUDA, gloo otherwise.
    """
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def wrap(module: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` in DistributedDataParallel (parameters broadcast from rank 0)."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=device.index)


def shard(batches: Iterable[T]) -> Iterator[T]:
    """This rank's batches: batch ``rank`` of each complete group of ``world_size`` consecutive
    batches. A final incomplete group (fewer than ``world_size`` batches) is dropped, so every
    rank takes the same number of steps."""
    n, r = world_size(), rank()
    if n == 1:
        yield from batches
        return
    group: list[T] = []
    for batch in batches:
        group.append(batch)
        if len(group) == n:
            yield group[r]
            group = []


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all ranks (``value`` itself when not distributed)."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main(argv: Sequence[str] | None = None) -> None:
    """Fit a model under torchrun (or in one process), evaluate on rank 0, write metrics.json."""
    parser = argparse.ArgumentParser(prog="python -m polyrec.train.distributed")
    parser.add_argument("--model", required=True, help="registered model name, e.g. bpr")
    parser.add_argument("--dataset", default="synthetic", help="a built-in dataset name")
    parser.add_argument("--data-dir", help="where built-in datasets are (no download here)")
    parser.add_argument("--users", type=int, default=1000, help="synthetic: number of users")
    parser.add_argument("--items", type=int, default=500, help="synthetic: number of items")
    parser.add_argument("--interactions", type=int, default=20_000, help="synthetic: size")
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic data and split seed")
    parser.add_argument("--test", type=float, default=0.2, help="per-user test fraction")
    parser.add_argument("--valid", type=float, default=0.1, help="per-user valid fraction")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    try:
        if args.dataset == "synthetic":
            options = {"n_users": args.users, "n_items": args.items, "seed": args.data_seed}
            data = load_dataset("synthetic", n_interactions=args.interactions, **options)
        else:  # every rank reads the same files; downloading here would race
            data = load_dataset(args.dataset, args.data_dir, download=False)
        split = ratio_split(data, test=args.test, valid=args.valid, seed=args.data_seed)
        model = get_model_class(args.model)(parse_overrides(args.overrides))
        start = time.perf_counter()
        model.fit(split.train, split.valid)
        fit_seconds = time.perf_counter() - start
    except PolyrecError as exc:
        raise SystemExit(f"error: {exc}") from None
    if is_main_process():
        exclude = [split.train.binary_csr]
        if split.valid is not None:
            exclude.append(split.valid.binary_csr)
        result = evaluate(model, split.test, exclude=exclude, ks=(10, 20))
        history: list[dict[str, Any]] = getattr(model, "history", [])
        record = {
            "model": model.name,
            "dataset": data.name,
            "fingerprint": data.fingerprint(),
            "protocol": split.protocol,
            "world_size": world_size(),
            "config": model.config.model_dump(),
            "history": history,
            "metrics": {"test": {k: float(v) for k, v in result.summary.items()}},
            "timings": {
                "fit_seconds": fit_seconds,
                "epoch_seconds": [h["seconds"] for h in history],
            },
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(record, indent=2))
        model.save(args.out / "model")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
