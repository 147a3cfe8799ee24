"""Modality ablation: BPR-MF, LightGCN, FREEDOM (ID only / +text / +image / +both), VBPR.

Text features: MiniLM (polyrec.features.text) of the item text fields, PCA to 64 dims, attached
as the config's ``features`` section says. No product images exist in the staged real data, so
on ``amazon-scientific`` only ID and +text are run. ``--dataset synthetic`` runs the whole
ablation on generated data whose items do have image files: 16x16 PNGs drawn from each item's
latent taste vector (red intensity of a 4x4 grid of blocks, one latent factor per block) under
pixel noise, embedded by the weight-free polyrec.features.image.PixelEncoder through the same
file path a CLIP model would take (PCA to 64); text there is MiniLM of the generated titles and
categories. The synthetic images are informative by construction: the run shows the image path
end to end and what a second modality adds to FREEDOM, not what real photos add.

    OMP_NUM_THREADS=1 python benchmarks/bench_multimodal.py --dataset amazon-scientific
    OMP_NUM_THREADS=1 python benchmarks/bench_multimodal.py --dataset synthetic

Writes benchmarks/results/multimodal_<dataset>.json (a list of run records).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from mm_common import ROOT, dataset_with_text, model_options
from PIL import Image

from polyrec.data.dataset import Dataset
from polyrec.data.split import ratio_split
from polyrec.data.synthetic import make_synthetic
from polyrec.eval import evaluate
from polyrec.features.configured import (
    FeaturesConfig,
    TextFeaturesConfig,
    attach_configured_features,
)
from polyrec.features.image import PixelEncoder, embed_item_images
from polyrec.features.matrix import attach_features, reduce_pca
from polyrec.models.registry import get_model_class
from polyrec.models.torch_base import TorchRecommender
from polyrec.record import now_utc, peak_rss_mb, versions

# hyperparameters per dataset; synthetic borrows Scientific's
CONFIG_DIR = {
    "amazon-scientific": "amazon-scientific",
    "amazon-beauty": "amazon-beauty",
    "synthetic": "amazon-scientific",
}
SYNTHETIC = {"n_users": 3000, "n_items": 1500, "n_interactions": 60_000, "seed": 0}
IMAGE_SIZE, IMAGE_NOISE, IMAGE_PCA = 16, 0.5, 64


def synthetic_with_images(work: Path) -> tuple[Dataset, dict]:
    """The synthetic dataset with MiniLM text features and pixel features of generated item
    images (see module docstring), and what was attached."""
    ds = make_synthetic(**SYNTHETIC, reviews=False)
    text = TextFeaturesConfig(fields=["title", "category"], pca=64)
    start = time.perf_counter()
    ds = attach_configured_features(ds, FeaturesConfig(text=text))
    folder = work / "synthetic-images"
    folder.mkdir(parents=True, exist_ok=True)
    latent = ds.item_vectors["latent"]
    rng = np.random.default_rng(SYNTHETIC["seed"])
    block = IMAGE_SIZE // 4
    for item, vec in enumerate(latent):
        signal = 1 / (1 + np.exp(-2 * vec[:16].reshape(4, 4)))
        red = np.kron(signal, np.ones((block, block)))
        pixels = rng.random((IMAGE_SIZE, IMAGE_SIZE, 3)) * IMAGE_NOISE
        pixels[..., 0] = (1 - IMAGE_NOISE) * red + pixels[..., 0]
        image = Image.fromarray((pixels * 255).astype(np.uint8), "RGB")
        image.save(folder / f"{ds.item_ids.external[item]}.png")
    pixels, _ = embed_item_images(ds, folder, PixelEncoder(IMAGE_SIZE), pattern="{item}.png")
    ds = attach_features(ds, {"image": reduce_pca(pixels, IMAGE_PCA)})
    info = {
        "synthetic": SYNTHETIC,
        "text_model": text.model,
        "text_fields": text.fields,
        "pca": 64,
        "images": f"{IMAGE_SIZE}x{IMAGE_SIZE} PNG from latent factors, noise {IMAGE_NOISE}",
        "image_encoder": f"PixelEncoder({IMAGE_SIZE}), PCA {IMAGE_PCA}",
        "feature_seconds": time.perf_counter() - start,
    }
    return ds, info


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
    if args.dataset == "synthetic":
        ds, feature_info = synthetic_with_images(ROOT / "benchmarks" / "work")
    else:
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
        ("pop", "id", {}),  # the floor: training popularity, no personalisation
        ("bpr", "id", {"lr": 1e-3, "batch_size": 2048}),
        ("lightgcn", "id", {"n_layers": 2, "lr": 1e-3, "batch_size": 2048}),
        ("freedom", "id", {**freedom, "modalities": []}),
        ("freedom", "id+text", freedom),
        ("vbpr", "id+text", vbpr),
    ]
    if "image" in ds.item_vectors:
        runs += [
            ("freedom", "id+image", {**freedom, "modalities": ["image"]}),
            ("freedom", "id+text+image", {**freedom, "modalities": ["text", "image"]}),
            ("vbpr", "id+image", {**vbpr, "modalities": ["image"]}),
        ]
    records = []
    for name, modalities, opts in runs:
        cls = get_model_class(name)
        trained = issubclass(cls, TorchRecommender)
        model = cls({**opts, **train_opts} if trained else {**opts, "seed": args.seed})
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
            "features": feature_info if modalities != "id" else None,
            "config": model.config.model_dump(),
            "metrics": {"test": {k: v for k, v in result.summary.items()}},
            "best_epoch": model.best_epoch if trained else None,
            "epochs_run": len(model.history) if trained else None,
            "timings": {"fit_seconds": fit_seconds, "eval_seconds": result.seconds},
        }
        records.append(rec)
        print(
            f"{name:9s} {modalities:8s} recall@20 {result.summary['recall@20']:.4f} "
            f"ndcg@20 {result.summary['ndcg@20']:.4f} best epoch {rec['best_epoch']} "
            f"fit {fit_seconds:.0f}s",
            flush=True,
        )
    out = {
        "benchmark": "multimodal modality ablation",
        "created": now_utc(),
        "note": (
            "synthetic images drawn from item latent factors: informative by construction"
            if "image" in ds.item_vectors
            else "no item images exist in the staged data: +image and +both rows not measured"
        ),
        "peak_rss_mb": peak_rss_mb(),
        "versions": versions(),
        "runs": records,
    }
    path = ROOT / "benchmarks" / "results" / f"multimodal_{args.dataset}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
