"""Pieces shared by the models that generate items as semantic IDs (TIGER, Mender, UniMP):
the item features the IDs are learned from, trie-constrained log-probabilities, and turning
finished beams into items and full score rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError
from polyrec.features.text import embed_item_texts
from polyrec.models.generative.semantic_ids import SemanticIdMap


def item_feature_matrix(
    train: Dataset, source: str, text_model: str, text_fields: Sequence[str], progress: bool
) -> np.ndarray:
    """The ``(n_items, d)`` float32 matrix semantic IDs are built from: ``text`` (sentence
    embeddings of ``text_fields``) or ``vector:NAME`` (``train.item_vectors[NAME]``)."""
    if source == "text":
        return embed_item_texts(train, text_model, fields=text_fields, progress=progress)
    key = source.partition(":")[2]
    if key not in train.item_vectors:
        raise PolyrecError(
            f"item_features {source!r}: dataset has item vectors {sorted(train.item_vectors)}"
        )
    return np.asarray(train.item_vectors[key], np.float32)


def trie_log_probs(
    logits: torch.Tensor, id_map: SemanticIdMap, keys: torch.Tensor | None, depth: int
) -> torch.Tensor:
    """Log-probabilities over depth ``depth``'s codes, renormalised over the prefix trie's
    allowed codes when ``keys`` (packed prefixes) are given; rows with nothing allowed are -inf."""
    if keys is None:
        return F.log_softmax(logits.float(), dim=-1)
    allowed = id_map.allowed(keys, depth).to(logits.device)
    masked = logits.float().masked_fill(~allowed, -torch.inf)
    lse = torch.logsumexp(masked, dim=-1, keepdim=True)
    return masked - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def finish_beams(
    codes: np.ndarray, scores: np.ndarray, id_map: SemanticIdMap, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Beams ``codes (B, beams, depth)`` with log-probabilities ``scores (B, beams)`` (best
    first) -> ``(items (B, k), log_probs (B, k))``: the valid beams first, in their order, then
    ``-1`` / ``-inf`` for invalid IDs (unconstrained decoding), dead beams and missing beams
    (fewer IDs than ``k``), so that column ``j`` is the item ranked ``j + 1``."""
    b = codes.shape[0]
    items = id_map.items_of(codes.reshape(-1, id_map.depth)).reshape(b, -1)
    log_probs = scores.astype(np.float64)
    dead = ~np.isfinite(log_probs) | (items < 0)
    items[dead], log_probs[dead] = -1, -np.inf
    first = np.argsort(dead, axis=1, kind="stable")  # valid beams keep their order
    items = np.take_along_axis(items, first, axis=1)
    log_probs = np.take_along_axis(log_probs, first, axis=1)
    if k > items.shape[1]:
        fill = k - items.shape[1]
        items = np.pad(items, ((0, 0), (0, fill)), constant_values=-1)
        log_probs = np.pad(log_probs, ((0, 0), (0, fill)), constant_values=-np.inf)
    return items, log_probs


def scores_from_beams(items: np.ndarray, log_probs: np.ndarray, n_items: int) -> torch.Tensor:
    """Full score rows ``(B, n_items)``: each beam item gets its log-probability, every other
    item -inf (so ranking metrics at K above the beam count only count the beams)."""
    scores = torch.full((len(items), n_items), -torch.inf)
    ok = items >= 0
    rows = np.repeat(np.arange(len(items)), ok.sum(1))
    scores[torch.from_numpy(rows), torch.from_numpy(items[ok])] = torch.from_numpy(
        log_probs[ok].astype(np.float32)
    )
    return scores
