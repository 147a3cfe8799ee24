"""The recommendation service behind the HTTP layer: loaded models, catalogue, masks, the
two-stage pipeline (retrieve -> merge -> optional re-rank -> top k) and forget jobs.

Masks are what makes a forget request take effect at once, before any model is unlearned:

- a forgotten **item** is never retrieved, recommended, returned as similar or accepted in
  an event, by any model;
- a forgotten **user** is served as a new user: the model's learned profile of them is never
  used again, so they get recommendations from the events stored after the request, or the
  popularity fallback;
- a user with forgotten **interactions** is served from their remaining history (training
  history minus the forgotten items, plus stored events) instead of their learned profile, which
  was fitted on the forgotten data; the forgotten items are not recommended back to them.

Masks are rebuilt from the store's forget requests at start, so a restart never un-masks.
Unlearning the models themselves is delegated to an ``unlearner`` (:data:`Unlearner`; ``polyrec
serve --unlearn METHOD`` uses :class:`~polyrec.serve.unlearning.RunUnlearner`) run by a
background job (:class:`ForgetJobs`): the runs it returns are served in place of the loaded
ones, with the masks rebuilt over them. Without one, a request ends in status ``masked``.

Request text (``POST /recommendations``) goes to the models whose retriever conditions on it
(:attr:`Retriever.text_fields`): a ``preference`` to preference-aware models (Mender), which
then retrieve conditioned on it while the other models retrieve as usual; a ``query`` to
search models (UniMP), which then are the only retrievers, since candidates that ignore the
query are no search results. Text no loaded model reads is ignored, and the result says which
fields were used. Every allow mask holds on these paths too (text retrievers filter their
decoded beams).

The optional second stage (``--ranker``) is a :class:`~polyrec.serve.ranking.CandidateScorer`
(a Recommender run or a CTR ranker, see :mod:`polyrec.serve.ranking`); it sees the user's
profile only when no forget request touched it, and histories without forgotten items.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyrec.errors import PolyrecError
from polyrec.models.base import Recommender
from polyrec.serve.ranking import (
    CandidateScorer,
    RecommenderScorer,
    ctr_ranker_dir,
    load_ctr_scorer,
)
from polyrec.serve.retrieval import (
    Candidates,
    IndexKind,
    Retriever,
    TextRequest,
    build_retriever,
    reciprocal_rank_fusion,
)
from polyrec.serve.store import DEFAULT_DB, Event, ForgetRecord, Store

log = logging.getLogger("polyrec.serve")

Unlearner = Callable[[ForgetRecord, Sequence[ForgetRecord]], Sequence[Path]]
"""Unlearns the served models for one forget request: called with the request and every
request up to it (oldest first), it returns the run directories to serve from then on, one
per served run in the order of ``ServeConfig.runs``; the service swaps them in and the request
ends ``unlearned``. Raising marks the request ``failed``. Called from the job thread, never
from a request (:class:`polyrec.serve.unlearning.RunUnlearner` is the built-in one)."""

MASK_ONLY_MESSAGE = (
    "no unlearner configured: the data was removed from the store and is masked from serving; "
    "the models are unchanged (retrain to unlearn)"
)


@dataclass
class ServeConfig:
    """Everything ``polyrec serve`` needs; see :func:`polyrec.serve.cli.serve`."""

    runs: Sequence[Path]
    db: str = DEFAULT_DB
    ranker: Path | None = None
    index: IndexKind = "auto"
    ann_threshold: int = 10_000
    candidates: int = 200
    api_keys: Sequence[str] = ()
    cors_origins: Sequence[str] = ()
    max_body_bytes: int = 4 * 2**20
    index_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A served model with its retriever and its id maps onto the service's ids."""

    name: str
    model: Recommender
    retriever: Retriever
    users: dict[str, int]  # user id -> model user index
    to_service: np.ndarray  # model item index -> service item index
    from_service: np.ndarray  # service item index -> model item index, -1 if unknown

    def user_index(self, user_id: str) -> int | None:
        """The model's index of ``user_id``, or None."""
        return self.users.get(user_id)

    def allowed(self, service_allowed: np.ndarray) -> np.ndarray:
        """A service-space allow mask in this model's item space."""
        return service_allowed[self.to_service]

    def seen_items(self, user: int) -> np.ndarray:
        """Every training item of the user (model indices)."""
        seen = self.model.seen
        assert seen is not None
        # CSR row by its index pointers: slicing the matrix builds a new one, far slower
        return seen.indices[seen.indptr[user] : seen.indptr[user + 1]].astype(np.int64)

    def training_history(self, user: int) -> np.ndarray:
        """The user's training items (model indices), time-ordered when the model keeps order."""
        stored = getattr(self.model, "histories", None)  # sequential models: PAD-left tokens
        if isinstance(stored, np.ndarray) and stored.ndim == 2 and user < len(stored):
            row = stored[user]
            return row[row > 0] - 1
        return self.seen_items(user)


@dataclass
class Result:
    """A ranked list in service item indices, with how it was made."""

    items: np.ndarray
    scores: np.ndarray
    source: str
    models: list[str]
    reranked: bool = False
    ignored_history: list[str] = field(default_factory=list)
    text_used: frozenset[str] = frozenset()  # request text fields a model conditioned on


class Catalogue:
    """The union of the loaded models' items: string ids, titles and attributes."""

    def __init__(self, ids: pd.Index, titles: np.ndarray, attributes: pd.DataFrame) -> None:
        self.ids, self.titles, self.attributes = ids, titles, attributes
        self._positions = {item: i for i, item in enumerate(ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, item_ids: Sequence[str]) -> np.ndarray:
        """Service indices of ``item_ids``, -1 where unknown."""
        get = self._positions.get
        return np.fromiter((get(i, -1) for i in item_ids), np.int64, count=len(item_ids))

    def matching(self, attributes: dict[str, str]) -> np.ndarray:
        """Bool mask of items whose attributes equal all the given values."""
        keep = np.ones(len(self), bool)
        for name, value in attributes.items():
            if name == "title":
                column = pd.Series(self.titles, dtype=object)
            elif name in self.attributes.columns:
                column = self.attributes[name]
            else:
                known = ", ".join(["title", *self.attributes.columns])
                raise PolyrecError(f"unknown item attribute {name!r}; items have: {known}")
            keep &= column.astype(str).to_numpy() == value
        return keep

    def rows(self) -> list[dict[str, Any]]:
        """Store rows of the catalogue."""
        attrs = self.attributes.astype(str).to_dict("records")
        return [
            {"item_id": i, "title": t, "attributes": a}
            for i, t, a in zip(self.ids, self.titles, attrs, strict=True)
        ]


@dataclass
class Masks:
    """What forget requests and unlearned runs keep out of serving (module docstring), with
    the popularity fallback's counts less the forgotten training interactions. Built whole
    and swapped in one assignment, so that no request sees a half-built state."""

    items: np.ndarray  # service item -> never served
    popularity: np.ndarray  # training counts of the first model, service item space
    users: set[str] = field(default_factory=set)  # served as new users
    pairs: dict[str, set[int]] = field(default_factory=dict)  # user -> forgotten items

    @classmethod
    def build(
        cls,
        catalogue: Catalogue,
        first: LoadedModel,
        forgotten_items: Sequence[str],
        requests: Sequence[ForgetRecord],
    ) -> Masks:
        """Masks of ``requests`` over models whose runs forgot ``forgotten_items``."""
        items = np.zeros(len(catalogue), bool)
        items[catalogue.index(forgotten_items)] = True
        assert first.model.seen is not None
        counts = np.asarray(first.model.seen.sum(axis=0)).ravel().astype(np.float64)
        popularity = np.zeros(len(catalogue))
        popularity[first.to_service] = counts
        masks = cls(items, popularity)
        for record in requests:
            masks.apply(record, catalogue, first)
        return masks

    def apply(self, record: ForgetRecord, catalogue: Catalogue, first: LoadedModel) -> None:
        """Make a forget request take effect (idempotent)."""
        items = catalogue.index(record.item_ids)
        items = items[items >= 0]
        if record.kind == "items":
            self.items[items] = True
            return
        assert record.user_id is not None
        user = first.user_index(record.user_id)
        if record.kind == "user":
            if record.user_id not in self.users and user is not None:
                self._discount(first, first.seen_items(user))
            self.users.add(record.user_id)
            self.pairs.pop(record.user_id, None)
            return
        pairs = self.pairs.setdefault(record.user_id, set())
        fresh = np.array(sorted(set(items.tolist()) - pairs), dtype=np.int64)
        pairs.update(fresh.tolist())
        if user is not None and record.user_id not in self.users and len(fresh):
            trained = first.to_service[first.seen_items(user)]
            self._discount(first, first.from_service[np.intersect1d(trained, fresh)])

    def _discount(self, first: LoadedModel, model_items: np.ndarray) -> None:
        """Remove a user's forgotten training interactions from the popularity counts."""
        model_items = np.unique(model_items[model_items >= 0])
        np.subtract.at(self.popularity, first.to_service[model_items], 1.0)


class ForgetJobs:
    """A background thread that runs the unlearning job of each forget request in order.

    Jobs are durable: a request is stored as ``scheduled`` before it is queued, and requests
    still ``scheduled`` or ``running`` when the service stopped are queued again at start.
    With an unlearner, the models of the latest ``unlearned`` request are also served again
    at start (the unlearner finds its earlier output), since a restart loads the original runs.
    """

    def __init__(
        self, store: Store, unlearner: Unlearner | None, serve: Callable[[Sequence[Path]], None]
    ) -> None:
        self.store, self.unlearner, self.serve = store, unlearner, serve
        self._queue: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Queue unfinished requests and start the worker."""
        records = self.store.forget_requests()
        done = [r for r in records if r.status == "unlearned"]
        if self.unlearner is not None and done:
            self._queue.put((done[-1].id, True))
        for record in records:
            if record.status in ("scheduled", "running"):
                self._queue.put((record.id, False))
        self._thread = threading.Thread(target=self._work, name="polyrec-forget", daemon=True)
        self._thread.start()

    def submit(self, request_id: str) -> None:
        """Queue the job of a stored request."""
        self._queue.put((request_id, False))

    def wait(self) -> None:
        """Block until every queued job has finished."""
        self._queue.join()

    def stop(self) -> None:
        """Finish the running job and stop the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._run(*job)
            finally:
                self._queue.task_done()

    def _run(self, request_id: str, again: bool) -> None:
        record = self.store.forget_request(request_id)
        wanted = ("unlearned",) if again else ("scheduled", "running")
        if record is None or record.status not in wanted:
            return
        if self.unlearner is None:
            self.store.set_forget_status(request_id, "masked", MASK_ONLY_MESSAGE)
            return
        if not again:
            self.store.set_forget_status(request_id, "running", "")
        try:
            records = self.store.forget_requests()
            upto = records[: [r.id for r in records].index(request_id) + 1]
            runs = list(self.unlearner(record, upto))
            self.serve(runs)
        except Exception as exc:  # any unlearner failure must end the job, not the thread
            log.exception("unlearning failed for forget request %s", request_id)
            self.store.set_forget_status(request_id, "failed", f"{type(exc).__name__}: {exc}")
        else:
            serving = ", ".join(str(r) for r in runs)
            self.store.set_forget_status(request_id, "unlearned", f"serving {serving}")


class RecService:
    """Models, catalogue, store and masks; every method takes and returns service ids."""

    def __init__(self, config: ServeConfig, unlearner: Unlearner | None = None) -> None:
        if not config.runs:
            raise PolyrecError("serve needs at least one run directory")
        if config.candidates < 1:
            raise PolyrecError("candidates must be >= 1")
        self.config = config
        loaded = [_load_run(Path(r)) for r in config.runs]
        ranker_run = None if config.ranker is None else Path(config.ranker)
        is_ctr = ranker_run is not None and ctr_ranker_dir(ranker_run) is not None
        ranker = _load_run(ranker_run) if ranker_run is not None and not is_ctr else None
        self.catalogue = _catalogue(loaded + ([ranker] if ranker is not None else []))
        opts = dict(config.index_options, ann_threshold=config.ann_threshold)
        self.models = [
            self._attach(Path(run), m, build_retriever(m, config.index, **opts))
            for run, (m, _, _) in zip(config.runs, loaded, strict=True)
        ]
        self.ranker: CandidateScorer | None = None
        if ranker is not None and ranker_run is not None:
            # the ranker scores given candidates exactly; it needs no index
            attached = self._attach(ranker_run, ranker[0], Retriever(ranker[0]))
            self.ranker = RecommenderScorer(attached)
        elif ranker_run is not None:
            # a CTR ranker only ranks the retrievers' items: it adds none to the catalogue
            self.ranker = load_ctr_scorer(ranker_run, self.catalogue.ids)
        self.store = Store(config.db)
        self.store.upsert_items(self.catalogue.rows())
        for key in config.api_keys:
            self.store.add_api_key(key, "cli")
        self._lock = threading.Lock()  # updates of the masks
        self._writes = threading.Lock()  # forget requests against event batches and swaps
        self._ranker_forgot = [] if ranker is None else ranker[2]
        self.masks = Masks.build(
            self.catalogue,
            self.models[0],
            [i for _, _, forgot in loaded for i in forgot] + self._ranker_forgot,
            self.store.forget_requests(),
        )
        self.jobs = ForgetJobs(self.store, unlearner, self.serve_runs)

    # ------------------------------------------------------------------ loading
    def _attach(self, run: Path, model: Recommender, retriever: Retriever) -> LoadedModel:
        assert model.item_ids is not None and model.user_ids is not None
        to_service = self.catalogue.index(_str_ids(model.item_ids.external))
        from_service = np.full(len(self.catalogue), -1, np.int64)
        from_service[to_service] = np.arange(len(to_service))
        return LoadedModel(
            name=f"{model.name}:{run.name}",
            model=model,
            retriever=retriever,
            users={u: i for i, u in enumerate(_str_ids(model.user_ids.external))},
            to_service=to_service,
            from_service=from_service,
        )

    def serve_runs(self, runs: Sequence[Path]) -> None:
        """Serve ``runs`` (an unlearner's output: one per served run, in order) instead of
        the served models; the masks are rebuilt from every forget request over them."""
        if len(runs) != len(self.models):
            raise PolyrecError(f"got {len(runs)} runs to serve in place of {len(self.models)}")
        loaded = [_load_run(Path(r)) for r in runs]
        for run, (model, _, _) in zip(runs, loaded, strict=True):
            assert model.item_ids is not None
            ids = _str_ids(model.item_ids.external)
            new = np.flatnonzero(self.catalogue.index(ids) < 0)
            if len(new):
                raise PolyrecError(f"{run}: item {ids[new[0]]!r} is not in the served catalogue")
        opts = dict(self.config.index_options, ann_threshold=self.config.ann_threshold)
        models = [
            self._attach(Path(run), m, build_retriever(m, self.config.index, **opts))
            for run, (m, _, _) in zip(runs, loaded, strict=True)
        ]
        forgot = [i for _, _, f in loaded for i in f] + self._ranker_forgot
        with self._writes:  # no forget request lands between the replay and the swap
            masks = Masks.build(self.catalogue, models[0], forgot, self.store.forget_requests())
            with self._lock:
                self.models, self.masks = models, masks

    # ------------------------------------------------------------------ masks
    def _apply_mask(self, record: ForgetRecord) -> None:
        """Make a forget request take effect in serving (idempotent)."""
        with self._lock:
            self.masks.apply(record, self.catalogue, self.models[0])

    def forget(self, kind: str, user_id: str | None, item_ids: Sequence[str]) -> ForgetRecord:
        """Delete the data from the store, mask it from serving, schedule unlearning."""
        if kind in ("items", "interactions"):
            idx = self.catalogue.index(item_ids)
            if (idx < 0).any():
                bad = [i for i, j in zip(item_ids, idx, strict=True) if j < 0]
                raise PolyrecError(f"unknown item {bad[0]!r}" + _more(len(bad)))
        with self._writes:
            record = self.store.forget(kind, user_id, list(dict.fromkeys(item_ids)))
            self._apply_mask(record)
        self.jobs.submit(record.id)
        return record

    # ------------------------------------------------------------------ events
    def add_events(self, batch: Sequence[Event]) -> tuple[int, int]:
        """Validate the items of a batch and store it all or nothing."""
        idx = self.catalogue.index([e.item_id for e in batch])
        bad = np.flatnonzero(idx < 0)
        if len(bad):
            raise PolyrecError(f"unknown item {batch[bad[0]].item_id!r}" + _more(len(bad)))
        with self._writes:  # a forget request cannot land between the check and the insert
            gone = np.flatnonzero(self.masks.items[idx])
            if len(gone):
                raise PolyrecError(
                    f"item {batch[gone[0]].item_id!r} was forgotten" + _more(len(gone))
                )
            return self.store.add_events(batch)

    # ------------------------------------------------------------------ recommend
    def allowed_items(
        self, exclude: Sequence[str] = (), attributes: dict[str, str] | None = None
    ) -> np.ndarray:
        """Service-space allow mask: not forgotten, not excluded, matching the attributes."""
        allowed = ~self.masks.items
        if attributes:
            allowed &= self.catalogue.matching(attributes)
        idx = self.catalogue.index(exclude)
        allowed[idx[idx >= 0]] = False
        return allowed

    def recommend_user(
        self,
        user_id: str,
        k: int,
        *,
        exclude_seen: bool = True,
        exclude: Sequence[str] = (),
        attributes: dict[str, str] | None = None,
        text: TextRequest | None = None,
    ) -> Result:
        """Top ``k`` for a user id: learned profile, else stored history, else popularity;
        ``text`` conditions the models that read it (module docstring)."""
        allowed = self.allowed_items(exclude, attributes)
        stored = self.catalogue.index(self.store.user_history(user_id))
        stored = stored[(stored >= 0) & ~self.masks.items[stored]]
        forgotten = user_id in self.masks.users
        pairs = self._forgotten_pairs(user_id)
        allowed[pairs] = False
        if exclude_seen:
            allowed[stored] = False
        known = [] if forgotten else [m for m in self.models if m.user_index(user_id) is not None]
        if known and not len(pairs):
            plans = [(m, m.users[user_id], None) for m in known]
            history = None
            if self.ranker is not None:  # the ranker may need the behaviours, not the profile
                first = known[0]
                trained = first.to_service[first.training_history(first.users[user_id])]
                history = np.concatenate([trained, stored])
            return self._retrieve(plans, k, allowed, text, user_id, history, "model", exclude_seen)
        history = stored
        if known:  # forgotten interactions: the remaining training history replaces the profile
            first = known[0]
            user = first.user_index(user_id)
            assert user is not None
            trained = first.to_service[first.training_history(user)]
            history = np.concatenate([trained[~np.isin(trained, pairs)], stored])
            if exclude_seen:
                for m in known:
                    allowed[m.to_service[m.seen_items(m.users[user_id])]] = False
        return self._from_history(history, k, allowed, self._profile(user_id), text)

    def recommend_history(
        self,
        history: Sequence[str],
        k: int,
        *,
        user_id: str | None = None,
        exclude_seen: bool = True,
        exclude: Sequence[str] = (),
        attributes: dict[str, str] | None = None,
        text: TextRequest | None = None,
    ) -> Result:
        """Top ``k`` after an ad-hoc history; unknown or forgotten items are ignored and
        reported in ``ignored_history``; ``text`` as in :meth:`recommend_user`."""
        allowed = self.allowed_items(exclude, attributes)
        idx = self.catalogue.index(history)
        usable = (idx >= 0) & ~self.masks.items[np.maximum(idx, 0)]
        ignored = [h for h, ok in zip(history, usable, strict=True) if not ok]
        items = idx[usable]
        if exclude_seen:
            allowed[items] = False
        if user_id is not None:  # the user's forgotten items are not recommended back
            allowed[self._forgotten_pairs(user_id)] = False
        profile = None if user_id is None else self._profile(user_id)
        result = self._from_history(items, k, allowed, profile, text)
        result.ignored_history = ignored
        return result

    def _forgotten_pairs(self, user_id: str) -> np.ndarray:
        """Service indices of the user's forgotten interactions (copied under the lock that
        forget requests update them under)."""
        with self._lock:
            return np.array(sorted(self.masks.pairs.get(user_id, ())), dtype=np.int64)

    def _profile(self, user_id: str) -> str | None:
        """``user_id`` if its learned profile may be used (no forget request touched it)."""
        forgotten = user_id in self.masks.users or user_id in self.masks.pairs
        return None if forgotten else user_id

    def _from_history(
        self,
        history: np.ndarray,
        k: int,
        allowed: np.ndarray,
        profile: str | None,
        text: TextRequest | None,
    ) -> Result:
        given = text.fields if text is not None else frozenset()
        plans: list[tuple[LoadedModel, int | None, np.ndarray | None]] = []
        for m in self.models:
            local = m.from_service[history]
            local = local[local >= 0]
            # a text model can answer from the text alone (an empty history)
            if (len(local) and m.retriever.supports_history) or m.retriever.text_fields & given:
                plans.append((m, None, local))
        return self._retrieve(plans, k, allowed, text, profile, history, "history", False)

    def _retrieve(
        self,
        plans: list[tuple[LoadedModel, int | None, np.ndarray | None]],
        k: int,
        allowed: np.ndarray,
        text: TextRequest | None,
        profile: str | None,
        history: np.ndarray | None,
        source: str,
        exclude_seen: bool,
    ) -> Result:
        """Candidates of each ``(model, user index | None, model-space history)`` plan, merged
        and re-ranked; the models that read a given text are conditioned on it."""
        given = text.fields if text is not None else frozenset()
        if "query" in given and any("query" in m.retriever.text_fields for m, _, _ in plans):
            plans = [p for p in plans if "query" in p[0].retriever.text_fields]
        n, results, used = self.config.candidates, [], set()
        for m, user, local in plans:
            mask = m.allowed(allowed)
            if user is not None and exclude_seen:
                mask[m.seen_items(user)] = False
            fields = m.retriever.text_fields & given
            if fields and text is not None:
                hist = np.zeros(0, np.int64) if local is None else local
                results.append((m, m.retriever.for_text(text, user, hist, n, mask)))
                used |= fields
            elif user is not None:
                results.append((m, m.retriever.for_user(user, n, mask)))
            elif local is not None:
                results.append((m, m.retriever.for_history(local, n, mask)))
        if not results:
            return self.popular(k, allowed)
        result = self._finish(results, k, profile, history, source)
        result.text_used = frozenset(used)
        return result

    def popular(self, k: int, allowed: np.ndarray) -> Result:
        """The popularity fallback (cold start) among allowed items."""
        scores = np.where(allowed, self.masks.popularity, -np.inf)
        k = min(k, int(allowed.sum()))
        top = np.argsort(-scores, kind="stable")[:k]
        return Result(top, scores[top], "popularity", [self.models[0].name])

    def similar(self, item_id: str, k: int) -> Result:
        """Items similar to ``item_id`` from every model that knows it, merged."""
        idx = int(self.catalogue.index([item_id])[0])
        if idx < 0:
            raise LookupError(f"unknown item {item_id!r}")
        if self.masks.items[idx]:
            raise LookupError(f"item {item_id!r} was forgotten")
        allowed = ~self.masks.items
        results = []
        for m in self.models:
            local = m.from_service[idx]
            if local >= 0 and m.retriever.supports_similar:
                mask = m.allowed(allowed)
                results.append((m, m.retriever.similar(int(local), k, mask)))
        if not results:
            raise PolyrecError("no loaded model defines item similarity")
        return self._merge(results, k, "model")

    def _finish(
        self,
        results: list[tuple[LoadedModel, Candidates]],
        k: int,
        profile: str | None,
        history: np.ndarray | None,
        source: str,
    ) -> Result:
        if self.ranker is None:
            return self._merge(results, k, source)
        merged = self._merge(results, self.config.candidates, source)
        return self._rerank(merged, k, profile, history)

    def _merge(self, results: list[tuple[LoadedModel, Candidates]], k: int, source: str) -> Result:
        names = [m.name for m, _ in results]
        if len(results) == 1:
            m, c = results[0]
            return Result(m.to_service[c.items[:k]], c.scores[:k], source, names)
        fused = reciprocal_rank_fusion([list(m.to_service[c.items]) for m, c in results])
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
        return Result(
            np.array([i for i, _ in ranked], dtype=np.int64),
            np.array([s for _, s in ranked]),
            source,
            names,
        )

    def _rerank(
        self, merged: Result, k: int, profile: str | None, history: np.ndarray | None
    ) -> Result:
        """Second stage: the ranker's scores over the candidates it knows; candidates it does
        not know keep their order after the ones it scored. ``profile`` is the user id when
        their learned profile may be used; forgotten items never reach the ranker."""
        ranker = self.ranker
        assert ranker is not None
        hist = np.zeros(0, np.int64) if history is None else history[~self.masks.items[history]]
        scores = ranker.score_candidates(profile, hist, merged.items)
        if scores is None:
            merged.items, merged.scores = merged.items[:k], merged.scores[:k]
            return merged
        known = ~np.isnan(scores)
        scored = np.flatnonzero(known)
        order = np.concatenate(
            [scored[np.argsort(-scores[scored], kind="stable")], np.flatnonzero(~known)]
        )[:k]
        return Result(
            merged.items[order],
            np.where(known, scores, -np.inf)[order],
            merged.source,
            [*merged.models, ranker.name],
            reranked=True,
        )

    # ------------------------------------------------------------------ info
    def sample_users(self, limit: int) -> list[str]:
        """Some user ids the first model knows, not forgotten (for the web page)."""
        out = []
        for user in list(self.models[0].users)[: limit + len(self.masks.users)]:
            if user not in self.masks.users:
                out.append(user)
            if len(out) == limit:
                break
        return out

    def describe(self) -> dict[str, Any]:
        """What is served (``/health``)."""
        return {
            "models": [
                m.retriever.info | {"name": m.name, "text": sorted(m.retriever.text_fields)}
                for m in self.models
            ],
            "ranker": None if self.ranker is None else self.ranker.name,
            "n_items": len(self.catalogue),
            "forgotten_items": int(self.masks.items.sum()),
            "forgotten_users": len(self.masks.users),
            "database": self.store.dialect,
            "unlearner": "configured" if self.jobs.unlearner is not None else "mask-only",
        }

    def close(self) -> None:
        """Stop the job worker and release the database."""
        self.jobs.stop()
        self.store.close()


# ---------------------------------------------------------------------- helpers
def _str_ids(ids: np.ndarray) -> list[str]:
    return [str(x) for x in ids]


def _more(n_bad: int) -> str:
    return f" (and {n_bad - 1} more)" if n_bad > 1 else ""


def _load_run(run: Path) -> tuple[Recommender, pd.DataFrame | None, list[str]]:
    """A run directory's model, its items table (ids, titles, attributes) if present, and the
    items an unlearning run forgot. The model of an unlearned run is served unwrapped: its
    forgotten items join the service's item mask, which every path applies (the wrapper's
    ``-inf`` scores would only reach the paths that score through it)."""
    from polyrec.experiment import ITEMS_FILE, MODEL_DIR
    from polyrec.unlearn.base import unwrap

    model_dir = run / MODEL_DIR if (run / MODEL_DIR).is_dir() else run
    if not run.exists():
        raise PolyrecError(f"run directory {run} does not exist")
    model, blocked = unwrap(Recommender.load(model_dir))
    assert model.item_ids is not None
    forgotten = _str_ids(model.item_ids.external[blocked])
    items_path = run / ITEMS_FILE
    return model, pd.read_parquet(items_path) if items_path.is_file() else None, forgotten


def _catalogue(loaded: list[tuple[Recommender, pd.DataFrame | None, list[str]]]) -> Catalogue:
    """Union of item ids (first model's order first); titles and attributes from items.parquet."""
    ids: dict[str, None] = {}
    for model, _, _ in loaded:
        assert model.item_ids is not None
        ids.update(dict.fromkeys(_str_ids(model.item_ids.external)))
    index = pd.Index(list(ids), dtype=object)
    titles = np.full(len(index), None, dtype=object)
    attributes = pd.DataFrame(index=range(len(index)))
    for _, frame, _ in loaded:
        if frame is None or "item" not in frame.columns:
            continue
        pos = index.get_indexer(_str_ids(frame["item"].to_numpy()))
        ok = pos >= 0
        if "title" in frame.columns:
            titles[pos[ok]] = frame["title"].to_numpy(dtype=object)[ok]
        for col in frame.columns:
            if col in ("item", "title"):
                continue
            if col not in attributes.columns:
                attributes[col] = pd.Series([None] * len(index), dtype=object)
            values = attributes[col].to_numpy(dtype=object, copy=True)
            values[pos[ok]] = frame[col].to_numpy(dtype=object)[ok]
            attributes[col] = values
    return Catalogue(index, titles, attributes)
