"""The HTTP API of ``polyrec serve`` (FastAPI).

Endpoints (writes need an API key, see :mod:`polyrec.serve.security`):

- ``GET /recommendations/{user_id}?k=10``: top k for a user; a user no model knows gets
  recommendations from their stored events, else the popularity fallback with
  ``cold_start: true``;
- ``POST /recommendations``: top k after an ad-hoc history of external item ids (unknown items
  are ignored and listed in ``ignored_history``), or for ``user_id`` when the history is empty,
  with filters; an optional ``preference`` (read by preference-aware models such as Mender)
  and ``query`` (product search, answered by search models such as UniMP) condition the models
  that read them, and ``preference_used`` / ``query_used`` say whether one did; text no loaded
  model reads is ignored (both flags false), never an error;
- ``GET /items/{item_id}/similar?k=10``;
- ``POST /events`` (key): one event or ``{"events": [...]}``, stored all or nothing; events
  whose ``idempotency_key`` is stored already are skipped (an ``Idempotency-Key`` header gives a
  single event its key, or the events of a batch ``KEY:0``, ``KEY:1``, ...);
- ``POST /forget`` (key) and ``GET /forget/{request_id}``;
- ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /users`` (sample ids), ``GET /``
  (the web page).

A client mistake gets a 4xx with ``{"error": "one line"}``: 400 malformed JSON, 401/403 API
key, 404 unknown route, item or forget request, 413 body too large, 422 a field that does not
validate or names an unknown or forgotten item or attribute. Only a bug gives a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from importlib import resources
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from polyrec.errors import PolyrecError
from polyrec.serve.metrics import CONTENT_TYPE, Metrics
from polyrec.serve.retrieval import TextRequest
from polyrec.serve.schemas import (
    MAX_K,
    NO_NUL,
    ErrorBody,
    EventBatch,
    EventIn,
    EventsAccepted,
    ForgetRequest,
    ForgetStatus,
    HistoryRequest,
    Recommendations,
    RecommendedItem,
    SimilarItems,
)
from polyrec.serve.security import BodySizeLimit, require_api_key
from polyrec.serve.service import RecService, Result, ServeConfig, Unlearner
from polyrec.serve.store import Event, ForgetRecord

log = logging.getLogger("polyrec.serve")

UserId = Annotated[str, Path(min_length=1, max_length=256, pattern=NO_NUL)]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"list length, 1..{MAX_K}")]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 422)
}


def create_app(config: ServeConfig, *, unlearner: Unlearner | None = None) -> FastAPI:
    """Load the runs of ``config`` and build the app.

    ``unlearner`` is called (in a background job) with each forget request after its data was
    removed and masked; ``None`` ends each request in status ``masked``.
    """
    service = RecService(config, unlearner)
    metrics = Metrics()
    for m in service.models:
        info = m.retriever.info
        for index in ("user_index", "item_index"):
            recall = info.get(index, {}).get("recall_vs_exact")
            if recall is not None:
                metrics.recall.labels(m.name, index).set(recall)
                log.info("%s %s: recall vs exact %.4f", m.name, index, recall)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.jobs.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="polyrec",
        summary="Recommendations, events and forget requests over trained polyrec models.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.service = service
    app.state.metrics = metrics
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "Idempotency-Key"],
        )
    _add_error_handlers(app)

    app.add_middleware(Observe, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    writer = Depends(require_api_key(service.store))

    def as_response(result: Result, user_id: str | None, k: int) -> Recommendations:
        items = [
            RecommendedItem(
                rank=rank,
                item_id=str(service.catalogue.ids[i]),
                title=service.catalogue.titles[i],
                score=float(s),
            )
            for rank, (i, s) in enumerate(zip(result.items, result.scores, strict=True), 1)
        ]
        if result.source == "popularity":
            metrics.cold_start.inc()
        return Recommendations(
            user_id=user_id,
            k=k,
            source=result.source,  # type: ignore[arg-type]
            cold_start=result.source == "popularity",
            models=result.models,
            reranked=result.reranked,
            preference_used="preference" in result.text_used,
            query_used="query" in result.text_used,
            ignored_history=result.ignored_history,
            items=items,
        )

    # hot paths answer with the model's own JSON (pydantic-core): FastAPI's response_model
    # would validate and encode it a second time; the schema is declared for OpenAPI
    @app.get("/recommendations/{user_id}", responses={200: {"model": Recommendations}})
    def recommend_user(user_id: UserId, k: K = 10, exclude_seen: bool = True) -> Response:
        """Top k for a user (learned profile, else stored events, else popularity)."""
        result = service.recommend_user(user_id, k, exclude_seen=exclude_seen)
        return _json(as_response(result, user_id, k))

    @app.post("/recommendations", responses={200: {"model": Recommendations}})
    def recommend_history(body: HistoryRequest) -> Response:
        """Top k after an ad-hoc history (oldest first) of external item ids, or for
        ``user_id`` when the history is empty.

        ``preference`` and ``query`` condition the models that read them; ``preference_used``
        and ``query_used`` say whether one did (text no model reads is ignored).
        """
        f = body.filters
        text = TextRequest(preference=body.preference, query=body.query)
        if not body.history and body.user_id is not None:
            result = service.recommend_user(
                body.user_id,
                body.k,
                exclude_seen=f.exclude_seen,
                exclude=f.exclude_items,
                attributes=f.attributes,
                text=text,
            )
        else:
            result = service.recommend_history(
                body.history,
                body.k,
                user_id=body.user_id,
                exclude_seen=f.exclude_seen,
                exclude=f.exclude_items,
                attributes=f.attributes,
                text=text,
            )
        return _json(as_response(result, body.user_id, body.k))

    @app.get("/items/{item_id}/similar", responses={200: {"model": SimilarItems}})
    def similar(item_id: UserId, k: K = 10) -> Response:
        """The k items most similar to one item."""
        try:
            result = service.similar(item_id, k)
        except LookupError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        return _json(
            SimilarItems(
                item_id=item_id,
                k=k,
                models=result.models,
                items=as_response(result, None, k).items,
            )
        )

    @app.post("/events", response_model=EventsAccepted, dependencies=[writer])
    def add_events(
        body: Annotated[EventIn | EventBatch, Body()],
        idempotency_key: Annotated[str | None, Header(max_length=100)] = None,
    ) -> EventsAccepted:
        """Store one event or a batch (all or nothing); known idempotency keys are skipped."""
        batch = body.events if isinstance(body, EventBatch) else [body]
        now = time.time()
        events = []
        for pos, ev in enumerate(batch):
            key = ev.idempotency_key
            if key is None and idempotency_key is not None:
                key = idempotency_key if isinstance(body, EventIn) else f"{idempotency_key}:{pos}"
            events.append(Event(ev.user_id, ev.item_id, ev.type, _epoch(ev.timestamp, now), key))
        stored, duplicates = service.add_events(events)
        metrics.events.inc(stored)
        metrics.duplicates.inc(duplicates)
        return EventsAccepted(stored=stored, duplicates=duplicates)

    @app.post("/forget", response_model=ForgetStatus, status_code=202, dependencies=[writer])
    def forget(body: ForgetRequest) -> ForgetStatus:
        """Forget a user, items or interactions: removed from the store and masked from serving
        now; model unlearning runs as a job (poll ``GET /forget/{request_id}``)."""
        record = service.forget(body.kind, body.user_id, body.item_ids)
        metrics.forget.labels(body.kind).inc()
        return _status(record)

    @app.get("/forget/{request_id}", response_model=ForgetStatus, dependencies=[writer])
    def forget_status(request_id: UserId) -> ForgetStatus:
        """The state of a forget request and its unlearning job."""
        record = service.store.forget_request(request_id)
        if record is None:
            raise HTTPException(404, f"unknown forget request {request_id!r}")
        return _status(record)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and what is served (models, indexes with their recall, store)."""
        return {"status": "ok", **service.describe()}

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/users")
    def sample_users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, list[str]]:
        """Some known user ids (for the web page)."""
        return {"users": service.sample_users(limit)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_PAGE)

    return app


_PAGE = resources.files("polyrec.serve").joinpath("static/index.html").read_text()


class Observe:
    """ASGI middleware counting requests and timing them by route template (a pure ASGI
    middleware: ``BaseHTTPMiddleware`` costs about a millisecond per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            # the router stores the matched route in the scope: label by its template, so ids
            # in paths do not create one time series each
            label = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)


def _json(body: BaseModel) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")


def _status(record: ForgetRecord) -> ForgetStatus:
    data = dict(record.__dict__)
    data["request_id"] = data.pop("id")
    return ForgetStatus(**data)


def _epoch(value: datetime | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        malformed = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if malformed is not None:
            where = malformed.get("ctx", {}).get("error", "")
            return _error(400, f"malformed JSON body: {where}".rstrip(": "))
        return _error(422, "; ".join(_describe(e) for e in _dedupe(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(PolyrecError)
    async def user_error(_: Request, exc: PolyrecError) -> JSONResponse:
        return _error(422, str(exc))


def _error(code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=code, headers=headers)


def _dedupe(errors: Any) -> list[dict[str, Any]]:
    """Drop the per-branch duplicates a union body (one event | batch) produces: keep the
    errors of the branch the client most likely meant."""
    errors = list(errors)
    batch = [e for e in errors if "EventBatch" in map(str, e.get("loc", ()))]
    single = [e for e in errors if "EventIn" in map(str, e.get("loc", ()))]
    if batch and single:
        meant_batch = any(
            "events" in map(str, e.get("loc", ())) and e.get("type") != "missing" for e in batch
        )
        return batch if meant_batch else single
    return errors


def _describe(error: dict[str, Any]) -> str:
    loc = [str(x) for x in error.get("loc", ()) if x not in ("EventIn", "EventBatch")]
    where = ".".join(loc) or "request"
    return f"{where}: {error.get('msg', 'invalid')}"
