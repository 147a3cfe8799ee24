"""Candidate retrieval for serving: one :class:`Retriever` per loaded model.

Two implementations behind one interface (indices are the model's internal item indices, and
``allowed`` is a boolean mask over the model's items that carries every filter: seen items,
forgotten items, attribute filters):

- :class:`ExactRetriever` works for every model: it scores all items with the model
  (``score`` for a known user, ``score_histories`` or the item-item fold-in for an ad-hoc
  history) and takes the top ``n``.
- :class:`EmbeddingRetriever` is used when the model's scores are inner products of user
  vectors with its ``_item_embeddings()``: a FAISS index over the item vectors answers users
  (inner product) and ad-hoc histories / similar items (cosine), exact below
  ``ann_threshold`` items and IVF or HNSW above it. The recall of the ANN index against the
  exact one is measured when it is built.

A model that declares its scores to be inner products (``_user_factors`` / ``_item_factors``,
e.g. BPR-MF, ALS, LightGCN, NGCF, FREEDOM) gives both sides directly. For any other model with
item matrix ``V`` the user vectors are the least-squares solution ``U = S V (V^T V)^-1`` of its
own scores ``S = U V^T``, and the model is accepted only if that reproduces its scores
(relative error < 1e-4), so a model whose score is not a pure inner product (an item bias, a
non-linear head) silently stays exact.

The ad-hoc history fold-in of a non-sequential model is the sum of the item-item scores of
the history's items (``Recommender._similar``): for EASE this is exactly its score, for
embedding models it is the cosine fold-in ``sum_h cos(v_h, v_i)``.

Text. A retriever says which request texts its model conditions on (``text_fields``) and
answers them with :meth:`Retriever.for_text`:

- :class:`PreferenceRetriever`, for models with ``generate_with_preferences`` (Mender):
  the ``preference`` sentence(s) go into the encoder context before the history;
- :class:`SearchRetriever`, for models with ``search``/``search_internal`` and a
  ``tokenizer`` (UniMP): the ``query`` and the history form a product-search prompt.

Both decode a beam of items; allow masks cannot constrain a beam search, so they ask for
``n`` plus the number of disallowed items (capped at :data:`MAX_TEXT_BEAMS`) and keep the
allowed ones: at most ``n``, fewer only when the cap binds (very selective filters).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import faiss
import numpy as np
import torch

from polyrec.errors import PolyrecError
from polyrec.models.base import Recommender

IndexKind = Literal["auto", "exact", "ivf", "hnsw"]
TextField = Literal["preference", "query"]
MAX_TEXT_BEAMS = 1000
_FIT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TextRequest:
    """The texts of one request: a natural-language preference and/or a search query."""

    preference: str | None = None
    query: str | None = None

    @property
    def fields(self) -> frozenset[TextField]:
        """The fields given (holding at least one word character)."""
        given: set[TextField] = set()
        # text without a word (blank, punctuation) says nothing to condition on
        if self.preference and re.search(r"\w", self.preference):
            given.add("preference")
        if self.query and re.search(r"\w", self.query):
            given.add("query")
        return frozenset(given)


@dataclass
class Candidates:
    """Top items of one query: model-internal indices and scores, best first."""

    items: np.ndarray
    scores: np.ndarray


@dataclass
class IndexInfo:
    """What was built for one index: its kind, size and the recall of ANN vs exact."""

    kind: str
    n_items: int
    dim: int
    recall: float | None = None  # recall@recall_k of the ANN vs exact search (None: exact)
    recall_k: int = 0
    build_seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


class AnnIndex:
    """A FAISS index over item vectors (inner product) with per-query allow masks."""

    def __init__(
        self,
        vectors: np.ndarray,
        kind: IndexKind = "auto",
        *,
        ann_threshold: int = 10_000,
        nprobe: int = 16,
        ef_search: int = 128,
        hnsw_m: int = 32,
        recall_k: int = 100,
        recall_queries: np.ndarray | None = None,
    ) -> None:
        start = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        if kind == "auto":
            kind = "exact" if n < ann_threshold else "hnsw"
        self.n_items, self.kind = n, kind
        self.nprobe, self.ef_search = nprobe, ef_search
        params: dict[str, Any] = {}
        if kind == "exact":
            self.index: faiss.Index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # FAISS wants >= 39 points/list
            self.nprobe = min(nprobe, nlist)
            self._quantizer = faiss.IndexFlatIP(dim)  # referenced by the IVF index
            self.index = faiss.IndexIVFFlat(self._quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
            params = {"nlist": nlist, "nprobe": self.nprobe}
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = max(40, ef_search)
            params = {"M": hnsw_m, "ef_search": ef_search}
        else:
            raise PolyrecError(f"unknown index kind {kind!r}; choose auto, exact, ivf or hnsw")
        self.index.add(vectors)
        self.info = IndexInfo(kind=kind, n_items=n, dim=dim, params=params)
        if kind != "exact":
            queries = vectors if recall_queries is None else recall_queries
            self.info.recall_k = min(recall_k, n)
            self.info.recall = self._recall(vectors, queries, self.info.recall_k)
        self.info.build_seconds = time.perf_counter() - start

    def search(self, query: np.ndarray, n: int, allowed: np.ndarray | None = None) -> Candidates:
        """Top ``n`` items for one query vector among ``allowed`` (bool mask; None = all)."""
        n = min(n, self.n_items)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        sel = None
        if allowed is not None:
            bitmap = np.packbits(allowed, bitorder="little")  # FAISS reads bit i of byte i>>3
            sel = faiss.IDSelectorBitmap(self.n_items, faiss.swig_ptr(bitmap))
        if self.kind == "ivf":
            params: Any = faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, n))
        else:
            params = faiss.SearchParameters(sel=sel)
        scores, ids = self.index.search(q, n, params=params)
        keep = ids[0] >= 0
        return Candidates(ids[0][keep].astype(np.int64), scores[0][keep])

    def _recall(self, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
        rng = np.random.default_rng(0)
        take = rng.choice(len(queries), size=min(256, len(queries)), replace=False)
        q = np.ascontiguousarray(queries[np.sort(take)], dtype=np.float32)
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, truth = exact.search(q, k)
        hits = 0
        for row, want in zip(q, truth, strict=True):
            got = self.search(row, k).items
            hits += len(np.intersect1d(got, want))
        return hits / truth.size


class Retriever:
    """Exact candidate retrieval with one model; the base of every retriever."""

    text_fields: ClassVar[frozenset[TextField]] = frozenset()
    """The request texts the model conditions on (see :meth:`for_text`)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.n_items = model.n_items
        self._has_similar = (
            type(model)._similar is not Recommender._similar or model._item_embeddings() is not None
        )

    @property
    def info(self) -> dict[str, Any]:
        """How this retriever answers queries (shown by ``/health``)."""
        return {"model": self.model.name, "retrieval": "exact", "n_items": self.n_items}

    @property
    def supports_similar(self) -> bool:
        """Whether the model defines item-item similarity."""
        return self._has_similar

    @property
    def supports_history(self) -> bool:
        """Whether ad-hoc histories can be scored (sequential models or item-item models)."""
        return hasattr(self.model, "score_histories") or self._has_similar

    def for_user(self, user: int, n: int, allowed: np.ndarray) -> Candidates:
        """Top ``n`` allowed items for a user the model knows (internal index)."""
        with torch.inference_mode():
            scores = self.model.score(np.array([user]))[0]
        return _top(scores, n, allowed)

    def for_history(self, history: np.ndarray, n: int, allowed: np.ndarray) -> Candidates:
        """Top ``n`` allowed items after an ad-hoc history (internal items, oldest first)."""
        return _top(self.history_scores(history), n, allowed)

    def history_scores(self, history: np.ndarray) -> torch.Tensor:
        """Scores of all items after ``history`` (sequential model or item-item fold-in)."""
        with torch.inference_mode():
            if hasattr(self.model, "score_histories"):
                return self.model.score_histories([history])[0]
            if not self._has_similar:
                raise PolyrecError(f"model {self.model.name} cannot score an ad-hoc history")
            # the base-class item-item hook (cosine of embeddings, EASE's B, kNN neighbours)
            return self.model._similar(np.asarray(history, dtype=np.int64)).float().sum(0)

    def for_text(
        self, text: TextRequest, user: int | None, history: np.ndarray, n: int, allowed: np.ndarray
    ) -> Candidates:
        """Top ``n`` allowed items conditioned on ``text`` (the fields in ``text_fields``),
        for a known ``user`` (internal index; their stored history) or, when ``user`` is None,
        after ``history`` (internal items, oldest first; may be empty)."""
        raise PolyrecError(f"model {self.model.name} does not condition on request text")

    def similar(self, item: int, n: int, allowed: np.ndarray) -> Candidates:
        """Top ``n`` allowed items most similar to ``item`` (the item itself excluded)."""
        if not self._has_similar:
            raise PolyrecError(f"model {self.model.name} does not define item similarity")
        with torch.inference_mode():
            scores = self.model._similar(np.array([item], dtype=np.int64))[0].float()
        allowed = allowed.copy()
        allowed[item] = False
        return _top(scores, n, allowed)


class PreferenceRetriever(Retriever):
    """Preference-conditioned retrieval with a Mender-style model (module docstring). A
    preference text is split into sentences; each is one preference of the context."""

    text_fields = frozenset({"preference"})

    def for_text(
        self, text: TextRequest, user: int | None, history: np.ndarray, n: int, allowed: np.ndarray
    ) -> Candidates:
        model: Any = self.model
        limit = int(model.config.max_preferences)
        prefs = split_preferences(text.preference or "", limit)
        if user is not None:
            tokens, users = model.histories[[user]], np.array([user])
        else:
            tokens, users = _left_pad(history, int(model.config.max_len)), None
        items, scores = model.generate_with_preferences(
            tokens, [prefs], users, beams=_beam_width(n, allowed)
        )
        return _allowed_beams(items[0], scores[0], n, allowed)


class SearchRetriever(Retriever):
    """Product search with a UniMP-style model (module docstring): the query and the user's
    history (their stored interleaved history for a known user, else the given items) form a
    search prompt whose answer is decoded as items."""

    text_fields = frozenset({"query"})

    def for_text(
        self, text: TextRequest, user: int | None, history: np.ndarray, n: int, allowed: np.ndarray
    ) -> Candidates:
        model: Any = self.model
        query, beams = text.query or "", _beam_width(n, allowed)
        if user is not None:
            tokens = model.tokenizer.encode([query])[0]
            items, scores = model.search_internal(np.array([user]), [tokens], beams=beams)
            return _allowed_beams(items[0], scores[0], n, allowed)
        items, scores = model.search_after_items(history, query, beams=beams)
        return _allowed_beams(items, scores, n, allowed)


class EmbeddingRetriever(Retriever):
    """FAISS retrieval for inner-product models (see the module docstring)."""

    def __init__(
        self,
        model: Recommender,
        item_vectors: np.ndarray,
        user_vectors: np.ndarray,
        kind: IndexKind = "auto",
        **index_options: Any,
    ) -> None:
        super().__init__(model)
        self.user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        self.users = AnnIndex(item_vectors, kind, recall_queries=self.user_vectors, **index_options)
        norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
        self.unit = np.ascontiguousarray(item_vectors / np.maximum(norms, 1e-12), np.float32)
        self.cosine = AnnIndex(self.unit, kind, **index_options)

    @property
    def info(self) -> dict[str, Any]:
        def describe(index: AnnIndex) -> dict[str, Any]:
            i = index.info
            return {
                "kind": i.kind,
                "recall_vs_exact": i.recall,
                "recall_k": i.recall_k,
                "build_seconds": round(i.build_seconds, 4),
                **i.params,
            }

        return {
            "model": self.model.name,
            "retrieval": "faiss",
            "n_items": self.n_items,
            "dim": self.users.info.dim,
            "user_index": describe(self.users),
            "item_index": describe(self.cosine),
        }

    def for_user(self, user: int, n: int, allowed: np.ndarray) -> Candidates:
        return self.users.search(self.user_vectors[user], n, allowed)

    def for_history(self, history: np.ndarray, n: int, allowed: np.ndarray) -> Candidates:
        if hasattr(self.model, "score_histories"):
            return super().for_history(history, n, allowed)
        return self.cosine.search(self.unit[history].sum(0), n, allowed)

    def similar(self, item: int, n: int, allowed: np.ndarray) -> Candidates:
        allowed = allowed.copy()
        allowed[item] = False
        return self.cosine.search(self.unit[item], n, allowed)


def build_retriever(
    model: Recommender, kind: IndexKind = "auto", **index_options: Any
) -> Retriever:
    """The best retriever for ``model``: FAISS when its scores are inner products of user
    vectors and its item embeddings (checked), else exact scoring. ``kind`` other than
    ``exact`` on a model without embeddings is an error."""
    with torch.inference_mode():
        factors = model._item_factors()
        emb = model._item_embeddings() if factors is None else factors
    if emb is not None and kind != "exact":
        item_vectors = emb.detach().float().cpu().numpy()
        user_vectors = _user_vectors(model, item_vectors) if factors is None else _factors(model)
        if user_vectors is not None:
            return EmbeddingRetriever(model, item_vectors, user_vectors, kind, **index_options)
    if kind in ("ivf", "hnsw"):
        raise PolyrecError(
            f"model {model.name} has no inner-product item embeddings: index {kind!r} needs them "
            "(use --index exact or auto)"
        )
    if all(hasattr(model, a) for a in ("generate_with_preferences", "histories")):
        return PreferenceRetriever(model)
    if all(hasattr(model, a) for a in ("search", "search_internal", "tokenizer")):
        return SearchRetriever(model)
    return Retriever(model)


def split_preferences(text: str, limit: int) -> list[str]:
    """A preference text as at most ``limit`` sentences (split at ``.``, ``;``, ``!``, ``?``
    and line breaks), the form Mender's preferences take ("Prefers red", "Avoid ...")."""
    parts = [p.strip() for p in re.split(r"[.;!?\n]+", text)]
    return [p for p in parts if p][:limit]


def _factors(model: Recommender) -> np.ndarray:
    """Every user's vector of a model whose scores are inner products of factors."""
    assert model.user_ids is not None
    with torch.inference_mode():
        users = model._user_factors(np.arange(len(model.user_ids)))
    return users.float().cpu().numpy()


def _user_vectors(model: Recommender, item_vectors: np.ndarray) -> np.ndarray | None:
    """Least-squares user vectors reproducing the model's scores, or None if they do not."""
    assert model.user_ids is not None
    v = item_vectors.astype(np.float64)
    gram = v.T @ v
    if np.linalg.matrix_rank(gram) < v.shape[1]:
        return None
    proj = np.linalg.solve(gram, v.T).T  # (n_items, d): S @ proj = U when S = U V^T
    users = np.arange(len(model.user_ids))
    out = np.empty((len(users), v.shape[1]), np.float32)
    for batch, scores in model.score_batches(users):
        s = scores.double().numpy()
        u = s @ proj
        err = np.linalg.norm(u @ v.T - s) / max(np.linalg.norm(s), 1e-12)
        if not err <= _FIT_TOLERANCE:  # NaN too: -inf scores have no vector
            return None
        out[batch] = u
    return out


def _beam_width(n: int, allowed: np.ndarray) -> int:
    """Beams that hold ``n`` allowed items whatever the mask removes (capped)."""
    blocked = len(allowed) - int(allowed.sum())
    return max(1, min(len(allowed), n + blocked, max(n, MAX_TEXT_BEAMS)))


def _allowed_beams(
    items: np.ndarray, scores: np.ndarray, n: int, allowed: np.ndarray
) -> Candidates:
    """The first ``n`` decoded items (best first) that are valid and allowed."""
    items = np.asarray(items, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    keep = (items >= 0) & np.isfinite(scores)
    keep[keep] = allowed[items[keep]]
    return Candidates(items[keep][:n], scores[keep][:n])


def _left_pad(history: np.ndarray, width: int) -> np.ndarray:
    """One row of history tokens (item + 1, ``PAD=0`` on the left), the last ``width`` items."""
    row = np.zeros((1, width), np.int64)
    tail = np.asarray(history, dtype=np.int64)[-width:]
    if len(tail):
        row[0, -len(tail) :] = tail + 1
    return row


def _top(scores: torch.Tensor, n: int, allowed: np.ndarray) -> Candidates:
    scores = scores.float().clone()
    scores[torch.from_numpy(~allowed)] = -torch.inf
    n = min(n, int(allowed.sum()))
    if n <= 0:
        return Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32))
    vals, idx = torch.topk(scores, n)
    keep = torch.isfinite(vals)
    return Candidates(idx[keep].numpy().astype(np.int64), vals[keep].numpy())


def reciprocal_rank_fusion(lists: list[list[str]], c: float = 60.0) -> dict[str, float]:
    """RRF scores ``sum_l 1 / (c + rank_l(item))`` (Cormack, Clarke, Buettcher, SIGIR 2009)
    to merge candidate lists of several retrievers whose scores are not comparable."""
    fused: dict[str, float] = {}
    for ranked in lists:
        for rank, item in enumerate(ranked, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (c + rank)
    return fused
