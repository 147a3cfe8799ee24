"""UniMP-style unified multi-task personalization model.

Wei et al., "Towards Unified Multi-Modal Personalization: Large Vision-Language Models for
Generative Recommendation and Beyond", ICLR 2024 (arXiv 2403.10667). The paradigm: one
generative model reads a user's interleaved multimodal history (items, their images and
titles, the user's reviews and ratings) and serves every personalization task as an
instruction whose answer it generates token by token; tasks are trained jointly.

What is built here, at CPU scale:

- history schema: :mod:`polyrec.data.interleaved`; tokens: :mod:`.tokens` (items as TIGER
  semantic IDs from :mod:`polyrec.models.generative.semantic_ids`, text by a locally trained
  BPE tokenizer, rating tokens, task tokens, item feature vectors as soft tokens);
- tasks (:mod:`.prompts`): next item, product search, rating prediction, explanation;
- network (:mod:`.network`): a small decoder-only Transformer from scratch, or a Hugging Face
  causal-LM body loaded offline (``backbone``: a local folder or cached model name);
- multi-task training: each batch draws its examples' tasks with probabilities proportional to
  ``tasks`` (task sampling weights; a weight of 0 leaves the task out, so one task alone gives
  the single-task model of the same size); ``loss_weights`` scale each task's per-example loss
  (a per-task form of UniMP's token-level re-weighting); each target token's cross-entropy is
  normalised over the tokens decoding may emit there (its depth's ID codes, the rating tokens,
  or text + ``[EOS]``), so training and decoding share one distribution;
- validation / early stopping on one task: ``early_stopping`` is a next-item metric of the
  shared evaluator (``ndcg@10``) or another task's metric named with the task's prefix
  (``search_ndcg@10``, ``rating_neg_rmse``, ``explanation_rouge_l``; error metrics negated so
  that higher is better), so a single-task model early-stops on its own task; for the
  multi-task model ``tasks_geomean@K`` validates every trained task and stops on the geometric
  mean of their headlines (NDCG@K of next item and search, 1 / RMSE, ROUGE-L): its log is the
  mean of the tasks' log-values, so a relative gain counts the same in every task, whatever
  the metric's scale;
- decoding: item IDs by beam search constrained to the prefix trie of real IDs (as TIGER), the
  rating as the expectation over the rating tokens (always within the rating scale), the
  explanation greedily over text tokens until ``[EOS]``.

Not reproduced: the paper's vision-language backbone (billions of parameters, CLIP image
encoder, cross-attention fusion), its context-reconstruction loss, and user-guided image
generation (no image generator runs here; an image head would add a task token and a decoder
over ``features`` without changing the token space).

As a :class:`~polyrec.models.base.Recommender`, scores are next-item beams (``beams`` items get
their ID log-probability, others ``-inf``, as :class:`~polyrec.models.generative.tiger.TIGER`)
and evaluation follows the sequential protocol (history not masked).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from polyrec.data.dataset import Dataset
from polyrec.data.interleaved import (
    InterleavedLog,
    has_reviews,
    item_categories,
)
from polyrec.data.sequences import PAD, merge_interactions
from polyrec.errors import PolyrecError
from polyrec.features.text import DEFAULT_FIELDS, DEFAULT_MODEL
from polyrec.models.base import ModelConfig
from polyrec.models.generative.decoding import (
    finish_beams,
    item_feature_matrix,
    scores_from_beams,
    trie_log_probs,
)
from polyrec.models.generative.semantic_ids import (
    RQKMeansConfig,
    SemanticIdConfig,
    SemanticIdMap,
    build_semantic_ids,
)
from polyrec.models.sequential import SequentialConfig, SequentialRecommender
from polyrec.models.unified.network import HFBackbone, ScratchBackbone, UnifiedLM
from polyrec.models.unified.prompts import (
    Example,
    PromptBuilder,
    QueryMaker,
    left_pad,
    training_batch,
)
from polyrec.models.unified.tokens import (
    HISTORY_FIELDS,
    SPECIAL_ID,
    TASKS,
    HistorySerializer,
    TextTokenizer,
    Tokens,
    UnifiedVocab,
    ragged,
)

MAX_RATING_LEVELS = 11
ALL_TASKS_METRIC = "tasks_geomean"
ERROR_METRICS = ("rmse", "mae")  # lower is better: validated negated, as rating_neg_rmse
# each task's headline validation metric (higher is better), at cut-off k for the rankings
VALIDATION_HEADLINES = {
    "next": "ndcg@{k}",
    "search": "search_ndcg@{k}",
    "rating": "rating_neg_rmse",
    "explanation": "explanation_rouge_l",
}


class UniMPConfig(SequentialConfig):
    """UniMP options. ``max_len`` is the number of history events in a prompt."""

    max_len: int = Field(8, ge=2)
    dim: int = Field(64, ge=8)
    heads: int = Field(2, ge=1)
    layers: int = Field(2, ge=1)
    ffn_dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_positions: int = Field(512, ge=16)
    backbone: str = "scratch"
    tasks: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(TASKS, 1.0))
    loss_weights: dict[str, float] = Field(default_factory=dict)
    history_fields: tuple[str, ...] = HISTORY_FIELDS
    text_vocab_size: int = Field(2000, ge=50)
    max_title_tokens: int = Field(8, ge=1)
    max_review_tokens: int = Field(8, ge=0)
    max_query_tokens: int = Field(12, ge=1)
    max_explanation_tokens: int = Field(16, ge=1)
    query_words: int = Field(3, ge=1)
    item_features: str = Field("text", pattern=r"^(text|vector:.+)$")
    text_model: str = DEFAULT_MODEL
    text_fields: tuple[str, ...] = DEFAULT_FIELDS
    semantic_ids: SemanticIdConfig = SemanticIdConfig(
        method="rqkmeans", rqkmeans=RQKMeansConfig(levels=3, codebook_size=64)
    )
    beams: int = Field(20, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(20, ge=1)
    eval_every: int = Field(2, ge=1)
    score_batch_size: int = 128

    @field_validator("tasks", "loss_weights")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; tasks are {list(TASKS)}")
        if any(w < 0 for w in value.values()):
            raise ValueError("task weights must be >= 0")
        return value

    @field_validator("history_fields")
    @classmethod
    def _known_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - set(HISTORY_FIELDS)
        if unknown:
            raise ValueError(f"unknown history fields {sorted(unknown)}; use {HISTORY_FIELDS}")
        return value

    def active_tasks(self) -> list[str]:
        """Tasks with a positive sampling weight, in :data:`TASKS` order."""
        return [t for t in TASKS if self.tasks.get(t, 0.0) > 0]


class UniMP(SequentialRecommender):
    """The unified model (module docstring). After ``fit``: ``id_map`` (semantic IDs),
    ``semantic_id_report``, ``tokenizer``, ``vocab``; per-user interleaved histories are the
    training data's (then training + validation, as every sequential model)."""

    name = "unimp"
    Config: ClassVar[type[ModelConfig]] = UniMPConfig
    config: UniMPConfig

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        if not self.config.active_tasks():
            raise PolyrecError("unimp needs at least one task with a positive weight")
        self.id_map: SemanticIdMap | None = None
        self.semantic_id_report: dict[str, Any] = {}
        self.tokenizer: TextTokenizer | None = None
        self.vocab: UnifiedVocab | None = None
        self.serializer: HistorySerializer | None = None
        self.prompts: PromptBuilder | None = None
        self.item_text: Tokens | None = None
        self.user_history = ragged([])
        self._features: torch.Tensor | None = None
        self._train_examples: dict[str, np.ndarray] = {}
        self._train_events: Tokens | None = None
        self._train_log: InterleavedLog | None = None
        self._queries: QueryMaker | None = None

    # ------------------------------------------------------------------ public tasks
    def search(self, query: str, history: Sequence[Any] | None = None, k: int = 10) -> pd.DataFrame:
        """Product search: the top-``k`` items (frame ``item, score, rank``; external ids) for a
        text ``query`` after ``history``, external item ids oldest first (may be empty)."""
        self._check_fitted()
        assert self.item_ids is not None
        if k < 1:
            raise PolyrecError(f"k must be >= 1, got {k}")
        items = np.zeros(0, np.int64)
        if history is not None and len(history) > 0:
            items = self.item_ids.to_internal(history, what="item")
        found, scores = self.search_after_items(items, query, beams=k)
        keep = found >= 0
        out = pd.DataFrame({"item": found[keep][:k], "score": scores[keep][:k].astype(np.float32)})
        out["rank"] = np.arange(1, len(out) + 1)
        out["item"] = self.item_ids.to_external(out["item"].to_numpy())
        return out

    def predict_rating(self, users: Sequence[Any], items: Sequence[Any]) -> np.ndarray:
        """Predicted ratings (float64, within the rating scale) of external (user, item) pairs."""
        u, i = self._pairs(users, items)
        return self.rating_internal(u, i)

    def explain(self, users: Sequence[Any], items: Sequence[Any]) -> list[str]:
        """A generated review-like explanation for each external (user, item) pair."""
        u, i = self._pairs(users, items)
        return self.explain_internal(u, i)

    # ------------------------------------------------------------------ internal-index tasks
    def next_items(
        self, users: np.ndarray, beams: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Next-item beams of internal users: ``(items (B, k), log_probs (B, k))``."""
        self._check_fitted()
        builder = cast(PromptBuilder, self.prompts)
        prompts = [builder.prompt("next", self._user_history(u)) for u in users]
        return self._beam_items(prompts, beams or self.config.beams)

    def search_internal(
        self, users: np.ndarray, queries: Sequence[Sequence[int]], beams: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search beams for internal users and tokenised queries (tokenizer text ids)."""
        self._check_fitted()
        builder = cast(PromptBuilder, self.prompts)
        prompts = [
            builder.prompt("search", self._user_history(u), query=q)
            for u, q in zip(users, queries, strict=True)
        ]
        return self._beam_items(prompts, beams or self.config.beams)

    def search_after_items(
        self, history: np.ndarray, query: str, beams: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search beams ``(items, scores)``, best first (item ``-1``: no valid item), for a
        text ``query`` after an ad-hoc history of internal items, oldest first."""
        self._check_fitted()
        hist = self._adhoc_history(np.asarray(history, np.int64).tolist())
        query_ids = cast(TextTokenizer, self.tokenizer).encode([query])[0]
        prompt = cast(PromptBuilder, self.prompts).prompt("search", hist, query=query_ids)
        found, scores = self._beam_items([prompt], beams or self.config.beams)
        return found[0], scores[0]

    def rating_internal(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Expected rating over the rating tokens for internal (user, item) pairs."""
        self._check_fitted()
        vocab = cast(UnifiedVocab, self.vocab)
        if not vocab.rating_levels:
            raise PolyrecError(f"{self.name} was trained without ratings")
        builder = cast(PromptBuilder, self.prompts)
        levels = torch.tensor(vocab.rating_levels, dtype=torch.float64)
        out = []
        for lo in range(0, len(users), self.config.score_batch_size):
            sl = slice(lo, lo + self.config.score_batch_size)
            prompts = [
                builder.prompt("rating", self._user_history(u), item=int(i))
                for u, i in zip(users[sl], items[sl], strict=True)
            ]
            with torch.inference_mode():
                states = self._prompt_states(prompts)[0]
                lo_tok = vocab.rating_offset
                net = cast(UnifiedLM, self.module)
                logits = net.logits(states)[:, lo_tok : lo_tok + len(levels)]
            out.append((F.softmax(logits.double(), -1).cpu() * levels).sum(-1).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def explain_internal(self, users: np.ndarray, items: np.ndarray) -> list[str]:
        """Greedy explanations for internal (user, item) pairs."""
        self._check_fitted()
        builder = cast(PromptBuilder, self.prompts)
        tok = cast(TextTokenizer, self.tokenizer)
        out: list[str] = []
        for lo in range(0, len(users), self.config.score_batch_size):
            sl = slice(lo, lo + self.config.score_batch_size)
            prompts = [
                builder.prompt("explanation", self._user_history(u), item=int(i))
                for u, i in zip(users[sl], items[sl], strict=True)
            ]
            out.extend(tok.decode(ids) for ids in self._greedy_text(prompts))
        return out

    # ------------------------------------------------------------------ training
    def _fit(self, train: Dataset, valid: Dataset | None) -> None:
        cfg = self.config
        if valid is not None and cfg.early_stopping:
            for task in validation_tasks(cfg.early_stopping, cfg.active_tasks()):
                if cfg.tasks.get(task, 0) <= 0:
                    raise PolyrecError(
                        f"early_stopping {cfg.early_stopping!r} validates task {task!r}, which "
                        "has weight 0: name a metric of a trained task, or set early_stopping: null"
                    )
        self._check_data(train)
        features = item_feature_matrix(
            train, cfg.item_features, cfg.text_model, cfg.text_fields, cfg.progress
        )
        self.id_map, self.semantic_id_report = build_semantic_ids(features, cfg.semantic_ids)
        mean, std = features.mean(0), features.std(0)
        self._features = torch.from_numpy(
            ((features - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
        )
        titles = train.item_titles()
        titles = titles if titles is not None else np.full(train.n_items, "", dtype=object)
        cats = item_categories(train)
        log = InterleavedLog.from_dataset(train)
        reviews = [] if log.reviews is None else [r for r in log.reviews if r]
        self.tokenizer = TextTokenizer.train(
            [*map(str, titles), *map(str, cats), *reviews], cfg.text_vocab_size
        )
        self.vocab = UnifiedVocab(
            rating_levels=_rating_levels(train),
            sid_vocab=tuple(self.id_map.vocab),
            text_size=self.tokenizer.vocab_size,
        )
        self.item_text = ragged(
            [
                np.array(t[: cfg.max_title_tokens], np.int64)
                for t in self.tokenizer.encode([str(t) for t in titles])
            ]
        )
        self._make_builders()
        self._queries = QueryMaker([str(t) for t in titles], [str(c) for c in cats], self.tokenizer)
        self._train_log = log
        self._train_events = cast(HistorySerializer, self.serializer).events(log)
        self._train_examples = self._examples(log)
        try:
            super()._fit(train, valid)
        finally:
            self._train_log = self._train_events = None
            self._train_examples = {}

    def _check_data(self, train: Dataset) -> None:
        tasks = self.config.active_tasks()
        if "rating" in tasks and len(_rating_levels(train)) < 2:
            raise PolyrecError(
                f"task 'rating' needs explicit ratings; dataset {train.name!r} has none: "
                "set tasks.rating to 0"
            )
        if "explanation" in tasks and not has_reviews(train):
            raise PolyrecError(
                f"task 'explanation' needs review text (interaction_data['review']); dataset "
                f"{train.name!r} has none: set tasks.explanation to 0"
            )
        if (
            "search" in tasks
            and train.item_titles() is None
            and (item_categories(train) == "").all()
        ):
            raise PolyrecError(
                f"task 'search' builds queries from item titles/categories; dataset "
                f"{train.name!r} has neither: set tasks.search to 0"
            )

    def _make_builders(self) -> None:
        cfg = self.config
        self.serializer = HistorySerializer(
            cast(UnifiedVocab, self.vocab),
            cast(SemanticIdMap, self.id_map),
            cast(TextTokenizer, self.tokenizer),
            cast(Tokens, self.item_text),
            cfg.history_fields,
            cfg.max_review_tokens,
        )
        self.prompts = PromptBuilder(
            self.serializer, cfg.max_query_tokens, cfg.max_explanation_tokens
        )

    def _examples(self, log: InterleavedLog) -> dict[str, np.ndarray]:
        """Per active task, the flat log positions that can be a target: every event with at
        least one earlier event of its user (and a rating / review / query words as needed)."""
        lengths = np.diff(log.indptr)
        starts = np.repeat(log.indptr[:-1], lengths)
        pos = np.arange(len(log.items))
        base = pos > starts
        out = {}
        for task in self.config.active_tasks():
            ok = base.copy()
            if task == "rating":
                ok &= log.ratings is not None and ~np.isnan(log.ratings)
            if task == "explanation":
                ok &= np.array([r is not None for r in log.reviews], bool)  # type: ignore[union-attr]
            if task == "search":
                q = cast(QueryMaker, self._queries)
                ok &= np.array([q.has_words(int(i)) for i in log.items], bool)
            out[task] = pos[ok]
        return out

    def example(
        self,
        task: str,
        log: InterleavedLog,
        events: Tokens,
        position: int,
        rng: np.random.Generator,
    ) -> Example:
        """The ``task`` example whose target is the event at flat ``position`` of ``log``: the
        prompt holds only the (up to ``max_len``) earlier events of that user."""
        user = int(np.searchsorted(log.indptr, position, side="right") - 1)
        lo = max(int(log.indptr[user]), position - self.config.max_len)
        history = events.span(lo, position)
        target_event = log.event(position)
        builder = cast(PromptBuilder, self.prompts)
        query = None
        if task == "search":
            query = cast(QueryMaker, self._queries).sample(
                target_event.item, self.config.query_words, rng
            )
        prompt, feats = builder.prompt(task, history, item=target_event.item, query=query)
        review = None
        if task == "explanation":
            review = cast(TextTokenizer, self.tokenizer).encode([target_event.review or ""])[0]
        target = builder.target(
            task, item=target_event.item, rating=target_event.rating, review=review
        )
        return Example(task, prompt, feats, target)

    def _dims(self, train: Dataset) -> dict[str, int]:
        dims = super()._dims(train)
        dims.update(
            vocab_size=cast(UnifiedVocab, self.vocab).size,
            feat_dim=int(cast(torch.Tensor, self._features).shape[1]),
        )
        return dims

    def _build(self, dims: dict[str, int]) -> torch.nn.Module:
        cfg = self.config
        if cfg.backbone == "scratch":
            backbone = ScratchBackbone(
                cfg.dim, cfg.heads, cfg.layers, cfg.ffn_dim, cfg.dropout, cfg.max_positions
            )
        else:
            backbone = HFBackbone(cfg.backbone)
        features = self._features
        if features is None:  # at load: the state dict fills the buffer
            features = torch.zeros(dims["n_items"], dims["feat_dim"])
        groups = torch.from_numpy(cast(UnifiedVocab, self.vocab).output_groups())
        return UnifiedLM(dims["vocab_size"], backbone, features, groups)

    def _batches(
        self, train: Dataset, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.config
        tasks = [t for t in cfg.active_tasks() if len(self._train_examples.get(t, ())) > 0]
        if not tasks:
            raise PolyrecError("no training examples: every user needs at least two events")
        p = np.array([cfg.tasks[t] for t in tasks], np.float64)
        p /= p.sum()
        n_events = max(len(v) for v in self._train_examples.values())
        steps = cfg.steps_per_epoch or math.ceil(n_events / cfg.batch_size)
        log = cast(InterleavedLog, self._train_log)
        events = cast(Tokens, self._train_events)
        weights = {t: cfg.loss_weights.get(t, 1.0) for t in TASKS}
        for _ in range(steps):
            counts = rng.multinomial(cfg.batch_size, p)
            batch = []
            for task, n in zip(tasks, counts, strict=True):
                for position in rng.choice(self._train_examples[task], size=n):
                    batch.append(self.example(task, log, events, int(position), rng))
            yield training_batch(batch, weights)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.train_module(batch["ids"], batch["feats"], batch["targets"], batch["weights"])

    def _validation_metrics(
        self, train: Dataset, valid: Dataset, ks: tuple[int, ...]
    ) -> dict[str, float]:
        metric = self.config.early_stopping
        tasks = validation_tasks(metric, self.config.active_tasks())
        out = super()._validation_metrics(train, valid, ks) if "next" in tasks else {}
        others = [t for t in tasks if t != "next"]
        if others:
            from polyrec.models.unified.evaluate import evaluate_tasks  # it imports this module

            for task, metrics in evaluate_tasks(self, valid, tasks=others, ks=ks).items():
                for name, value in metrics.items():
                    if name in ERROR_METRICS:
                        out[f"{task}_neg_{name}"] = -value
                    elif name not in ("n", "seconds", "examples"):
                        out[f"{task}_{name}"] = value
        if is_all_tasks_metric(metric):
            assert metric is not None
            k = metric.partition("@")[2]
            logs = []
            for task in tasks:
                value = out[VALIDATION_HEADLINES[task].format(k=k)]
                value = -1.0 / value if task == "rating" else value  # 1 / RMSE
                logs.append(math.log(max(value, 1e-12)))
            out[metric] = math.exp(sum(logs) / len(logs))
        return out

    # ------------------------------------------------------------------ histories
    def set_histories(self, *datasets: Dataset) -> None:
        """Each user's history (item tokens and interleaved events) from ``datasets``."""
        super().set_histories(*datasets)
        merged = merge_interactions(*datasets)
        log = InterleavedLog.from_dataset(merged)
        events = cast(HistorySerializer, self.serializer).events(log)
        rows, feats = [], []
        for u in range(log.n_users):
            hi = int(log.indptr[u + 1])
            lo = max(int(log.indptr[u]), hi - self.config.max_len)
            ids, f = events.span(lo, hi)
            rows.append(ids)
            feats.append(f)
        self.user_history = ragged(rows, feats)

    def _user_history(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        return self.user_history.row(int(user))

    def _adhoc_history(self, items: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Serialised item-only events (no ratings or reviews) of the last ``max_len`` items."""
        serializer = cast(HistorySerializer, self.serializer)
        parts = [serializer.item(int(i)) for i in list(items)[-self.config.max_len :]]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _pairs(self, users: Sequence[Any], items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        assert self.user_ids is not None and self.item_ids is not None
        u = self.user_ids.to_internal(users, what="user")
        i = self.item_ids.to_internal(items, what="item")
        if len(u) != len(i):
            raise PolyrecError(f"{len(u)} users but {len(i)} items: pass one item per user")
        return u, i

    # ------------------------------------------------------------------ Recommender scoring
    def _score(self, users: np.ndarray) -> torch.Tensor:
        scores = scores_from_beams(*self.next_items(users), self.n_items)
        cold = torch.from_numpy(self.histories[users][:, -1] == PAD)
        if cold.any():
            scores[cold] = self.popularity
        return scores

    def _next_item_scores(self, items: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
        builder = cast(PromptBuilder, self.prompts)
        rows = items.cpu().numpy()
        prompts = [builder.prompt("next", self._adhoc_history(r[r != PAD] - 1)) for r in rows]
        return scores_from_beams(*self._beam_items(prompts, self.config.beams), self.n_items)

    # ------------------------------------------------------------------ decoding
    def _prompt_states(
        self, prompts: Sequence[tuple[np.ndarray, np.ndarray]], use_cache: bool = False
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Last-position states ``(B, dim)`` of left-padded prompts, the cache, the key mask
        and the last positions."""
        net = cast(UnifiedLM, self.module)
        ids, feats, mask, pos = (t.to(self.device) for t in left_pad(*zip(*prompts, strict=True)))
        states, cache = net.run(ids, feats, mask, pos, use_cache=use_cache)
        return states[:, -1], cache, mask, pos[:, -1]

    def _beam_items(
        self, prompts: Sequence[tuple[np.ndarray, np.ndarray]], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Constrained beam search over semantic IDs: ``(items (B, k), log_probs (B, k))``,
        best first, ``-1`` / ``-inf`` where fewer than ``k`` items exist."""
        bs = self.config.score_batch_size
        parts = [self._beam_batch(prompts[lo : lo + bs], k) for lo in range(0, len(prompts), bs)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    @torch.inference_mode()
    def _beam_batch(
        self, prompts: Sequence[tuple[np.ndarray, np.ndarray]], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        net = cast(UnifiedLM, self.module)
        id_map, vocab = cast(SemanticIdMap, self.id_map), cast(UnifiedVocab, self.vocab)
        device = self.device
        last, cache, mask, last_pos = self._prompt_states(prompts, use_cache=True)
        b = last.shape[0]
        scores = torch.zeros(b, 1, device=device)
        keys = torch.zeros(b, 1, dtype=torch.long)
        gen = torch.zeros(b, 1, 0, dtype=torch.long, device=device)  # (B, beams, d) token ids
        for d in range(id_map.depth):
            nb = gen.shape[1]
            if d == 0:
                states = last
            else:
                tok = gen.reshape(b * nb, d)
                m = torch.cat(
                    [mask.repeat_interleave(nb, 0), torch.ones_like(tok, dtype=torch.bool)], 1
                )
                p = last_pos.repeat_interleave(nb)[:, None] + 1 + torch.arange(d, device=device)
                states, _ = net.run(
                    tok,
                    torch.zeros_like(tok),
                    m,
                    p,
                    net.backbone.repeat_cache(cache, nb),
                    use_cache=True,
                )
                states = states[:, -1]
            lo = vocab.sid_offsets[d]
            logits = net.logits(states)[:, lo : lo + id_map.vocab[d]]
            logp = trie_log_probs(logits, id_map, keys.reshape(-1), d)
            v = id_map.vocab[d]
            total = (scores[:, :, None] + logp.view(b, nb, v)).view(b, nb * v)
            top, idx = total.topk(min(k, nb * v), dim=1)
            beam, code = idx // v, idx % v
            keys = keys.gather(1, beam.cpu()) * v + code.cpu()
            prev = gen.gather(1, beam[:, :, None].expand(-1, -1, d))
            gen = torch.cat([prev, (code + lo)[:, :, None]], 2)
            scores = top
        codes = (gen - torch.tensor(vocab.sid_offsets, device=device)).cpu().numpy()
        return finish_beams(codes, scores.cpu().numpy(), id_map, k)

    @torch.inference_mode()
    def _greedy_text(self, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
        """Greedy decoding over text tokens and ``[EOS]``: tokenizer ids per prompt."""
        net = cast(UnifiedLM, self.module)
        vocab = cast(UnifiedVocab, self.vocab)
        eos = SPECIAL_ID["[EOS]"]
        last, cache, mask, pos = self._prompt_states(prompts, use_cache=True)
        b, device = last.shape[0], self.device
        text = torch.tensor(vocab.text_offset, device=device)  # text + [EOS] group
        out = torch.full((b, self.config.max_explanation_tokens), eos, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        states = last
        for t in range(self.config.max_explanation_tokens):
            tok = net.group_logits(states, text).argmax(-1)
            tok = torch.where(done.to(device), eos, tok)
            out[:, t] = tok.cpu()
            done |= (tok == eos).cpu()
            if bool(done.all()) or t + 1 == self.config.max_explanation_tokens:
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.bool, device=device)], 1)
            pos = pos + 1
            step, cache = net.run(
                tok[:, None], torch.zeros_like(tok[:, None]), mask, pos[:, None], cache, True
            )
            states = step[:, -1]
        texts = []
        for row in out.numpy():
            end = np.flatnonzero(row == eos)
            row = row[: end[0]] if len(end) else row
            texts.append((row - vocab.text_offset).tolist())
        return texts

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        vocab = cast(UnifiedVocab, self.vocab)
        item_text = cast(Tokens, self.item_text)
        state.update(
            semantic_ids=cast(SemanticIdMap, self.id_map).state(),
            tokenizer=cast(TextTokenizer, self.tokenizer).json,
            rating_levels=np.asarray(vocab.rating_levels, np.float64),
            item_text={"ids": item_text.ids, "indptr": item_text.indptr},
            user_history={
                "ids": self.user_history.ids,
                "feats": self.user_history.feats,
                "indptr": self.user_history.indptr,
            },
        )
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        def arr(x: Any) -> np.ndarray:
            return x.numpy() if torch.is_tensor(x) else np.asarray(x)

        self.id_map = SemanticIdMap.from_state(
            {k: arr(v) for k, v in state["semantic_ids"].items()}
        )
        self.tokenizer = TextTokenizer(state["tokenizer"])
        self.vocab = UnifiedVocab(
            rating_levels=tuple(float(x) for x in arr(state["rating_levels"])),
            sid_vocab=tuple(self.id_map.vocab),
            text_size=self.tokenizer.vocab_size,
        )
        it = state["item_text"]
        ids = arr(it["ids"])
        self.item_text = Tokens(ids, np.zeros(len(ids), np.int64), arr(it["indptr"]))
        uh = state["user_history"]
        self.user_history = Tokens(arr(uh["ids"]), arr(uh["feats"]), arr(uh["indptr"]))
        self._make_builders()
        super()._set_state(state)


def is_all_tasks_metric(metric: str | None) -> bool:
    """Whether ``metric`` is ``tasks_geomean@K``, the metric of every trained task at once."""
    return (metric or "").startswith(ALL_TASKS_METRIC + "@")


def validation_tasks(metric: str | None, active: Sequence[str]) -> list[str]:
    """The tasks validated for the early-stopping ``metric`` (module docstring): every
    ``active`` task for ``tasks_geomean@K``; the named task for ``search_...``, ``rating_...``
    and ``explanation_...``; next item for any other name."""
    if is_all_tasks_metric(metric):
        return list(active)
    prefix = (metric or "").partition("_")[0]
    return [prefix if prefix in TASKS and prefix != "next" else "next"]


def _rating_levels(ds: Dataset) -> tuple[float, ...]:
    """The rating scale: the distinct ratings when there are at most
    :data:`MAX_RATING_LEVELS`, else that many evenly spaced levels; ``()`` without explicit
    ratings (none, or a single value as in implicit data)."""
    if ds.ratings is None or len(ds.ratings) == 0:
        return ()
    values = np.unique(ds.ratings.astype(np.float64))
    if len(values) < 2:
        return ()
    if len(values) > MAX_RATING_LEVELS:
        values = np.linspace(values[0], values[-1], MAX_RATING_LEVELS)
    return tuple(float(v) for v in values)
