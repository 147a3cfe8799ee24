"""Interleaved multimodal user histories: the one schema the unified models read.

UniMP (Wei et al., "Towards Unified Multi-Modal Personalization", ICLR 2024) represents a user
as the time-ordered sequence of their past events, each an item with whatever the data has
about it, interleaved: the item, its image, its title, the user's review and rating. Here an
event is an :class:`Event`:

- ``item``: internal item index (always present);
- ``rating``: the user's rating, or ``None``;
- ``review``: the user's review text, or ``None``;

and the item-side fields come from the dataset once per item: ``title`` and ``categories``
(text columns of ``item_data``) and a feature vector (an image or text embedding, one of
``item_vectors``) that a model injects as a soft token. Any :class:`~polyrec.data.Dataset` with
these fields feeds it: interactions give the events, ``ratings`` the ratings,
``interaction_data["review"]`` the reviews, ``item_data["title"]`` /
``item_data["categories"]`` (or ``"category"``) the item text.

:class:`InterleavedLog` holds all users' events columnar (CSR over users, time order) so that a
history is a slice; :meth:`InterleavedLog.to_records` / :meth:`InterleavedLog.from_records` are
its plain-JSON form (lists of event dicts per user) and round-trip exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError

REVIEW_FIELD = "review"
CATEGORY_FIELDS = ("categories", "category")


@dataclass(frozen=True)
class Event:
    """One past event of a user: an internal item and the user's optional rating and review."""

    item: int
    rating: float | None = None
    review: str | None = None

    def to_record(self) -> dict[str, Any]:
        """Plain-JSON dict (missing fields left out)."""
        out: dict[str, Any] = {"item": int(self.item)}
        if self.rating is not None:
            out["rating"] = float(self.rating)
        if self.review is not None:
            out["review"] = self.review
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_record`; unknown keys are an error."""
        extra = set(record) - {"item", "rating", "review"}
        if extra or "item" not in record:
            raise PolyrecError(f"bad event record {record!r}: keys are item, rating, review")
        rating = record.get("rating")
        return cls(
            int(record["item"]), None if rating is None else float(rating), record.get("review")
        )


@dataclass
class InterleavedLog:
    """All users' events in time order, columnar: user ``u``'s events are positions
    ``indptr[u]:indptr[u+1]`` of ``items`` / ``ratings`` (NaN = none) / ``reviews``
    (``None`` = the dataset has no reviews; ``None`` entries = no review for that event)."""

    indptr: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    reviews: np.ndarray | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> InterleavedLog:
        """The events of ``ds`` per user, in the dataset's time order (:attr:`Dataset.order`)."""
        order = ds.order
        seqs = ds.sequences
        ratings = None if ds.ratings is None else ds.ratings[order].astype(np.float64)
        reviews = None
        if ds.interaction_data is not None and REVIEW_FIELD in ds.interaction_data.columns:
            col = ds.interaction_data[REVIEW_FIELD].astype(object).to_numpy()[order]
            reviews = np.array([_text_or_none(x) for x in col], dtype=object)
        return cls(seqs.indptr.copy(), seqs.items.copy(), ratings, reviews)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def events(self, user: int) -> list[Event]:
        """User ``user``'s events, oldest first."""
        lo, hi = int(self.indptr[user]), int(self.indptr[user + 1])
        return [self.event(j) for j in range(lo, hi)]

    def event(self, position: int) -> Event:
        """The event at flat ``position``."""
        rating = None
        if self.ratings is not None and not math.isnan(self.ratings[position]):
            rating = float(self.ratings[position])
        review = None if self.reviews is None else self.reviews[position]
        return Event(int(self.items[position]), rating, review)

    def to_records(self) -> list[list[dict[str, Any]]]:
        """Plain-JSON form: per user, the list of event dicts."""
        return [[e.to_record() for e in self.events(u)] for u in range(self.n_users)]

    @classmethod
    def from_records(cls, records: Sequence[Sequence[dict[str, Any]]]) -> InterleavedLog:
        """Inverse of :meth:`to_records`."""
        events = [[Event.from_record(r) for r in user] for user in records]
        return cls.from_events(events)

    @classmethod
    def from_events(cls, histories: Sequence[Sequence[Event]]) -> InterleavedLog:
        """A log from per-user event lists (e.g. ad-hoc histories)."""
        flat = [e for h in histories for e in h]
        indptr = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
        items = np.array([e.item for e in flat], dtype=np.int64)
        ratings = None
        if any(e.rating is not None for e in flat):
            ratings = np.array(
                [np.nan if e.rating is None else e.rating for e in flat], dtype=np.float64
            )
        reviews = None
        if any(e.review is not None for e in flat):
            reviews = np.array([e.review for e in flat], dtype=object)
        return cls(indptr, items, ratings, reviews)


def item_titles(ds: Dataset) -> np.ndarray:
    """Item titles in internal order ("" where missing); an error if the dataset has none."""
    titles = ds.item_titles()
    if titles is None:
        raise PolyrecError(f"dataset {ds.name!r} has no item titles (item_data['title'])")
    return titles


def item_categories(ds: Dataset) -> np.ndarray:
    """Item category text in internal order ("" where missing or when the dataset has none);
    list-valued categories are joined with spaces."""
    data = ds.item_data
    col = next((c for c in CATEGORY_FIELDS if data is not None and c in data.columns), None)
    if data is None or col is None:
        return np.full(ds.n_items, "", dtype=object)
    out = []
    for value in data[col].to_numpy():
        if isinstance(value, list | tuple | np.ndarray):
            out.append(" ".join(str(v) for v in value))
        else:
            out.append(_text_or_none(value) or "")
    return np.array(out, dtype=object)


def has_reviews(ds: Dataset) -> bool:
    """Whether ``ds`` carries review text per interaction."""
    return ds.interaction_data is not None and REVIEW_FIELD in ds.interaction_data.columns


def _text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None
