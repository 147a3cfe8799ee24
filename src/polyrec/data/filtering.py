"""Interaction filters: k-core, rating binarisation, de-duplication, id compaction.

Every filter returns a :class:`Filtered` pair ``(dataset, report)``: a new :class:`Dataset`
whose id maps are compacted (users and items left without interactions are dropped, side data
and item vectors are sliced to stay row-aligned with the new internal indices) and a
:class:`FilterReport` with the counts before and after, for the run record.

The k-core is the standard iterative one used to build the "5-core" Amazon and MovieLens
benchmarks (e.g. He & McAuley, "Ups and Downs", WWW 2016; RecBole's ``user/item_inter_num``
filter): drop users with fewer than ``user_k`` interactions and items with fewer than
``item_k``, repeat until nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import numpy as np

from polyrec.data.dataset import Dataset, IdMap
from polyrec.errors import PolyrecError

__all__ = ["FilterReport", "Filtered", "binarize", "compact", "dedupe", "k_core"]


@dataclass(frozen=True)
class FilterReport:
    """What a filter removed: sizes as ``(before, after)`` pairs."""

    step: str
    interactions: tuple[int, int]
    users: tuple[int, int]
    items: tuple[int, int]

    @property
    def removed_interactions(self) -> int:
        return self.interactions[0] - self.interactions[1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for run records."""
        return {
            "step": self.step,
            "interactions": list(self.interactions),
            "users": list(self.users),
            "items": list(self.items),
        }

    def __str__(self) -> str:
        i, u, t = self.interactions, self.users, self.items
        return (
            f"{self.step}: interactions {i[0]} -> {i[1]}, users {u[0]} -> {u[1]}, "
            f"items {t[0]} -> {t[1]}"
        )


class Filtered(NamedTuple):
    """A filtered dataset and its report (unpacks as ``ds, report = k_core(...)``)."""

    dataset: Dataset
    report: FilterReport


def k_core(ds: Dataset, user_k: int = 5, item_k: int = 5) -> Filtered:
    """Keep interactions whose user has >= ``user_k`` and item >= ``item_k`` interactions,
    iterated to a fixed point (repeated interactions count each time)."""
    if user_k < 0 or item_k < 0:
        raise PolyrecError(f"k-core thresholds must be >= 0; got user_k={user_k}, item_k={item_k}")
    keep = np.ones(len(ds), bool)
    while True:
        users, items = ds.users[keep], ds.items[keep]
        user_ok = np.bincount(users, minlength=ds.n_users) >= user_k
        item_ok = np.bincount(items, minlength=ds.n_items) >= item_k
        still = user_ok[users] & item_ok[items]
        if still.all():
            break
        keep[np.flatnonzero(keep)[~still]] = False
    return _finish(ds, ds.with_interactions(keep), f"k_core(user_k={user_k}, item_k={item_k})")


def binarize(ds: Dataset, threshold: float) -> Filtered:
    """Implicit feedback from ratings: keep interactions rated >= ``threshold``, drop ratings."""
    if ds.ratings is None:
        raise PolyrecError(f"binarize needs ratings; dataset {ds.name!r} has none")
    keep = ds.ratings >= threshold
    kept = replace(ds.with_interactions(keep), ratings=None)
    return _finish(ds, kept, f"binarize(threshold={threshold:g})")


def dedupe(ds: Dataset, keep: Literal["first", "last"] = "last") -> Filtered:
    """One interaction per (user, item): the earliest (``first``) or latest (``last``) in time
    order (timestamp, then file position). Interaction order is otherwise unchanged."""
    if keep not in ("first", "last"):
        raise PolyrecError(f"dedupe keep must be 'first' or 'last', not {keep!r}")
    order = ds.order if keep == "first" else ds.order[::-1]
    pair = ds.users[order] * ds.n_items + ds.items[order]
    _, first_seen = np.unique(pair, return_index=True)
    chosen = np.sort(order[first_seen])
    return _finish(ds, ds.with_interactions(chosen), f"dedupe(keep={keep})")


def compact(ds: Dataset) -> Filtered:
    """Drop users and items without interactions and renumber the rest (order kept).

    ``item_data`` / ``user_data`` rows and ``item_vectors`` rows are sliced with the same
    mask, so row ``i`` still describes internal item ``i``.
    """
    return _finish(ds, ds, "compact")


def _finish(before: Dataset, kept: Dataset, step: str) -> Filtered:
    after = _compact(kept)
    report = FilterReport(
        step=step,
        interactions=(before.n_interactions, after.n_interactions),
        users=(before.n_users, after.n_users),
        items=(before.n_items, after.n_items),
    )
    return Filtered(after, report)


def _compact(ds: Dataset) -> Dataset:
    user_used = np.bincount(ds.users, minlength=ds.n_users) > 0
    item_used = np.bincount(ds.items, minlength=ds.n_items) > 0
    if user_used.all() and item_used.all():
        return ds
    new_user = np.cumsum(user_used) - 1
    new_item = np.cumsum(item_used) - 1
    return replace(
        ds,
        users=new_user[ds.users],
        items=new_item[ds.items],
        user_ids=IdMap(ds.user_ids.external[user_used]),
        item_ids=IdMap(ds.item_ids.external[item_used]),
        item_data=None
        if ds.item_data is None
        else ds.item_data.iloc[item_used].reset_index(drop=True),
        user_data=None
        if ds.user_data is None
        else ds.user_data.iloc[user_used].reset_index(drop=True),
        item_vectors={k: v[item_used] for k, v in ds.item_vectors.items()},
    )
