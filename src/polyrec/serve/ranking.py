"""The second stage of serving: a ranker scores the merged candidates of the retrievers.

Both kinds of ranker implement one interface, :class:`CandidateScorer`
(``score_candidates(user_id, history, candidates) -> scores``), and the service has one
re-rank path (:meth:`polyrec.serve.service.RecService._rerank`): candidates the ranker scored
come first by score, the others keep their retrieval order after them.

- :class:`RecommenderScorer`: a :class:`~polyrec.models.base.Recommender` run (``polyrec
  train``): the user's learned profile when it may be used, else the history fold-in.
- :class:`CTRScorer`: a CTR ranker (DIN, SIM, TWIN, DARE; :mod:`polyrec.models.ranking`)
  saved by ``CTRRanker.save`` (``polyrec ctr train``, ``polyrec train dare``): the predicted
  click probability of each candidate after the user's behaviour history; the ranker's saved
  :attr:`~polyrec.models.ranking.base.CTRRanker.items` map its item numbers to external ids
  and categories.

The service passes histories in its own item space, oldest first, with forgotten data already
removed; the history of a known user is their training history plus their stored events. The
interval between a behaviour and "now" is not known for training histories, so time-aware
rankers (SIM, TWIN, DARE with ``use_time``) get the padding time bucket, whose embedding is
zero: their attention scores lose the time term and their behaviour representations carry a
zero interval embedding; the rest of the model is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import torch

from polyrec.errors import PolyrecError
from polyrec.models.ranking.base import ITEMS_FILE, META_FILE, CTRRanker

if TYPE_CHECKING:
    from polyrec.serve.service import LoadedModel


class CandidateScorer(Protocol):
    """A second-stage ranker in the service's item space."""

    name: str

    def score_candidates(
        self, user_id: str | None, history: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray | None:
        """Scores of ``candidates`` (service item indices) for the user: NaN for candidates
        the ranker does not know; None when it has nothing to rank them by. ``user_id`` is
        given only when the user's learned profile may be used; ``history`` holds service item
        indices, oldest first (may be empty)."""
        ...


class RecommenderScorer:
    """A Recommender as ranker: its scores of the candidates (profile, else history)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded, self.name = loaded, loaded.name

    def score_candidates(
        self, user_id: str | None, history: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray | None:
        m = self.loaded
        user = None if user_id is None else m.user_index(user_id)
        local_hist = m.from_service[history]
        local_hist = local_hist[local_hist >= 0]
        if user is not None:
            with torch.inference_mode():
                scores = m.model.score(np.array([user]))[0].numpy()
        elif len(local_hist) and m.retriever.supports_history:
            scores = m.retriever.history_scores(local_hist).numpy()
        else:
            return None
        local = m.from_service[candidates]
        return np.where(local >= 0, scores[np.maximum(local, 0)], np.nan).astype(np.float64)


class CTRScorer:
    """A CTR ranker as second stage: click probability of each candidate after the history
    (last ``max_len`` known behaviours), one forward pass with the history shared."""

    def __init__(self, ranker: CTRRanker, service_ids: pd.Index, name: str) -> None:
        self.ranker, self.name = ranker, name
        items = ranker.items
        n_items = int(ranker.dims["n_items"]) - 1
        if items is None or len(items) != n_items:
            got = "no" if items is None else len(items)
            raise PolyrecError(f"ranker {name} lists {got} items, it was trained on {n_items}")
        # ranker item ids are 1..n (0 = padding), in the items' row order
        pos = service_ids.get_indexer(pd.Index([str(i) for i in items["item"]], dtype=object))
        self.from_service = np.zeros(len(service_ids), np.int64)
        self.from_service[pos[pos >= 0]] = np.flatnonzero(pos >= 0) + 1
        self.category = np.concatenate([[0], items["category"].to_numpy(np.int64)])
        self.max_len = int(ranker.dims["max_len"])

    def score_candidates(
        self, user_id: str | None, history: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray | None:
        target = self.from_service[candidates]
        known = target > 0
        if not known.any():
            return None
        hist = self.from_service[history]
        hist = hist[hist > 0][-self.max_len :]
        logits = self.ranker.predict_logits(self._batch(target[known], hist))
        out = np.full(len(candidates), np.nan)
        out[known] = torch.sigmoid(logits).double().numpy()
        return out

    def _batch(self, targets: np.ndarray, hist: np.ndarray) -> dict[str, torch.Tensor]:
        """A batch as :meth:`polyrec.data.ctr.CTRSamples.batch` builds it, with one history
        row shared by every target."""
        width, n = self.max_len, len(targets)
        items = np.zeros((1, width), np.int64)
        if len(hist):
            items[0, -len(hist) :] = hist
        mask = items > 0
        return {
            "user": torch.zeros(n, dtype=torch.long),
            "item": torch.from_numpy(targets),
            "category": torch.from_numpy(self.category[targets]),
            "label": torch.zeros(n),
            "hist_item": torch.from_numpy(items),
            "hist_cat": torch.from_numpy(self.category[items]),
            "hist_delta": torch.zeros((1, width)),
            "hist_time": torch.zeros((1, width), dtype=torch.long),  # unknown interval
            "hist_mask": torch.from_numpy(mask),
        }


def ctr_ranker_dir(run: Path) -> Path | None:
    """The directory holding a saved CTR ranker in ``run`` (the run itself or its
    ``model/``), or None when ``run`` is not a CTR ranker."""
    for d in (run, run / "model"):
        if (d / META_FILE).is_file():
            return d
    return None


def load_ctr_scorer(run: Path, service_ids: pd.Index) -> CTRScorer:
    """A :class:`CTRScorer` for the CTR ranker saved in ``run``."""
    directory = ctr_ranker_dir(run)
    if directory is None:
        raise PolyrecError(f"{run} holds no saved CTR ranker ({META_FILE} not found)")
    ranker = CTRRanker.load(directory)
    if ranker.items is None:
        raise PolyrecError(
            f"CTR ranker {directory} has no {ITEMS_FILE} (its item ids and categories): it was "
            "saved by an older polyrec; train it again"
        )
    return CTRScorer(ranker, service_ids, f"{ranker.name}:{run.name}")
