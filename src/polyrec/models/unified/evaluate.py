"""Per-task evaluation of a fitted :class:`~polyrec.models.unified.unimp.UniMP`.

The model's stored histories are the conditioning context (after ``fit(train, valid)`` they are
training + validation events); each interaction of ``test`` is one target event, for users
with a non-empty history:

- ``next`` and ``search``: Recall@K (= HR@K, one target) and NDCG@K of the target among the
  beam-search results (full catalogue, history not masked, as the sequential protocol);
  search queries are drawn from the target item's words with a fixed seed;
- ``rating``: RMSE and MAE of the expected rating;
- ``explanation``: corpus BLEU-4 (``sacrebleu``, lower-cased) and mean ROUGE-L F1
  (``rouge-score``, stemmed) of the generated text against the user's review.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from polyrec.data.dataset import Dataset
from polyrec.data.interleaved import InterleavedLog, item_categories
from polyrec.errors import PolyrecError
from polyrec.models.unified.prompts import QueryMaker
from polyrec.models.unified.tokens import TASKS
from polyrec.models.unified.unimp import UniMP


def ranking_metrics(found: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K and NDCG@K of one target per row among ranked ``found (n, beams)`` items."""
    hit = found == targets[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), np.iinfo(np.int64).max)
    out = {}
    for k in ks:
        inside = rank < k
        out[f"recall@{k}"] = float(inside.mean()) if len(rank) else 0.0
        gains = np.where(inside, 1.0 / np.log2(np.minimum(rank, k) + 2.0), 0.0)
        out[f"ndcg@{k}"] = float(gains.mean()) if len(rank) else 0.0
    return out


def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 (sacrebleu, 0-100, lower-cased) and mean ROUGE-L F1 (0-1)."""
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise PolyrecError(
            "explanation metrics need sacrebleu and rouge-score: pip install them"
        ) from exc
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], lowercase=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)
    ]
    return {"bleu4": float(bleu.score), "rouge_l": float(np.mean(rouge)) if rouge else 0.0}


def evaluate_tasks(
    model: UniMP,
    test: Dataset,
    *,
    tasks: Sequence[str] | None = None,
    ks: Sequence[int] = (5, 10, 20),
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Metrics per task (module docstring) on the events of ``test``; ``tasks`` defaults to the
    model's trained tasks. Each task's entry also gives ``n`` (events scored) and ``seconds``."""
    model._check_fitted()
    tasks = list(tasks or model.config.active_tasks())
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise PolyrecError(f"unknown tasks {sorted(unknown)}; tasks are {list(TASKS)}")
    log = InterleavedLog.from_dataset(test)
    users = np.repeat(np.arange(log.n_users), np.diff(log.indptr))
    warm = np.diff(model.user_history.indptr)[users] > 0
    users, items = users[warm], log.items[warm]
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        start = time.perf_counter()
        if task == "next":
            found, _ = model.next_items(users, max(max(ks), model.config.beams))
            res: dict[str, Any] = ranking_metrics(found, items, ks)
            n = len(users)
        elif task == "search":
            res, n = _search(model, test, users, items, ks, seed)
        elif task == "rating":
            if log.ratings is None:
                raise PolyrecError("test has no ratings: cannot evaluate task 'rating'")
            truth = log.ratings[warm]
            pred = model.rating_internal(users, items)
            res = {
                "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
                "mae": float(np.mean(np.abs(pred - truth))),
            }
            n = len(users)
        else:
            if log.reviews is None:
                raise PolyrecError("test has no reviews: cannot evaluate task 'explanation'")
            reviews = log.reviews[warm]
            keep = np.array([r is not None for r in reviews], bool)
            hyps = model.explain_internal(users[keep], items[keep])
            res = text_metrics(hyps, [str(r) for r in reviews[keep]])
            res["examples"] = [
                {"generated": h, "reference": str(r)}
                for h, r in zip(hyps[:3], reviews[keep][:3], strict=True)
            ]
            n = int(keep.sum())
        res["n"] = int(n)
        res["seconds"] = time.perf_counter() - start
        out[task] = res
    return out


def _search(
    model: UniMP,
    test: Dataset,
    users: np.ndarray,
    items: np.ndarray,
    ks: Sequence[int],
    seed: int,
) -> tuple[dict[str, Any], int]:
    """Search metrics with queries from the target items' words (fixed ``seed``)."""
    assert model.tokenizer is not None
    titles = test.item_titles()
    titles = titles if titles is not None else np.full(test.n_items, "", dtype=object)
    maker = QueryMaker(
        [str(t) for t in titles], [str(c) for c in item_categories(test)], model.tokenizer
    )
    rng = np.random.default_rng(seed)
    keep = np.array([maker.has_words(int(i)) for i in items], bool)
    queries = [maker.sample(int(i), model.config.query_words, rng) for i in items[keep]]
    found, _ = model.search_internal(users[keep], queries, max(max(ks), model.config.beams))
    return ranking_metrics(found, items[keep], ks), int(keep.sum())
