"""Data preparation shared by bench_multimodal.py, bench_unlearn.py and tune_mmrecun.py: a real
dataset with the MiniLM text features its config's ``features`` section names, attached as a
``polyrec train`` run attaches them (polyrec.features.configured)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from polyrec.config import load_yaml
from polyrec.data.dataset import Dataset
from polyrec.data.registry import load_dataset
from polyrec.data.split import Split, ratio_split
from polyrec.features.configured import (
    FeaturesConfig,
    TextFeaturesConfig,
    attach_configured_features,
)

ROOT = Path(__file__).resolve().parents[1]


def model_options(config: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model hyperparameters, the ``features`` section) of a config file in configs/."""
    data = load_yaml(ROOT / "configs" / config)
    features = data.pop("features", {})
    for key in ("model", "dataset", "split"):
        data.pop(key, None)
    return data, features


def dataset_with_text(name: str, data_dir: str, text: dict[str, Any]) -> tuple[Dataset, dict]:
    """The dataset with ``item_vectors["text"]`` (the ``features.text`` section of its config:
    sentence-transformers model, fields, PCA) and what was attached."""
    ds = load_dataset(name, data_dir)
    cfg = TextFeaturesConfig(**text)
    start = time.perf_counter()
    out = attach_configured_features(ds, FeaturesConfig(text=cfg))
    info = {
        "text_model": cfg.model,
        "text_fields": cfg.fields,
        "pca": cfg.pca,
        "feature_seconds": time.perf_counter() - start,
    }
    return out, info


def add_unlearning_arguments(parser: argparse.ArgumentParser) -> None:
    """The data and base-model options shared by bench_unlearn.py and tune_mmrecun.py."""
    parser.add_argument("--dataset", default="amazon-scientific")
    parser.add_argument(
        "--data-dir", default=os.environ.get("POLYREC_DATA_DIR", "/work/shared/data")
    )
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the FREEDOM base model")
    parser.add_argument(
        "--requests",
        default="interactions:0.05,users:0.01,items:0.01",
        help="comma-separated kind:fraction forget requests",
    )


def unlearning_setup(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any], Split, list[tuple[str, float]]]:
    """FREEDOM's options (fixed epochs, no early stopping), the text-feature info, the per-user
    70/10/20 split of the dataset with text features (the validation part is MMRecUn's
    stopping-rule reference, never trained on), and the parsed forget requests."""
    opts, features = model_options(f"{args.dataset}/freedom.yaml")
    opts.update(epochs=args.epochs, early_stopping=None, progress=False)
    ds, feature_info = dataset_with_text(args.dataset, args.data_dir, features["text"])
    requests = [(k, float(f)) for k, f in (r.split(":") for r in args.requests.split(","))]
    return opts, feature_info, ratio_split(ds, test=0.2, valid=0.1, seed=0), requests
