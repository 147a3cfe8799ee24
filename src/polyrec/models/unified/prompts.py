"""Tasks as instructions: prompt/target pairs of the four UniMP tasks, and their batching.

Every example is ``[BOS] [TASK] history [SEP] context [ANS]`` followed by the target, where
``history`` is the serialised interleaved history (:mod:`.tokens`) of the events **before** the
target event only, and (UniMP, Section 3):

- ``next`` (next item): no context; target = the next item's semantic ID;
- ``search`` (product search): context ``[QUERY] words``, a query made from the target item's
  title and category words (as UniMP builds its search queries); target = the item's ID;
- ``rating`` (preference prediction): context ``[CAND] item``; target = the rating token;
- ``explanation``: context ``[CAND] item``; target = the user's review text, then ``[EOS]``.

Queries use alphabetic words only (no model numbers or ``#id`` tags), so that a query names
what the item is, not which item it is; 1 to ``query_words`` of them are drawn per example.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from polyrec.errors import PolyrecError
from polyrec.models.unified.tokens import (
    PAD_ID,
    SPECIAL_ID,
    TASK_TOKENS,
    TASKS,
    HistorySerializer,
    TextTokenizer,
    UnifiedVocab,
)

_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass
class Example:
    """One prompt (token ids and feature slots) and its target token ids."""

    task: str
    prompt: np.ndarray
    feats: np.ndarray
    target: np.ndarray


class QueryMaker:
    """Search queries from item text: each item's distinct alphabetic title/category words."""

    def __init__(
        self, titles: Sequence[str], categories: Sequence[str], tokenizer: TextTokenizer
    ) -> None:
        words_per_item = []
        for title, cats in zip(titles, categories, strict=True):
            seen: dict[str, None] = {}
            for w in _WORD.findall(f"{cats} {title}".lower()):
                seen.setdefault(w, None)
            words_per_item.append(list(seen))
        vocab = sorted({w for ws in words_per_item for w in ws})
        index = {w: i for i, w in enumerate(vocab)}
        self.word_tokens = tokenizer.encode(vocab)
        self.item_words = [np.array([index[w] for w in ws], np.int64) for ws in words_per_item]

    def has_words(self, item: int) -> bool:
        return len(self.item_words[item]) > 0

    def sample(self, item: int, max_words: int, rng: np.random.Generator) -> list[int]:
        """Text token ids (tokenizer ids) of a query for ``item``: 1..``max_words`` of its
        words, in their original order."""
        words = self.item_words[item]
        if len(words) == 0:
            return []
        k = int(rng.integers(1, min(max_words, len(words)) + 1))
        pick = np.sort(rng.choice(len(words), size=k, replace=False))
        return [t for w in words[pick] for t in self.word_tokens[w]]


class PromptBuilder:
    """Builds prompts and targets from serialised histories (see module docstring)."""

    def __init__(
        self, serializer: HistorySerializer, max_query_tokens: int, max_explanation_tokens: int
    ) -> None:
        self.serializer = serializer
        self.vocab: UnifiedVocab = serializer.vocab
        self.max_query_tokens = max_query_tokens
        self.max_explanation_tokens = max_explanation_tokens

    def prompt(
        self,
        task: str,
        history: tuple[np.ndarray, np.ndarray],
        *,
        item: int | None = None,
        query: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt tokens and feature slots for ``task`` after ``history`` (serialised events);
        ``item`` is the candidate of ``rating``/``explanation``, ``query`` the text ids of
        ``search``."""
        if task not in TASKS:
            raise PolyrecError(f"unknown task {task!r}; tasks are {TASKS}")
        hist_ids, hist_feats = history
        head = np.array([SPECIAL_ID["[BOS]"], SPECIAL_ID[TASK_TOKENS[TASKS.index(task)]]])
        ids = [head, hist_ids, np.array([SPECIAL_ID["[SEP]"]])]
        feats = [np.zeros(2, np.int64), hist_feats, np.zeros(1, np.int64)]
        if task == "search":
            q = self.vocab.text_tokens(list(query or [])[: self.max_query_tokens])
            ids.append(np.concatenate([[SPECIAL_ID["[QUERY]"]], q]))
            feats.append(np.zeros(1 + len(q), np.int64))
        elif task in ("rating", "explanation"):
            if item is None:
                raise PolyrecError(f"task {task!r} needs a candidate item")
            item_ids, item_feats = self.serializer.item(item)
            ids.append(np.concatenate([[SPECIAL_ID["[CAND]"]], item_ids]))
            feats.append(np.concatenate([[0], item_feats]))
        ids.append(np.array([SPECIAL_ID["[ANS]"]]))
        feats.append(np.zeros(1, np.int64))
        return np.concatenate(ids).astype(np.int64), np.concatenate(feats).astype(np.int64)

    def target(
        self,
        task: str,
        *,
        item: int | None = None,
        rating: float | None = None,
        review: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Target tokens: the item's ID (``next``/``search``), the rating token, or the review's
        text ids (truncated) and ``[EOS]``."""
        if task in ("next", "search"):
            if item is None:
                raise PolyrecError(f"task {task!r} needs a target item")
            return self.vocab.sid_tokens(self.serializer.id_map.ids_of([item]))[0]
        if task == "rating":
            if rating is None:
                raise PolyrecError("task 'rating' needs a target rating")
            return self.vocab.rating_tokens(np.array([rating]))
        if review is None:
            raise PolyrecError("task 'explanation' needs a target review")
        text = self.vocab.text_tokens(list(review)[: self.max_explanation_tokens])
        return np.concatenate([text, [SPECIAL_ID["[EOS]"]]]).astype(np.int64)


def left_pad(
    rows: Sequence[np.ndarray], feats: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``ids, feats (B, T)``, ``key_mask`` (True at real tokens) and positions
    (0 at each row's first real token)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), PAD_ID, np.int64)
    fs = np.zeros((len(rows), width), np.int64)
    for r, (row, f) in enumerate(zip(rows, feats, strict=True)):
        ids[r, width - len(row) :] = row
        fs[r, width - len(row) :] = f
    ids_t = torch.from_numpy(ids)
    mask = ids_t != PAD_ID
    positions = (mask.long().cumsum(1) - 1).clamp_min(0)
    return ids_t, torch.from_numpy(fs), mask, positions


def training_batch(examples: Sequence[Example], task_weights: dict[str, float]) -> dict:
    """Left-padded inputs ``prompt + target[:-1]`` with next-token ``targets`` (-1 outside the
    target) and per-example loss ``weights``."""
    rows, feats, labels = [], [], []
    for ex in examples:
        rows.append(np.concatenate([ex.prompt, ex.target[:-1]]))
        feats.append(np.concatenate([ex.feats, np.zeros(len(ex.target) - 1, np.int64)]))
        lab = np.full(len(rows[-1]), -1, np.int64)
        lab[len(ex.prompt) - 1 :] = ex.target
        labels.append(lab)
    ids, fs, _, _ = left_pad(rows, feats)
    width = ids.shape[1]
    targets = np.full((len(rows), width), -1, np.int64)
    for r, lab in enumerate(labels):
        targets[r, width - len(lab) :] = lab
    weights = torch.tensor([task_weights.get(ex.task, 1.0) for ex in examples], dtype=torch.float32)
    return {"ids": ids, "feats": fs, "targets": torch.from_numpy(targets), "weights": weights}
