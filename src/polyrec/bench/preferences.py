"""The preference-discerning benchmark end to end (``polyrec bench preferences``).

SASRec, TIGER, Mender-Emb and Mender-Tok, each Mender also with the official code's optional
training data ("+data": sentiment pairs and accumulated-preference contexts, see
:mod:`polyrec.models.generative.mender`), are trained on one leave-one-out split of a dataset
with review text and scored on the five axes of :mod:`polyrec.models.generative.benchmark`
(Mender, Paischer et al., TMLR 2025, Section 5), with the plain test metrics beside them.
Preferences are written by the offline extractive generator from the users' own reviews.

Two untrained reference rankings sit beside the models on every axis, to show what an axis
rewards: ``popularity`` (training counts; it ignores history and preference) and
``preference_match`` (items by the cosine between the mean embedding of the sample's
preferences and the item's text embedding; it ignores the history). ``preference_match``
ranks in the very space the benchmark matched each preference to its target in, so it is a
measure of how much the preference text gives away, not a fair competitor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from polyrec.data.dataset import Dataset
from polyrec.data.registry import load_dataset
from polyrec.data.sequences import merge_interactions
from polyrec.data.split import leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.features.text import embed_item_texts
from polyrec.models.base import Recommender
from polyrec.models.generative.benchmark import build_benchmark, combined_recall, rank_metrics
from polyrec.models.generative.mender import Mender, MenderConfig, MenderTok
from polyrec.models.generative.preferences import ExtractiveGenerator, user_preferences
from polyrec.models.generative.tiger import TIGER
from polyrec.models.sequential.sasrec import SASRec
from polyrec.models.torch_base import TorchRecommender
from polyrec.ranking import topk

KS: Final = (5, 10)
MODELS: Final = (
    "sasrec",
    "tiger",
    "tiger_no_user_tokens",
    "mender_emb",
    "mender_tok",
    "mender_emb_data",
    "mender_tok_data",
)
# The small TIGER/Mender of configs/amazon-scientific/mender.yaml with codebooks for a catalogue
# of a few hundred items; "+data" adds sentiment pairs and accumulated contexts for half the
# rows (steering pairs measured no gain: benchmarks/README.md). The Menders' context has no
# user-ID token (MenderConfig's default); TIGER keeps the paper's 2,000, and
# "tiger_no_user_tokens" is the Menders' backbone without preferences.
MENDER_CONFIG: Final[dict[str, Any]] = {
    "item_features": "text",
    "semantic_ids": {"method": "rqvae", "rqvae": {"codebook_size": 16, "epochs": 100}},
    "preference_model": "all-MiniLM-L6-v2",
    "preference_window": 5,
    "max_preferences": 5,
    "max_len": 20,
    "dim": 64,
    "heads": 4,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "ffn_dim": 256,
    "dropout": 0.1,
    "beams": 20,
    "lr": 0.002,
    "batch_size": 256,
    "epochs": 60,
    "eval_every": 2,
    "patience": 3,
    "early_stopping": "ndcg@10",
}
EXTRA_DATA: Final = {"sentiment_pairs": True, "accumulated_fraction": 0.5}
TEXT_FIELDS: Final = ("title", "brand", "category", "categories", "style")
REFERENCES: Final = ("popularity", "preference_match")
# the controlled setting: item categories and rating-consistent reviews, so the answer is known.
# Choices follow taste sharply (temperature 0.1, as the CTR suite's synthetic log): at the
# generator's default 0.3 popularity alone reached every model's Recall@10 on the
# recommendation axis (0.253), so that axis could not tell the models apart.
SYNTHETIC: Final = {
    "n_users": 1000,
    "n_items": 300,
    "n_interactions": 12_000,
    "n_categories": 10,
    "temperature": 0.1,
}


def benchmark_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """A dataset for the benchmark: ``synthetic`` as :data:`SYNTHETIC` (seed 0), else the
    built-in dataset ``name`` (it needs review text, e.g. ``amazon18-beauty``)."""
    if name == "synthetic":
        return make_synthetic(**SYNTHETIC, seed=0)
    return load_dataset(name, data_dir)


def item_text_fields(ds: Dataset) -> tuple[str, ...]:
    """The item text columns the semantic IDs and the matching read (of :data:`TEXT_FIELDS`)."""
    columns = set(ds.item_data.columns) if ds.item_data is not None else set()
    fields = tuple(f for f in TEXT_FIELDS if f in columns)
    if not fields:
        raise PolyrecError(
            f"dataset {ds.name!r} has no item text column (one of {', '.join(TEXT_FIELDS)})"
        )
    return fields


def preference_models(
    ds: Dataset,
    names: Sequence[str] = MODELS,
    max_minutes: float = 8.0,
    extra_data: dict[str, Any] = EXTRA_DATA,
) -> dict[str, Recommender]:
    """The benchmark's models by name (:data:`MODELS`), each stopping after the epoch that
    spends ``max_minutes`` of training and keeping its best validation weights; the "_data"
    Menders add the options ``extra_data``."""
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise PolyrecError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    seconds = max_minutes * 60
    mender = {**MENDER_CONFIG, "text_fields": item_text_fields(ds), "max_seconds": seconds}
    tiger = {k: v for k, v in mender.items() if not k.startswith(("preference_", "max_pref"))}
    build: dict[str, Callable[[], Recommender]] = {
        "sasrec": lambda: SASRec(
            dim=64, dropout=0.2, max_len=20, epochs=200, patience=5, max_seconds=seconds
        ),
        "tiger": lambda: TIGER({**tiger, "n_user_tokens": 2000}),
        "tiger_no_user_tokens": lambda: TIGER({**tiger, "n_user_tokens": 0}),
        "mender_emb": lambda: Mender(mender),
        "mender_tok": lambda: MenderTok(mender),
        "mender_emb_data": lambda: Mender({**mender, **extra_data}),
        "mender_tok_data": lambda: MenderTok({**mender, **extra_data}),
    }
    return {name: build[name]() for name in names}


def run_preference_benchmark(
    ds: Dataset,
    names: Sequence[str] = MODELS,
    *,
    max_minutes: float = 8.0,
    extra_data: dict[str, Any] = EXTRA_DATA,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train ``names`` on a leave-one-out split of ``ds`` (which needs review text) and score
    the five axes; a JSON-ready dict with each model's training record and test metrics, the
    axis sizes and per-axis Recall/NDCG@K (``combined_recall@K`` for sentiment following) of
    the models and of the :data:`REFERENCES` rankings."""
    if ds.interaction_data is None or "review" not in ds.interaction_data.columns:
        raise PolyrecError(f"dataset {ds.name!r} has no review text (interaction column 'review')")
    split = leave_one_out(ds)
    models = preference_models(ds, names, max_minutes, extra_data)
    out: dict[str, Any] = {
        "dataset": repr(ds),
        "max_minutes": max_minutes,
        "extra_data": dict(extra_data),
        "models": {},
    }
    for name, model in models.items():
        log(f"training {name}")
        out["models"][name] = _fit_record(model, split.train, split.valid)
        result = evaluate(model, split.test, exclude=[], ks=KS, beyond=False)
        out["models"][name]["test"] = {
            k: float(v) for k, v in result.summary.items() if k.split("@")[0] in ("recall", "ndcg")
        }
    bench, item_emb, embed = _benchmark(ds, split)
    popularity = torch.from_numpy(split.train.item_popularity.astype(np.float32))[None]
    references: dict[str, Callable[[list[list[str]]], np.ndarray]] = {
        "popularity": lambda prefs: np.tile(top_k(popularity), (len(prefs), 1)),
        "preference_match": lambda prefs: preference_match(prefs, item_emb, embed),
    }
    out["benchmark_sizes"] = {axis: len(samples) for axis, samples in bench.items()}
    out["axes"] = {}
    for axis, samples in bench.items():
        if not samples:
            continue
        log(f"scoring {axis}")
        users = np.array([s.history_user for s in samples])
        targets = np.array([s.target for s in samples])
        rankers: dict[str, Callable[[list[list[str]]], np.ndarray]] = {
            name: partial(ranked_items, model, users) for name, model in models.items()
        }
        row: dict[str, Any] = {}
        for name, rank in {**rankers, **references}.items():
            ranked = rank([s.preferences for s in samples])
            row[name] = rank_metrics(ranked, targets, KS)
            if axis == "sentiment":
                avoid = rank([s.avoid for s in samples])
                row[name].update(combined_recall(ranked, avoid, targets, KS))
        out["axes"][axis] = row
    return out


def top_k(scores: torch.Tensor, k: int = max(KS)) -> np.ndarray:
    """The ``k`` best columns per row, best first (ties to the lower index)."""
    return topk(scores, k)[1].numpy()


def preference_match(
    preferences: list[list[str]],
    item_emb: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """Top items per sample by the cosine between the mean of its preferences' embeddings and
    each item's row of ``item_emb`` (the :data:`REFERENCES` ranking that ignores history)."""
    if not all(preferences):
        raise PolyrecError("preference_match needs at least one preference per sample")
    texts = sorted({p for prefs in preferences for p in prefs})
    vecs = _unit(embed(texts))
    lookup = {t: i for i, t in enumerate(texts)}
    query = np.stack([vecs[[lookup[p] for p in prefs]].mean(0) for prefs in preferences])
    return top_k(torch.from_numpy(query @ _unit(item_emb).T))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ranked_items(
    model: Recommender, users: np.ndarray, preferences: list[list[str]], k: int = max(KS)
) -> np.ndarray:
    """Top-``k`` items per history user: Mender conditioned on each sample's preferences,
    TIGER by beam search, any other model by its scores (preferences unused)."""
    rows = []
    for start in range(0, len(users), 256):
        u, p = users[start : start + 256], preferences[start : start + 256]
        if isinstance(model, Mender):
            items, _ = model.generate_with_preferences(model.histories[u], p, u)
        elif isinstance(model, TIGER):
            items, _ = model.generate(model.histories[u], u)
        else:
            with torch.inference_mode():
                items = torch.topk(model.score(u), k, dim=1).indices.numpy()
        rows.append(items[:, :k])
    return np.concatenate(rows)


def _fit_record(model: Recommender, train: Dataset, valid: Dataset) -> dict[str, Any]:
    """Fit and return the training record (time, epochs, best epoch, per-epoch history)."""
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(train, valid)
    history = model.history if isinstance(model, TorchRecommender) else []
    return {
        "fit_seconds": time.perf_counter() - start,
        "fit_cpu_seconds": time.process_time() - cpu,
        "stop_reason": getattr(model, "stop_reason", None),
        "epochs_run": len(history),
        "best_epoch": getattr(model, "best_epoch", None),
        "history": [
            {k: v for k, v in h.items() if k in ("epoch", "loss", "seconds", "valid")}
            for h in history
        ],
    }


def _benchmark(
    ds: Dataset, split: Any
) -> tuple[dict[str, list[Any]], np.ndarray, Callable[[list[str]], np.ndarray]]:
    """The benchmark samples of the test split: the preferences written just before each test
    item (window ending at the validation item) and all accumulated up to there, written by
    Mender's default generator and embedded and matched with its encoder, as in training;
    with the item embeddings and the text encoder the matching used."""
    full = merge_interactions(split.train, split.valid, split.test)
    cfg = MenderConfig(**MENDER_CONFIG)
    model = cfg.preference_model
    generator = ExtractiveGenerator(cfg.max_preferences)
    table = user_preferences(full, generator, window=cfg.preference_window, last_n=None)
    users = split.test.users
    before = np.diff(full.sequences.indptr)[users] - 2  # the step before the test item
    pairs = list(zip(users.tolist(), before.tolist(), strict=True))
    item_emb = embed_item_texts(ds, model, fields=item_text_fields(ds), progress=False)
    embed = partial(embed_item_texts, model=model, progress=False)
    bench = build_benchmark(
        users,
        split.test.items,
        [table.at(u, s) for u, s in pairs],
        [table.accumulated(u, s) for u, s in pairs],
        item_emb,
        embed,
    )
    return bench, item_emb, embed
