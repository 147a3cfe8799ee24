"""The sequence pipeline shared by the sequential models (SASRec, BERT4Rec, GRU4Rec, HSTU).

A user's history is their items in time order (:attr:`Dataset.sequences`). Models see fixed-width
integer arrays built from it with numpy, never with a Python loop per user or item:

- item indices are shifted by one so that ``PAD = 0`` is the padding token (item ``i`` is token
  ``i + 1``);
- a window keeps the last ``width`` items of each history, **left-padded**: the most recent item
  is always in the last column, so "position counted from the end" is the same for every user;
- next-item training examples take the last ``max_len + 1`` items of each history: the first
  ``max_len`` are the inputs, the last ``max_len`` the targets, so every position predicts the
  item that follows it (a padded input has no target);
- :func:`iter_batches` shuffles example rows with the caller's generator and drops the leading
  columns that are padding in every row of a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, cast

import numpy as np
import pandas as pd

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError

PAD: Final = 0


def merge_interactions(*datasets: Dataset) -> Dataset:
    """The union of the interactions of datasets sharing id maps (e.g. ``train, valid``).

    Timestamps, ratings and per-interaction data (e.g. review text) are kept when every part
    has them (the per-interaction data: the columns all parts share). Per-user time order comes
    from the timestamps, ties and missing timestamps by argument order (interactions of a later
    dataset follow those of an earlier one).
    """
    if not datasets:
        raise PolyrecError("merge_interactions needs at least one dataset")
    first = datasets[0]
    if len(datasets) == 1:
        return first
    for ds in datasets[1:]:
        if ds.item_ids != first.item_ids or ds.user_ids != first.user_ids:
            raise PolyrecError("datasets to merge must share id maps (parts of one split)")

    def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        if any(a is None for a in arrays):
            return None
        return np.concatenate(cast(list[np.ndarray], arrays))

    frames = [ds.interaction_data for ds in datasets]
    interaction_data = None
    if all(f is not None for f in frames):
        shared = [c for c in frames[0].columns if all(c in f.columns for f in frames)]  # type: ignore[union-attr]
        if shared:
            interaction_data = pd.concat([f[shared] for f in frames], ignore_index=True)  # type: ignore[index]
    return first.with_interactions(
        users=np.concatenate([ds.users for ds in datasets]),
        items=np.concatenate([ds.items for ds in datasets]),
        timestamps=joined([ds.timestamps for ds in datasets]),
        ratings=joined([ds.ratings for ds in datasets]),
        interaction_data=interaction_data,
    )


def left_window(
    indptr: np.ndarray,
    values: np.ndarray,
    width: int,
    rows: np.ndarray | None = None,
    *,
    shift: int = 0,
) -> np.ndarray:
    """``(len(rows), width)`` array of the last ``width`` values of each CSR row, plus ``shift``,
    left-padded with zeros. ``rows`` defaults to all rows."""
    rows = np.arange(len(indptr) - 1) if rows is None else np.asarray(rows, np.int64)
    end = indptr[rows + 1]
    n = np.minimum(end - indptr[rows], width)
    total = int(n.sum())
    out = np.zeros((len(rows), width), dtype=values.dtype)
    row = np.repeat(np.arange(len(rows)), n)
    k = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    out[row, width - np.repeat(n, n) + k] = values[np.repeat(end - n, n) + k] + shift
    return out


def histories(
    ds: Dataset, width: int, *, times: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Every user's last ``width`` items as tokens (item + 1), left-padded: ``(n_users, width)``
    int64, and the matching timestamps (float64, 0 at padding) when ``times`` and the dataset
    has them."""
    seqs = ds.sequences
    tokens = left_window(seqs.indptr, seqs.items, width, shift=1)
    if not times or seqs.timestamps is None:
        return tokens, None
    return tokens, left_window(seqs.indptr, seqs.timestamps, width)


def pad_histories(
    items: Sequence[np.ndarray | Sequence[int]],
    n_items: int,
    width: int,
    timestamps: Sequence[np.ndarray | Sequence[float]] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ad-hoc histories (lists of internal item indices, oldest first) as the tokens of
    :func:`histories`, with their timestamps if given; bad input is a :class:`PolyrecError`."""
    arrays = [np.asarray(h, dtype=np.int64).ravel() for h in items]
    if not arrays:
        raise PolyrecError("no history given")
    lengths = np.array([len(a) for a in arrays])
    if (lengths == 0).any():
        raise PolyrecError(f"history {int(np.flatnonzero(lengths == 0)[0])} is empty")
    flat = np.concatenate(arrays)
    if flat.min() < 0 or flat.max() >= n_items:
        bad = int(flat[(flat < 0) | (flat >= n_items)][0])
        raise PolyrecError(f"item index {bad} out of range [0, {n_items})")
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    tokens = left_window(indptr, flat, width, shift=1)
    if timestamps is None:
        return tokens, None
    stamps = [np.asarray(t, dtype=np.float64).ravel() for t in timestamps]
    if [len(t) for t in stamps] != lengths.tolist():
        raise PolyrecError("timestamps must give one value per history item")
    return tokens, left_window(indptr, np.concatenate(stamps), width)


def next_item_examples(ds: Dataset, max_len: int, *, times: bool = False) -> dict[str, np.ndarray]:
    """Causal training examples, one row per user with at least two items.

    ``inputs`` and ``targets`` are ``(n_rows, max_len)`` tokens with ``targets[:, t]`` the item
    after ``inputs[:, t]`` (``PAD`` where the input is padding); ``users`` the row's user; with
    ``times``, ``times`` holds the inputs' timestamps (the dataset must have them).
    """
    seqs = ds.sequences
    users = np.flatnonzero(seqs.lengths >= 2)
    window = left_window(seqs.indptr, seqs.items, max_len + 1, users, shift=1)
    inputs = window[:, :-1]
    out = {"users": users, "inputs": inputs, "targets": np.where(inputs != PAD, window[:, 1:], PAD)}
    if times:
        if seqs.timestamps is None:
            raise PolyrecError(f"dataset {ds.name!r} has no timestamps")
        out["times"] = left_window(seqs.indptr, seqs.timestamps, max_len + 1, users)[:, :-1]
    return out


def iter_batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    rng: np.random.Generator,
    *,
    trim_by: str = "inputs",
) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled mini-batches of example rows; 2-d arrays lose the leading columns where
    ``arrays[trim_by]`` is ``PAD`` in every row of the batch (left padding makes them a prefix)."""
    ref = arrays[trim_by]
    order = rng.permutation(len(ref))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = trim(ref[idx])
        yield {key: arr[idx, -width:] if arr.ndim == 2 else arr[idx] for key, arr in arrays.items()}


def trim(tokens: np.ndarray) -> int:
    """Number of trailing columns needed to hold every row's non-padding tokens (at least 1)."""
    return max(int((tokens != PAD).sum(axis=1).max(initial=0)), 1)
