"""The one dataset every polyrec model reads.

A :class:`Dataset` holds interactions as columnar numpy arrays over *internal* indices
(``0..n_users-1``, ``0..n_items-1``), the :class:`IdMap` objects that translate external ids,
and optional side data. Splits of one dataset share its id maps, so the internal index of an
item means the same thing in train, validation and test.

The CSR user-item matrix and the time-ordered per-user sequences are computed once, on first
use, and cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from polyrec.errors import PolyrecError


class IdMap:
    """A two-way map between external ids (any hashable) and dense internal indices."""

    def __init__(self, external: Sequence[Any] | np.ndarray) -> None:
        ext = np.asarray(external)
        if ext.dtype.kind == "U" or ext.dtype.kind == "S":
            ext = ext.astype(object)
        self.external: np.ndarray = ext
        index = pd.Index(ext)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise PolyrecError(f"duplicate id {dup!r} in id map")
        self._index = index

    def __len__(self) -> int:
        return len(self.external)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and (
            self is other or np.array_equal(self.external, other.external)
        )

    __hash__ = None  # type: ignore[assignment]

    def to_internal(self, ids: Iterable[Any], *, what: str = "id") -> np.ndarray:
        """Map external ids to internal indices; unknown ids raise one clear error."""
        arr = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids), dtype=object)
        if arr.dtype != self.external.dtype and self.external.dtype != object:
            arr = self._cast(arr, what)
        idx = self._index.get_indexer(arr)
        if (idx < 0).any():
            bad = _plain(arr[np.flatnonzero(idx < 0)[0]])
            n_bad = int((idx < 0).sum())
            raise PolyrecError(
                f"unknown {what} {bad!r}" + (f" (and {n_bad - 1} more)" if n_bad > 1 else "")
            )
        return idx.astype(np.int64)

    def _cast(self, arr: np.ndarray, what: str) -> np.ndarray:
        """``arr`` in the external ids' dtype; an id that does not convert exactly (``2.5``
        or ``"abc"`` among integer ids) is unknown, not rounded or truncated to another."""
        dtype = self.external.dtype
        with np.errstate(invalid="ignore"):
            try:
                out = arr.astype(dtype)
            except (TypeError, ValueError, OverflowError):
                out = None
        if out is not None:
            same = np.asarray(out.astype(object) == arr.astype(object), bool)
            # "7" for the integer id 7 is the same id; 2.5 or "7x" is not
            wrong = [i for i in np.flatnonzero(~same) if str(out[i]) != str(arr[i]).strip()]
            if not wrong:
                return out
            bad = arr[wrong[0]]
        else:
            bad = next(v for v in arr.tolist() if not _converts(v, dtype))
        raise PolyrecError(f"unknown {what} {_plain(bad)!r}")

    def to_external(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """Map internal indices back to external ids."""
        return self.external[np.asarray(idx, dtype=np.int64)]

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)})"


@dataclass
class Dataset:
    """Interactions over internal indices plus id maps and optional side data.

    Attributes:
        users, items: int64 internal indices, one entry per interaction.
        timestamps: float64 seconds (or any monotone order), or ``None``.
        ratings: float32 explicit rating or implicit weight, or ``None`` (all 1).
        user_ids, item_ids: the id maps; ``len(item_ids)`` is the catalogue size.
        item_data: per-item side data (title, categories, ...), row i = internal item i.
        user_data: per-user side data, row u = internal user u.
        item_vectors: named dense item feature matrices, shape (n_items, d).
        interaction_data: per-interaction side data (e.g. review text), row j = interaction j.
        name: the dataset's name as resolved (e.g. ``ml-100k``).
    """

    users: np.ndarray
    items: np.ndarray
    user_ids: IdMap
    item_ids: IdMap
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    item_data: pd.DataFrame | None = None
    user_data: pd.DataFrame | None = None
    item_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    interaction_data: pd.DataFrame | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        self.users = np.ascontiguousarray(self.users, dtype=np.int64)
        self.items = np.ascontiguousarray(self.items, dtype=np.int64)
        n = len(self.users)
        if len(self.items) != n:
            raise PolyrecError(f"users has {n} entries but items has {len(self.items)}")
        if self.timestamps is not None:
            self.timestamps = np.ascontiguousarray(self.timestamps, dtype=np.float64)
            if len(self.timestamps) != n:
                raise PolyrecError(f"timestamps has {len(self.timestamps)} entries, expected {n}")
        if self.ratings is not None:
            self.ratings = np.ascontiguousarray(self.ratings, dtype=np.float32)
            if len(self.ratings) != n:
                raise PolyrecError(f"ratings has {len(self.ratings)} entries, expected {n}")
            if np.isnan(self.ratings).any():
                row = int(np.flatnonzero(np.isnan(self.ratings))[0])
                raise PolyrecError(f"rating is NaN at interaction {row}")
        if self.interaction_data is not None and len(self.interaction_data) != n:
            raise PolyrecError(
                f"interaction_data has {len(self.interaction_data)} rows, expected {n}"
            )
        if n and (self.users.min() < 0 or self.users.max() >= len(self.user_ids)):
            raise PolyrecError("user index out of range of user_ids")
        if n and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise PolyrecError("item index out of range of item_ids")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        user: str = "user",
        item: str = "item",
        timestamp: str | None = "timestamp",
        rating: str | None = "rating",
        item_data: pd.DataFrame | None = None,
        user_data: pd.DataFrame | None = None,
        name: str = "custom",
    ) -> Dataset:
        """Build a dataset from a frame of external ids.

        Missing optional columns (``timestamp``, ``rating``) are skipped. ``item_data`` /
        ``user_data`` are indexed by external id; items that appear only there (no
        interaction) still enter the catalogue so that side data is never dropped.
        """
        for col in (user, item):
            if col not in df.columns:
                raise PolyrecError(f"column {col!r} not found; columns are {list(df.columns)}")
        if df[user].isna().any() or df[item].isna().any():
            col = user if df[user].isna().any() else item
            row = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise PolyrecError(f"missing {col} at row {row}")
        u_codes, u_uniques = pd.factorize(df[user], sort=True)
        item_ext = pd.Index(pd.unique(df[item]))
        if item_data is not None:
            item_ext = item_ext.union(item_data.index, sort=False)
        item_ext = sorted_ids(item_ext)
        i_codes = item_ext.get_indexer(df[item])
        user_ext = pd.Index(u_uniques)
        if user_data is not None:
            extra = user_data.index.difference(user_ext)
            user_ext = user_ext.append(extra)
        ts = None
        if timestamp is not None and timestamp in df.columns:
            ts = pd.to_numeric(df[timestamp], errors="coerce").to_numpy(np.float64)
            if np.isnan(ts).any():
                row = int(np.flatnonzero(np.isnan(ts))[0])
                raise PolyrecError(f"{timestamp} is missing or not a number at row {row}")
        rt = None
        if rating is not None and rating in df.columns:
            rt = pd.to_numeric(df[rating], errors="coerce").to_numpy(np.float32)
            if np.isnan(rt).any():
                row = int(np.flatnonzero(np.isnan(rt))[0])
                raise PolyrecError(f"{rating} is missing or not a number at row {row}")
        ids_item = IdMap(item_ext.to_numpy())
        ids_user = IdMap(user_ext.to_numpy())
        return cls(
            users=u_codes,
            items=i_codes,
            timestamps=ts,
            ratings=rt,
            user_ids=ids_user,
            item_ids=ids_item,
            item_data=_align(item_data, ids_item),
            user_data=_align(user_data, ids_user),
            name=name,
        )

    def with_interactions(self, mask: np.ndarray | None = None, **arrays: Any) -> Dataset:
        """A dataset over the same id maps and side data with a subset of interactions.

        Either pass a boolean/index ``mask`` over interactions, or replacement arrays.
        """
        if mask is not None:
            arrays = {
                "users": self.users[mask],
                "items": self.items[mask],
                "timestamps": None if self.timestamps is None else self.timestamps[mask],
                "ratings": None if self.ratings is None else self.ratings[mask],
                "interaction_data": None
                if self.interaction_data is None
                else self.interaction_data.iloc[mask].reset_index(drop=True),
            }
        return Dataset(
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            item_data=self.item_data,
            user_data=self.user_data,
            item_vectors=self.item_vectors,
            name=self.name,
            **arrays,
        )

    # ------------------------------------------------------------------ sizes
    @property
    def n_users(self) -> int:
        """Number of users in the id space (not only those with interactions)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def __len__(self) -> int:
        return self.n_interactions

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"interactions={self.n_interactions})"
        )

    # ------------------------------------------------------------------ views (cached)
    @cached_property
    def csr(self) -> sp.csr_matrix:
        """User x item matrix; duplicate pairs are summed, implicit data counts 1 each."""
        data = self.ratings if self.ratings is not None else np.ones(len(self), np.float32)
        m = sp.csr_matrix(
            (data, (self.users, self.items)), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.sum_duplicates()
        m.sort_indices()
        return m

    @cached_property
    def binary_csr(self) -> sp.csr_matrix:
        """User x item 0/1 matrix (what "seen" means for masking)."""
        m = self.csr.copy()
        m.data = np.ones_like(m.data)
        return m

    @cached_property
    def order(self) -> np.ndarray:
        """Interaction order by (user, timestamp, original position): stable and leak-free."""
        if self.timestamps is None:
            return np.argsort(self.users, kind="stable")
        return np.lexsort((np.arange(len(self)), self.timestamps, self.users))

    @cached_property
    def sequences(self) -> Sequences:
        """Time-ordered per-user item sequences in CSR form."""
        order = self.order
        counts = np.bincount(self.users, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        ts = None if self.timestamps is None else self.timestamps[order]
        return Sequences(indptr=indptr, items=self.items[order], timestamps=ts)

    @cached_property
    def order_only(self) -> bool:
        """True when the interactions carry order but no time: no timestamps, or timestamps
        that number each user's events 0, 1, 2, ... (what the sequence-file readers write)."""
        if self.timestamps is None:
            return True
        return bool(np.array_equal(self.timestamps, rank_within(self.users, self.timestamps)))

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Interaction count per item (int64, length n_items)."""
        return np.bincount(self.items, minlength=self.n_items)

    @cached_property
    def active_users(self) -> np.ndarray:
        """Internal indices of users with at least one interaction, ascending."""
        return np.flatnonzero(np.bincount(self.users, minlength=self.n_users) > 0)

    def fingerprint(self) -> str:
        """A short content hash of interactions and id maps (for run records and caches)."""
        h = hashlib.sha256()
        for arr in (self.users, self.items, self.timestamps, self.ratings):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        for ids in (self.user_ids, self.item_ids):
            h.update(str(len(ids)).encode())
            h.update(pd.util.hash_array(ids.external.astype(str)).tobytes())
        return h.hexdigest()[:16]

    def to_frame(self, *, external: bool = True) -> pd.DataFrame:
        """Interactions as a frame (external ids by default)."""
        df = pd.DataFrame(
            {
                "user": self.user_ids.to_external(self.users) if external else self.users,
                "item": self.item_ids.to_external(self.items) if external else self.items,
            }
        )
        if self.timestamps is not None:
            df["timestamp"] = self.timestamps
        if self.ratings is not None:
            df["rating"] = self.ratings
        return df

    def item_titles(self) -> np.ndarray | None:
        """Item titles (internal order) when the side data has a ``title`` column."""
        if self.item_data is None or "title" not in self.item_data.columns:
            return None
        return self.item_data["title"].fillna("").astype(str).to_numpy()

    def describe(self) -> dict[str, Any]:
        """Summary statistics for ``polyrec datasets info``."""
        n_active_u = len(self.active_users)
        n_active_i = int((self.item_popularity > 0).sum())
        lengths = np.diff(self.sequences.indptr)
        lengths = lengths[lengths > 0]
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(1, n_active_u * n_active_i),
            "has_timestamps": self.timestamps is not None,
            "has_ratings": self.ratings is not None,
            "history_length": {
                "min": int(lengths.min()) if len(lengths) else 0,
                "median": float(np.median(lengths)) if len(lengths) else 0.0,
                "max": int(lengths.max()) if len(lengths) else 0,
            },
            "item_fields": [] if self.item_data is None else list(self.item_data.columns),
            "user_fields": [] if self.user_data is None else list(self.user_data.columns),
            "item_vectors": {k: list(v.shape) for k, v in self.item_vectors.items()},
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True)
class Sequences:
    """Per-user sequences in CSR layout: user u's items are ``items[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (``196``, not ``np.int64(196)``)."""
    return value.item() if isinstance(value, np.generic) else value


def sorted_ids(index: pd.Index) -> pd.Index:
    """``index`` sorted when its ids are comparable (mixed types keep their order)."""
    try:
        return index.sort_values()
    except TypeError:
        return index


def rank_within(groups: np.ndarray, key: np.ndarray | None = None) -> np.ndarray:
    """Position of each element among the elements of its group, ordered by ``key`` (ties,
    and no ``key``: array order)."""
    keys = (np.arange(len(groups)),) + (() if key is None else (key,)) + (groups,)
    order = np.lexsort(keys)
    ordered = groups[order]
    new = np.ones(len(order), bool)
    new[1:] = ordered[1:] != ordered[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - start
    return rank


def _align(frame: pd.DataFrame | None, ids: IdMap) -> pd.DataFrame | None:
    """Reindex side data (indexed by external id) to internal order."""
    if frame is None:
        return None
    return frame.reindex(pd.Index(ids.external)).reset_index(drop=True)


def _converts(value: Any, dtype: np.dtype) -> bool:
    try:
        np.asarray([value]).astype(dtype)
    except (TypeError, ValueError, OverflowError):
        return False
    return True
