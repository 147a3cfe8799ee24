"""The one retrieval evaluator: batched full ranking (default) or sampled ranking (on request).

Full ranking (Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020): every
user with at least one test interaction is ranked against the whole catalogue, the items of
every ``exclude`` matrix (by default the model's training items) masked: the top ``max(ks)``
come from the model's :meth:`~polyrec.models.base.Recommender.top_items`, the ranking
``recommend`` uses too. Results are deterministic; equal scores within the top-k rank the lower
item index first, and which of several items tied at the k-th score makes the cut is up to
``torch.topk`` (for models scored densely it does not depend on the batch size; inner-product
models, which skip the items their norm rules out, may pick another of the tied items). A test
item that the user also has in an excluded matrix is masked like any other and can never be
hit; it still counts in the user's number of relevant items (as in RecBole).
``protocol["masked_test_interactions"]`` reports how often that happens. Memory is bounded by
``batch_size x n_items`` (inner-product models: by 16 MB score blocks).

Sampled ranking (the "1 + 100" protocol of NCF / SASRec / BERT4Rec) is used only when a
:class:`SampledSpec` is given: each test interaction is ranked against ``n_negatives`` items
drawn (with replacement, as in the SASRec / BERT4Rec reference code) uniformly or by training
popularity among items outside the user's history (excluded + test items). Metrics are computed
per test interaction, averaged per user, then over users.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from rich.progress import track

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.eval.beyond import BeyondAccuracy
from polyrec.eval.metrics import RANKING_METRICS, check_ks, check_metrics, ranking_metrics
from polyrec.models.base import Recommender
from polyrec.ranking import mask_seen_

_MAX_RESAMPLE_ROUNDS = 1000


@dataclass(frozen=True)
class SampledSpec:
    """Sampled evaluation: rank each test item against ``n_negatives`` sampled negatives."""

    n_negatives: int = 100
    strategy: Literal["uniform", "popularity"] = "uniform"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_negatives < 1:
            raise PolyrecError(f"n_negatives must be >= 1, got {self.n_negatives}")
        if self.strategy not in ("uniform", "popularity"):
            raise PolyrecError(
                f"sampling strategy must be 'uniform' or 'popularity', got {self.strategy!r}"
            )

    @property
    def mode(self) -> str:
        """Protocol label, e.g. ``sampled-uni100`` or ``sampled-pop100``."""
        return f"sampled-{'uni' if self.strategy == 'uniform' else 'pop'}{self.n_negatives}"


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        summary: ``{"recall@10": mean over users, ..., "coverage@10": ...}`` (lower-case keys).
        per_user: per-user arrays aligned with ``users`` (ranking metrics, ``novelty@K``,
            ``ild@K``).
        users: internal ids of the evaluated users, ascending.
        protocol: how it was evaluated (mode, ks, exclusions, user / item counts).
        seconds: wall-clock time of the evaluation, model scoring included.
    """

    summary: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    protocol: dict[str, Any]
    seconds: float

    def to_record(self) -> dict[str, Any]:
        """JSON-ready part of a run record: ``metrics``, ``protocol``, ``eval_seconds``."""
        return {
            "metrics": dict(self.summary),
            "protocol": dict(self.protocol),
            "eval_seconds": self.seconds,
        }


def evaluate(
    model: Recommender,
    test: Dataset,
    *,
    exclude: Sequence[sp.spmatrix] | Mapping[str, sp.spmatrix] | None = None,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
    batch_size: int | None = None,
    users: np.ndarray | Sequence[int] | None = None,
    sampled: SampledSpec | None = None,
    item_vectors: np.ndarray | None = None,
    beyond: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a fitted model on ``test`` (a Dataset sharing the model's id maps).

    Args:
        exclude: user x item matrices whose stored items are masked before ranking; a mapping
            names them in the protocol. Default: the model's training items (``model.seen``);
            for a test phase after validation pass ``{"train": ..., "valid": ...}``; ``[]``
            masks nothing.
        ks: cut-offs; all are read from one top-``max(ks)`` list.
        metrics: ranking metrics among ``recall, ndcg, hr, mrr, precision, map``.
        batch_size: users ranked at once (memory ~ ``batch_size x n_items`` floats; for
            inner-product models in full ranking, 16 MB blocks whatever the batch); default
            the model's ``score_batch_size``, else ``Recommender.ranking_batch_size`` (full)
            or ``scoring_batch_size`` (sampled).
        users: internal user ids to evaluate (default: all); those without a test interaction
            are skipped and counted in ``protocol["skipped_users"]``.
        sampled: a :class:`SampledSpec` for sampled ranking; default full ranking.
        item_vectors: (n_items, d) item features for ``ild@K`` (full ranking only).
        beyond: also compute coverage / novelty / Gini (/ ILD) on the top-K lists (full only).
        progress: show a progress bar.
    """
    start_time = time.perf_counter()
    ks, metrics = check_ks(ks), check_metrics(metrics)
    if batch_size is not None and batch_size < 1:
        raise PolyrecError(f"batch_size must be >= 1, got {batch_size}")
    n_items = model.n_items
    batch_size = (
        model.scoring_batch_size(batch_size)
        if sampled is not None
        else model.ranking_batch_size(batch_size)
    )
    if test.item_ids != model.item_ids or test.user_ids != model.user_ids:
        raise PolyrecError("test set must share the model's id maps (split one Dataset)")
    names, masks = _exclusions(model, exclude, (test.n_users, n_items))
    test_csr = test.binary_csr
    n_relevant = np.diff(test_csr.indptr)

    candidates = np.arange(test.n_users) if users is None else _check_users(users, test.n_users)
    eval_users = candidates[n_relevant[candidates] > 0]
    if len(eval_users) == 0:
        raise PolyrecError(f"test set {test.name!r} has no user with a test interaction")
    overlap = test_csr.multiply(_union(masks, test_csr.shape)) if masks else None
    protocol: dict[str, Any] = {
        "mode": "full" if sampled is None else sampled.mode,
        "ks": list(ks),
        "metrics": list(metrics),
        "exclude": [f"{name}(nnz={m.nnz})" for name, m in zip(names, masks, strict=True)],
        "n_users": len(eval_users),
        "skipped_users": len(candidates) - len(eval_users),
        "n_items": n_items,
        "n_test_interactions": int(n_relevant[eval_users].sum()),
        "masked_test_interactions": (
            0 if overlap is None else int(np.diff(overlap.tocsr().indptr)[eval_users].sum())
        ),
        "tie_break": "lower item index first",
    }

    def shown(batches: Iterator[Any]) -> Iterator[Any]:
        if not progress:
            return batches
        total = -(-len(eval_users) // batch_size)
        return track(batches, total=total, description=f"evaluating {model.name}", transient=True)

    if sampled is None:
        acc = BeyondAccuracy(ks, model.seen, item_vectors) if beyond else None
        ranked = shown(model.top_items(eval_users, ks[-1], masks, batch_size))
        parts = _full_ranking(ranked, test_csr, ks, metrics, acc)
    else:
        protocol.update(
            n_negatives=sampled.n_negatives, strategy=sampled.strategy, seed=sampled.seed
        )
        acc = None
        parts = _sampled_ranking(
            shown(model.score_batches(eval_users, batch_size)),
            masks,
            test_csr,
            eval_users,
            model.seen,
            sampled,
            ks,
            metrics,
        )

    per_user = {key: np.concatenate(vals) for key, vals in parts.items()}
    summary = {key: float(val.mean()) for key, val in per_user.items()}
    if acc is not None:
        summary.update(acc.summary())
    return EvalResult(
        summary=summary,
        per_user=per_user,
        users=eval_users,
        protocol=protocol,
        seconds=time.perf_counter() - start_time,
    )


# ---------------------------------------------------------------------- full ranking
def _full_ranking(
    ranked: Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]],
    test_csr: sp.csr_matrix,
    ks: tuple[int, ...],
    metrics: tuple[str, ...],
    acc: BeyondAccuracy | None,
) -> dict[str, list[np.ndarray]]:
    n_items = test_csr.shape[1]
    n_relevant = np.diff(test_csr.indptr)
    # Sorted keys user * n_items + item of every test pair: membership by binary search.
    test_keys = np.repeat(np.arange(test_csr.shape[0], dtype=np.int64), n_relevant) * n_items
    test_keys += test_csr.indices
    parts: dict[str, list[np.ndarray]] = {}
    for batch, vals_t, idx_t in ranked:
        vals, idx = vals_t.numpy(), idx_t.numpy()
        _check_finite(vals)
        valid = vals > -np.inf
        query = batch[:, None] * n_items + idx
        pos = np.minimum(np.searchsorted(test_keys, query), len(test_keys) - 1)
        hits = (test_keys[pos] == query) & valid
        out = ranking_metrics(hits, n_relevant[batch], ks, metrics)
        if acc is not None:
            out.update(acc.update(idx, valid))
        for key, val in out.items():
            parts.setdefault(key, []).append(val)
    return parts


# ---------------------------------------------------------------------- sampled ranking
def _sampled_ranking(
    batches: Iterator[tuple[np.ndarray, torch.Tensor]],
    masks: list[sp.csr_matrix],
    test_csr: sp.csr_matrix,
    eval_users: np.ndarray,
    train: sp.csr_matrix,
    spec: SampledSpec,
    ks: tuple[int, ...],
    metrics: tuple[str, ...],
) -> dict[str, list[np.ndarray]]:
    rows = test_csr[eval_users]
    row_ptr = rows.indptr
    positives = rows.indices.astype(np.int64)
    history = _union([*masks, test_csr], test_csr.shape)
    # (n_rows, n_negatives), drawn once up front so results do not depend on batch_size
    negatives = _sample_negatives(eval_users, np.diff(row_ptr), history, train, spec)
    parts: dict[str, list[np.ndarray]] = {}
    offset = 0
    max_k = ks[-1]
    for batch, scores in batches:
        for m in masks:
            mask_seen_(scores, m, batch)
        lo, hi = row_ptr[offset], row_ptr[offset + len(batch)]
        local = np.repeat(np.arange(len(batch)), np.diff(row_ptr[offset : offset + len(batch) + 1]))
        pos, neg = positives[lo:hi], negatives[lo:hi]
        local_t = torch.from_numpy(local).to(scores.device)
        pos_s = scores[local_t, torch.from_numpy(pos).to(scores.device)].cpu().numpy()[:, None]
        neg_s = scores[local_t[:, None], torch.from_numpy(neg).to(scores.device)].cpu().numpy()
        _check_finite(pos_s)
        _check_finite(neg_s)
        # 0-based rank of the positive; ties with a negative: lower item index first.
        rank = (neg_s > pos_s).sum(axis=1) + ((neg_s == pos_s) & (neg < pos[:, None])).sum(axis=1)
        hits = (np.arange(max_k) == rank[:, None]) & (pos_s > -np.inf)
        out = ranking_metrics(hits, np.ones(len(pos)), ks, metrics)
        counts = np.bincount(local, minlength=len(batch))
        for key, val in out.items():
            per_user = np.bincount(local, weights=val, minlength=len(batch)) / counts
            parts.setdefault(key, []).append(per_user)
        offset += len(batch)
    return parts


def _sample_negatives(
    users: np.ndarray,
    rows_per_user: np.ndarray,
    history: sp.csr_matrix,
    train: sp.csr_matrix,
    spec: SampledSpec,
) -> np.ndarray:
    """(sum(rows_per_user), n_negatives) int64 items outside each row's user history."""
    n_items = history.shape[1]
    rng = np.random.default_rng(spec.seed)
    if spec.strategy == "uniform":
        prob = None
        free = n_items - np.diff(history.indptr)[users]
    else:
        pop = np.bincount(train.indices, minlength=n_items).astype(np.float64)
        if pop.sum() == 0:
            raise PolyrecError("popularity sampling needs training interactions")
        prob = pop / pop.sum()
        weighted = history.multiply(prob[None, :]).tocsr()
        free = 1.0 - np.asarray(weighted.sum(axis=1)).ravel()[users]
        free = np.where(free > 1e-12, free, 0.0)
    if (free <= 0).any():
        user = int(users[np.flatnonzero(free <= 0)[0]])
        raise PolyrecError(f"user {user} has no item left to sample as a negative")

    def draw(size: int | tuple[int, int]) -> np.ndarray:
        if prob is None:
            return rng.integers(0, n_items, size=size, dtype=np.int64)
        return rng.choice(n_items, size=size, p=prob)

    keys = np.repeat(np.arange(history.shape[0], dtype=np.int64), np.diff(history.indptr))
    keys = keys * n_items + history.indices

    def in_history(row_users: np.ndarray, items: np.ndarray) -> np.ndarray:
        query = row_users * n_items + items
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        return keys[pos] == query

    row_users = np.repeat(users, rows_per_user)[:, None]
    neg = draw((len(row_users), spec.n_negatives))
    bad_r, bad_c = np.nonzero(in_history(row_users, neg))
    for _ in range(_MAX_RESAMPLE_ROUNDS):
        if len(bad_r) == 0:
            return neg
        neg[bad_r, bad_c] = draw(len(bad_r))
        still = in_history(row_users[bad_r, 0], neg[bad_r, bad_c])
        bad_r, bad_c = bad_r[still], bad_c[still]
    user = int(row_users[bad_r[0], 0])
    raise PolyrecError(f"could not sample negatives for user {user}: history covers ~all items")


# ---------------------------------------------------------------------- helpers
def _exclusions(
    model: Recommender,
    exclude: Sequence[sp.spmatrix] | Mapping[str, sp.spmatrix] | None,
    shape: tuple[int, int],
) -> tuple[list[str], list[sp.csr_matrix]]:
    if exclude is None:
        named: list[tuple[str, Any]] = [("model.seen", model.seen)]
    elif isinstance(exclude, Mapping):
        named = list(exclude.items())
    else:
        named = [
            ("model.seen" if m is model.seen else f"exclude[{i}]", m) for i, m in enumerate(exclude)
        ]
    names, mats = [], []
    for name, m in named:
        if not sp.issparse(m) or m.shape != shape:
            got = m.shape if sp.issparse(m) else type(m).__name__
            raise PolyrecError(
                f"exclude {name} must be a sparse users x items {shape} matrix, got {got}"
            )
        names.append(str(name))
        mats.append(m.tocsr())
    return names, mats


def _union(mats: list[sp.csr_matrix], shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary union of sparse matrices, indices sorted."""
    out = sp.csr_matrix(shape, dtype=np.float32)
    for m in mats:
        out = out + (m != 0)
    out = out.tocsr()
    out.data[:] = 1.0
    out.sort_indices()
    return out


def _check_users(users: np.ndarray | Sequence[int], n_users: int) -> np.ndarray:
    arr = np.unique(np.asarray(users, dtype=np.int64))
    if len(arr) and (arr[0] < 0 or arr[-1] >= n_users):
        bad = arr[0] if arr[0] < 0 else arr[-1]
        raise PolyrecError(f"user index {bad} out of range [0, {n_users})")
    return arr


def _check_finite(scores: np.ndarray) -> None:
    if np.isnan(scores).any():
        raise PolyrecError("the model returned NaN scores")
