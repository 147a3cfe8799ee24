"""Leak-free, seeded train/valid/test splits of one :class:`Dataset`.

Every split returns datasets that share the original id maps, so internal indices agree across
train, valid and test. Orders are by timestamp, then by original position (stable), so a
split never lets a later interaction into training while an earlier one is held out (for the
time-based protocols).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from polyrec.config import StrictModel
from polyrec.data.dataset import Dataset, rank_within
from polyrec.errors import PolyrecError


@dataclass
class Split:
    """Train / optional valid / test datasets over the same id maps, and how they were made."""

    train: Dataset
    test: Dataset
    valid: Dataset | None = None
    protocol: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part, ds in (("test", self.test), ("valid", self.valid)):
            if ds is not None and (
                ds.item_ids != self.train.item_ids or ds.user_ids != self.train.user_ids
            ):
                raise PolyrecError(f"{part} does not share train's id maps")


class SplitConfig(StrictModel):
    """How to split: the ``split:`` section of a run config."""

    method: Literal["leave_one_out", "ratio", "temporal", "given"] = "leave_one_out"
    test: float = 0.2
    valid: float = 0.1
    seed: int = 0


def leave_one_out(ds: Dataset, *, valid: bool = True) -> Split:
    """Last interaction per user -> test, second-last -> valid, the rest -> train.

    Order is by timestamp (or by position when the dataset has none). Users with too few
    interactions to hold anything out (fewer than 3 with ``valid``, fewer than 2 without) stay
    entirely in training; their number is reported as ``protocol["users_train_only"]``.
    """
    rank = rank_within(ds.users, ds.timestamps)
    count = np.bincount(ds.users)[ds.users]
    need = 3 if valid else 2
    eligible = count >= need
    is_test = eligible & (rank == count - 1)
    is_valid = eligible & (rank == count - 2) if valid else np.zeros(len(ds), bool)
    n_short = int(np.sum(np.bincount(ds.users[~eligible], minlength=ds.n_users) > 0))
    return Split(
        train=ds.with_interactions(~(is_test | is_valid)),
        valid=ds.with_interactions(is_valid) if valid else None,
        test=ds.with_interactions(is_test),
        protocol={"split": "leave_one_out", "valid": valid, "users_train_only": n_short},
    )


def ratio_split(ds: Dataset, *, test: float = 0.2, valid: float = 0.0, seed: int = 0) -> Split:
    """Per-user random split: ``round(n_u * test)`` interactions to test, ``round(n_u * valid)``
    to valid, the rest (at least one) to train. Seeded; the NGCF/LightGCN 80/20 protocol."""
    _check_fractions(test, valid)
    rng = np.random.default_rng(seed)
    rank = rank_within(ds.users, rng.random(len(ds)))
    count = np.bincount(ds.users)[ds.users]
    n_test = np.minimum(np.rint(count * test), count - 1)
    n_valid = np.minimum(np.rint(count * valid), count - 1 - n_test)
    is_test = rank >= count - n_test
    is_valid = (rank >= count - n_test - n_valid) & ~is_test
    return Split(
        train=ds.with_interactions(~(is_test | is_valid)),
        valid=ds.with_interactions(is_valid) if valid > 0 else None,
        test=ds.with_interactions(is_test),
        protocol={"split": "ratio", "test": test, "valid": valid, "seed": seed},
    )


def temporal_split(ds: Dataset, *, test: float = 0.2, valid: float = 0.0) -> Split:
    """Global time cut: the latest ``test`` fraction of interactions -> test, the ``valid``
    fraction before it -> valid. Held-out interactions of users or items never seen in training
    cannot be scored fairly and are dropped; their number is in the protocol."""
    _check_fractions(test, valid)
    if ds.order_only:
        raise PolyrecError(
            f"temporal split needs times; dataset {ds.name!r} keeps only the order of each "
            "user's events (split it with leave_one_out)"
        )
    order = np.lexsort((np.arange(len(ds)), ds.timestamps))
    pos = np.empty(len(ds), np.int64)
    pos[order] = np.arange(len(ds))
    n = len(ds)
    n_test, n_held = round(n * test), round(n * (test + valid))
    is_test = pos >= n - n_test
    is_valid = (pos >= n - n_held) & ~is_test
    is_train = ~(is_test | is_valid)
    warm_user = np.bincount(ds.users[is_train], minlength=ds.n_users) > 0
    warm_item = np.bincount(ds.items[is_train], minlength=ds.n_items) > 0
    warm = warm_user[ds.users] & warm_item[ds.items]
    dropped = int(np.sum((is_test | is_valid) & ~warm))
    cut = float(ds.timestamps[order[n - n_test]]) if n_test > 0 else None
    return Split(
        train=ds.with_interactions(is_train),
        valid=ds.with_interactions(is_valid & warm) if valid > 0 else None,
        test=ds.with_interactions(is_test & warm),
        protocol={
            "split": "temporal",
            "test": test,
            "valid": valid,
            "test_cut_timestamp": cut,
            "cold_dropped": dropped,
        },
    )


def given_split(train: Dataset, test: Dataset, valid: Dataset | None = None) -> Split:
    """Wrap train/test files that came pre-split (e.g. the LightGCN/NGCF Gowalla files)."""
    return Split(train=train, test=test, valid=valid, protocol={"split": "given"})


def make_split(ds: Dataset, config: SplitConfig) -> Split:
    """Apply a :class:`SplitConfig` (``given`` is handled by the dataset registry)."""
    if config.method == "leave_one_out":
        return leave_one_out(ds, valid=config.valid > 0)
    if config.method == "ratio":
        return ratio_split(ds, test=config.test, valid=config.valid, seed=config.seed)
    if config.method == "temporal":
        return temporal_split(ds, test=config.test, valid=config.valid)
    raise PolyrecError("split method 'given' needs a dataset that ships its own train/test files")


def _check_fractions(test: float, valid: float) -> None:
    if not (0 < test < 1 and 0 <= valid < 1 and test + valid < 1):
        raise PolyrecError(
            f"split fractions must satisfy 0<test, 0<=valid, test+valid<1; "
            f"got test={test}, valid={valid}"
        )
