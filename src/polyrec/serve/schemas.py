"""Request and response bodies of the HTTP API (pydantic; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

MAX_K = 100
MAX_HISTORY = 1000
MAX_BATCH = 10_000
MAX_TEXT = 2000

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: a client mistake, not a 500
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL)]


class Strict(BaseModel):
    """Base of request bodies: extra keys are a client mistake, reported as such."""

    # ids may come as JSON numbers (MovieLens ids are integers): they are ids as strings
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class Filters(Strict):
    """Filters applied before ranking."""

    exclude_seen: bool = True
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_HISTORY)
    attributes: dict[str, str] = Field(
        default_factory=dict, description="keep items whose attribute equals the value"
    )


class HistoryRequest(Strict):
    """``POST /recommendations``: recommend after an ad-hoc history of external item ids (or,
    with an empty history and a ``user_id``, for that user), optionally conditioned on text."""

    history: list[Id] = Field(default_factory=list, max_length=MAX_HISTORY)
    k: int = Field(10, ge=1, le=MAX_K)
    preference: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="natural-language preference sentences, read by preference-aware models",
    )
    query: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="product-search text, answered by search models (they alone then retrieve)",
    )
    user_id: Id | None = None
    filters: Filters = Field(default_factory=Filters)


class RecommendedItem(BaseModel):
    """One recommended item."""

    rank: int
    item_id: str
    title: str | None
    score: float


class Recommendations(BaseModel):
    """A recommendation list.

    ``source``: ``model`` (the user's learned profile), ``history`` (an ad-hoc or stored
    history), ``popularity`` (fallback for a user with no usable data; ``cold_start`` is true).
    """

    user_id: str | None
    k: int
    source: Literal["model", "history", "popularity"]
    cold_start: bool
    models: list[str]
    reranked: bool
    preference_used: bool = Field(description="a served model conditioned on the preference")
    query_used: bool = Field(description="a served model answered the search query")
    ignored_history: list[str] = Field(
        default_factory=list, description="history items unknown to every model"
    )
    items: list[RecommendedItem]


class SimilarItems(BaseModel):
    """Items similar to one item."""

    item_id: str
    k: int
    models: list[str]
    items: list[RecommendedItem]


class EventIn(Strict):
    """One interaction event; ``timestamp`` defaults to the time it is received."""

    user_id: Id
    item_id: Id
    type: str = Field("click", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    timestamp: datetime | FiniteFloat | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=128, pattern=NO_NUL)


class EventBatch(Strict):
    """A batch of events, stored all or nothing."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsAccepted(BaseModel):
    """The outcome of storing events: new ones and skipped duplicates (same key)."""

    stored: int
    duplicates: int


class ForgetRequest(Strict):
    """``POST /forget``: forget a user, items, or some of a user's interactions."""

    kind: Literal["user", "items", "interactions"]
    user_id: Id | None = None
    item_ids: list[Id] = Field(default_factory=list, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _check(self) -> ForgetRequest:
        if self.kind in ("user", "interactions") and self.user_id is None:
            raise ValueError(f"kind {self.kind!r} needs user_id")
        if self.kind in ("items", "interactions") and not self.item_ids:
            raise ValueError(f"kind {self.kind!r} needs a non-empty item_ids")
        if self.kind == "user" and self.item_ids:
            raise ValueError("kind 'user' takes no item_ids (use kind 'interactions')")
        if self.kind == "items" and self.user_id is not None:
            raise ValueError("kind 'items' takes no user_id (use kind 'interactions')")
        return self


class ForgetStatus(BaseModel):
    """A forget request: data removed at once, masked at once, model unlearning as a job.

    ``status``: ``scheduled`` -> ``running`` -> ``unlearned`` (the unlearner's models are
    served; ``message`` names their runs), ``masked`` (no unlearner configured: removed and
    masked, models unchanged), or ``failed`` (the unlearner raised; the data stays removed
    and masked).
    """

    request_id: str
    kind: str
    user_id: str | None
    item_ids: list[str]
    status: str
    message: str
    removed_events: int
    created_at: float
    updated_at: float


class ErrorBody(BaseModel):
    """Every error answer: one line saying what was wrong."""

    error: str
