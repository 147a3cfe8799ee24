"""Data preparation shared by bench_multimodal.py and bench_unlearn.py: a real dataset with
MiniLM text features written in MMRec's layout and read back through polyrec.features.matrix."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from polyrec.config import load_yaml
from polyrec.data.dataset import Dataset
from polyrec.data.registry import load_dataset
from polyrec.data.split import Split, ratio_split
from polyrec.features.matrix import attach_features, load_feature_matrices
from polyrec.features.text import embed_item_texts

ROOT = Path(__file__).resolve().parents[1]


def model_options(config: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model hyperparameters, the ``features`` section) of a config file in configs/."""
    data = load_yaml(ROOT / "configs" / config)
    features = data.pop("features", {})
    for key in ("model", "dataset", "split"):
        data.pop(key, None)
    return data, features


def dataset_with_text(name: str, data_dir: str, text: dict[str, Any]) -> tuple[Dataset, dict]:
    """The dataset with ``item_vectors["text"]`` (MiniLM of the configured fields, PCA)."""
    ds = load_dataset(name, data_dir)
    start = time.perf_counter()
    emb = embed_item_texts(
        ds, text.get("model", "all-MiniLM-L6-v2"), fields=text["fields"], progress=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        # MMRec layout: row r = item whose internal index is r (ids of the .inter file)
        np.save(Path(tmp) / "text_feat.npy", emb)
        order = np.arange(ds.n_items)
        feats = load_feature_matrices(
            tmp, ds, ["text"], row_ids=ds.item_ids.external[order], pca=text.get("pca")
        )
    info = {
        "text_model": text.get("model", "all-MiniLM-L6-v2"),
        "text_fields": text["fields"],
        "raw_dim": int(emb.shape[1]),
        "pca": text.get("pca"),
        "feature_seconds": time.perf_counter() - start,
    }
    return attach_features(ds, feats), info


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
