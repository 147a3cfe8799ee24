"""Small pieces shared by the test modules: tiny model configs, a run-directory writer, a
stand-in for the trainer's validation and an importer of the benchmark scripts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch

from polyrec.data.dataset import Dataset
from polyrec.models import torch_base
from polyrec.models.base import Recommender
from polyrec.models.torch_base import TorchRecommender

TINY_SEQ2SEQ = {
    "item_features": "vector:latent",
    "semantic_ids": {"method": "rqkmeans", "rqkmeans": {"codebook_size": 4, "kmeans_iters": 5}},
    "dim": 16,
    "heads": 2,
    "ffn_dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "max_len": 5,
    "n_user_tokens": 8,
    "beams": 8,
    "batch_size": 64,
    "lr": 0.01,
    "progress": False,
}
"""A TIGER / Mender small enough for unit tests (add ``epochs``)."""

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


TINY_UNIMP = {
    "item_features": "vector:latent",
    "semantic_ids": {"method": "rqkmeans", "rqkmeans": {"levels": 2, "codebook_size": 6}},
    "dim": 32,
    "heads": 2,
    "layers": 1,
    "ffn_dim": 64,
    "dropout": 0.0,
    "max_len": 4,
    "text_vocab_size": 200,
    "max_review_tokens": 6,
    "epochs": 1,
    "batch_size": 16,
    "early_stopping": None,
    "progress": False,
    "beams": 8,
}
"""A UniMP small enough for unit tests (add ``steps_per_epoch``)."""


def weights(model: TorchRecommender) -> dict[str, torch.Tensor]:
    """A copy of the model's current weights."""
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def fake_validation(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> list[dict]:
    """Replace the evaluator by a metric sequence; returns the weights seen at each call."""
    seen: list[dict] = []

    def validate(
        model: TorchRecommender, train: Dataset, valid: Dataset, ks: tuple[int, ...]
    ) -> dict[str, float]:
        seen.append(weights(model))
        return {"ndcg@10": values[len(seen) - 1], "recall@20": 0.0}

    monkeypatch.setattr(torch_base, "validate", validate)
    return seen


def save_run(model: Recommender, ds: Dataset, run: Path) -> Path:
    """``model`` saved as a run directory the service loads (model and item titles)."""
    model.save(run / "model")
    assert ds.item_data is not None
    pd.DataFrame(
        {
            "item": ds.item_ids.external,
            "title": ds.item_data["title"].to_numpy(),
            "category": ds.item_data["category"].to_numpy(),
        }
    ).to_parquet(run / "items.parquet", index=False)
    return run


class ServeClients:
    """Opens FastAPI test clients of the service, each on its own SQLite file under
    ``tmp_path`` unless ``db`` is given, and closes them all in :meth:`close`."""

    def __init__(self, tmp_path: Path, api_key: str) -> None:
        self.tmp_path, self.api_key = tmp_path, api_key
        self.clients: list = []

    def __call__(self, runs: list[Path], *, db: str | None = None, unlearner=None, **options):
        from fastapi.testclient import TestClient

        from polyrec.serve.app import create_app
        from polyrec.serve.service import ServeConfig

        db = db or f"sqlite:///{self.tmp_path / f'serve{len(self.clients)}.db'}"
        config = ServeConfig(runs=runs, db=db, api_keys=[self.api_key], **options)
        client = TestClient(create_app(config, unlearner=unlearner))
        client.__enter__()
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Shut every opened client down (lifespan exit: job threads, store)."""
        for client in self.clients:
            client.__exit__(None, None, None)
        self.clients.clear()
