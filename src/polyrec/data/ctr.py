"""CTR samples with long behaviour histories, built from any timestamped interaction log.

The protocol follows DARE (Feng et al., "Long-Sequence Recommendation Models Need Decoupled
Embeddings", ICLR 2025; official preprocessing ``thuml/DARE:preprocess``): keep users with at
least ``min_events`` events (210); for a user with N time-ordered events the test target is
event N, the validation target event N-1 and the ``n_train`` (19) training targets are events
N-2, N-2-s, N-2-2s, ... (stride s = 5). Every target is a positive (the real next interaction)
paired with ``neg_ratio`` (2) negatives drawn in proportion to item frequency among items the
user never interacted with; a negative shares the positive's history and time. The history of
a target is the last ``max_len`` (200) events **strictly before** the target's timestamp, so
events at the same second as the target never leak into it.

Storage is compact: the log is kept once, sorted by (user, time), and a sample stores only its
target, label and the ``[hist_start, hist_end)`` slice of that log; padded history arrays
(left-padded, 0 = padding, like :mod:`polyrec.data.sequences`) are gathered per batch.

Item ids are 1..n_items and category ids 1..n_categories (0 is padding). An item's category is
the one of its first event (Taobao lists a few items under two categories). Time intervals
``target_time - event_time`` are bucketed on a log2 scale of ``time_unit`` seconds.

Readers: :func:`read_taobao_userbehavior` (Tianchi UserBehavior.csv: ``user,item,category,
behavior,timestamp``) and :func:`read_tmall` (Tianchi ``user_log_format1.csv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator

from polyrec.config import StrictModel
from polyrec.data.dataset import Dataset
from polyrec.data.io import parser_error
from polyrec.data.sampling import PopularityNegativeSampler
from polyrec.errors import PolyrecError

TAOBAO_BEHAVIORS = ("pv", "cart", "fav", "buy")
TMALL_ACTIONS = {0: "click", 1: "cart", 2: "buy", 3: "fav"}


@dataclass
class BehaviorLog:
    """A timestamped behaviour log over dense ids.

    ``users`` are 0..n_users-1, ``items`` 1..n_items, ``categories`` 1..n_categories (per event,
    always the item's category), ``timestamps`` seconds. ``*_ids`` hold the external ids
    (``item_ids[i - 1]`` is the external id of item ``i``).
    """

    users: np.ndarray
    items: np.ndarray
    categories: np.ndarray
    timestamps: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    category_ids: np.ndarray
    name: str = "custom"

    @property
    def n_items(self) -> int:
        """Catalogue size (item ids are 1..n_items)."""
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        """Number of categories (category ids are 1..n_categories)."""
        return len(self.category_ids)

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    def to_dataset(self, name: str | None = None) -> Dataset:
        """The log as a :class:`Dataset` of external ids (named ``name``, default the log's),
        with the items' categories in ``item_data["category"]`` (:meth:`from_dataset` reads
        it back)."""
        items = self.item_ids[self.items - 1]
        frame = pd.DataFrame(
            {"user": self.user_ids[self.users], "item": items, "timestamp": self.timestamps}
        )
        categories = np.empty(self.n_items, dtype=self.category_ids.dtype)
        categories[self.items - 1] = self.category_ids[self.categories - 1]
        item_data = pd.DataFrame({"category": categories}, index=pd.Index(self.item_ids))
        return Dataset.from_frame(frame, rating=None, item_data=item_data, name=name or self.name)

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        timestamps: np.ndarray,
        categories: np.ndarray | None = None,
        *,
        name: str = "custom",
    ) -> BehaviorLog:
        """Factorise external ids; without ``categories`` every item gets one shared category."""
        n = len(users)
        if len(items) != n or len(timestamps) != n:
            raise PolyrecError(
                f"users, items and timestamps must have equal length, "
                f"got {n}, {len(items)}, {len(timestamps)}"
            )
        if n == 0:
            raise PolyrecError("behaviour log is empty")
        ts = np.asarray(timestamps, dtype=np.float64)
        if not np.isfinite(ts).all():
            raise PolyrecError(f"timestamp is missing at event {int(np.argmin(np.isfinite(ts)))}")
        u_codes, u_ext = pd.factorize(np.asarray(users), sort=True)
        i_codes, i_ext = pd.factorize(np.asarray(items), sort=True)
        cats = np.zeros(n, dtype=np.int64) if categories is None else np.asarray(categories)
        # an item's category = the category of its first event
        first = np.full(len(i_ext), n, dtype=np.int64)
        np.minimum.at(first, i_codes, np.arange(n))
        c_codes, c_ext = pd.factorize(cats[first], sort=True)
        return cls(
            users=u_codes.astype(np.int64),
            items=i_codes.astype(np.int64) + 1,
            categories=c_codes.astype(np.int64)[i_codes] + 1,
            timestamps=ts,
            user_ids=np.asarray(u_ext),
            item_ids=np.asarray(i_ext),
            category_ids=np.asarray(c_ext),
            name=name,
        )

    @classmethod
    def from_dataset(cls, ds: Dataset, category: str | None = None) -> BehaviorLog:
        """A log from a polyrec :class:`Dataset` with timestamps; ``category`` names an
        ``item_data`` column (else one shared category)."""
        if ds.timestamps is None:
            raise PolyrecError(f"dataset {ds.name!r} has no timestamps; CTR samples need them")
        cats = None
        if category is not None:
            if ds.item_data is None or category not in ds.item_data.columns:
                raise PolyrecError(f"dataset {ds.name!r} has no item_data column {category!r}")
            cats = ds.item_data[category].astype(str).to_numpy()[ds.items]
        return cls.from_arrays(
            ds.user_ids.to_external(ds.users),
            ds.item_ids.to_external(ds.items),
            ds.timestamps,
            cats,
            name=ds.name,
        )


def read_taobao_userbehavior(
    path: str | Path,
    *,
    behaviors: tuple[str, ...] | list[str] | None = None,
    nrows: int | None = None,
) -> BehaviorLog:
    """Tianchi Taobao UserBehavior CSV (no header: ``user,item,category,behavior,timestamp``).

    ``behaviors`` keeps only those types (``pv``, ``cart``, ``fav``, ``buy``); default all.
    """
    p = Path(path)
    if not p.is_file():
        raise PolyrecError(f"{p}: file not found")
    names = ["user", "item", "category", "behavior", "timestamp"]
    try:
        df = pd.read_csv(p, header=None, names=names, nrows=nrows, engine="c")
    except (pd.errors.ParserError, ValueError) as exc:
        raise parser_error(p, exc) from None
    if df.isna().any().any():
        row = int(np.flatnonzero(df.isna().any(axis=1).to_numpy())[0])
        raise PolyrecError(f"{p}:{row + 1}: expected 5 fields user,item,category,behavior,ts")
    if behaviors is not None:
        unknown = set(behaviors) - set(TAOBAO_BEHAVIORS)
        if unknown:
            raise PolyrecError(
                f"unknown Taobao behavior {sorted(unknown)}; known {TAOBAO_BEHAVIORS}"
            )
        df = df[df["behavior"].isin(list(behaviors))]
    ts = pd.to_numeric(df["timestamp"], errors="coerce").to_numpy(np.float64)
    if np.isnan(ts).any():
        row = int(df.index[np.isnan(ts)][0])
        raise PolyrecError(f"{p}:{row + 1}: timestamp is not a number")
    return BehaviorLog.from_arrays(
        df["user"].to_numpy(), df["item"].to_numpy(), ts, df["category"].to_numpy(), name=p.stem
    )


def read_tmall(
    path: str | Path,
    *,
    actions: tuple[int, ...] | list[int] | None = None,
    year: int = 2015,
    nrows: int | None = None,
) -> BehaviorLog:
    """Tianchi Tmall ``user_log_format1.csv`` (header ``user_id,item_id,cat_id,seller_id,
    brand_id,time_stamp,action_type``; ``time_stamp`` is ``mmdd``).

    The file only has days, so events of one user on one day are ordered as in the file and
    spaced one second apart (DARE sorts by day with a stable sort and keeps file order the
    same way); a history then holds same-day events that come earlier in the file.
    ``actions`` keeps those ``action_type`` values (0 click, 1 cart, 2 buy, 3 favourite).
    """
    p = Path(path)
    if not p.is_file():
        raise PolyrecError(f"{p}: file not found")
    cols = ["user_id", "item_id", "cat_id", "time_stamp", "action_type"]
    try:
        df = pd.read_csv(p, usecols=cols, nrows=nrows, engine="c")
    except (pd.errors.ParserError, ValueError) as exc:
        raise parser_error(p, exc) from None
    if actions is not None:
        df = df[df["action_type"].isin(list(actions))]
    stamp = pd.to_numeric(df["time_stamp"], errors="coerce")
    mmdd = stamp.fillna(0).to_numpy(np.int64)
    days = pd.to_datetime(
        pd.DataFrame({"year": year, "month": mmdd // 100, "day": mmdd % 100}), errors="coerce"
    )
    if days.isna().any():
        row = int(np.flatnonzero(days.isna().to_numpy())[0])
        line = int(df.index[row]) + 2  # the header is line 1
        raw = df["time_stamp"].iloc[row]
        problem = "is missing" if pd.isna(raw) else f"{raw} is not a valid mmdd"
        raise PolyrecError(f"{p}:{line}: time_stamp {problem}")
    day_s = days.to_numpy().astype("datetime64[s]").astype(np.float64)
    users = df["user_id"].to_numpy()
    order = np.lexsort((np.arange(len(df)), day_s, users))
    key_u, key_d = users[order], day_s[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (key_u[1:] != key_u[:-1]) | (key_d[1:] != key_d[:-1])
    start = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))
    seconds = np.empty(len(order))
    seconds[order] = key_d + (np.arange(len(order)) - start)
    return BehaviorLog.from_arrays(
        users, df["item_id"].to_numpy(), seconds, df["cat_id"].to_numpy(), name=p.stem
    )


class CTRProtocol(StrictModel):
    """How CTR samples are cut from a log (defaults: the DARE paper's Taobao setting)."""

    min_events: int = Field(210, ge=4)
    max_len: int = Field(200, ge=1)
    n_train: int = Field(19, ge=1)
    train_stride: int = Field(5, ge=1)
    neg_ratio: int = Field(2, ge=1)
    time_unit: float = Field(60.0, gt=0)
    n_time_buckets: int = Field(32, ge=2)
    seed: int = 0

    @model_validator(mode="after")
    def _enough_events(self) -> CTRProtocol:
        # earliest training target must keep at least one event before it
        need = 3 + self.train_stride * (self.n_train - 1) + 1
        if self.min_events < need:
            raise ValueError(
                f"min_events must be >= {need} for n_train={self.n_train} and "
                f"train_stride={self.train_stride}"
            )
        return self


@dataclass
class CTRSamples:
    """One split's samples over a shared sorted log (see module docstring)."""

    user: np.ndarray
    item: np.ndarray
    category: np.ndarray
    label: np.ndarray
    time: np.ndarray
    hist_start: np.ndarray
    hist_end: np.ndarray
    log: _SortedLog

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, idx: np.ndarray | slice | None = None) -> dict[str, torch.Tensor]:
        """Tensors for the samples at ``idx``: targets, labels and left-padded histories of
        width ``max_len``: ``hist_item``, ``hist_cat``, ``hist_delta`` (seconds from the event
        to the target, float32), ``hist_time`` (its log2 bucket) and ``hist_mask`` (True = real
        event)."""
        sel = slice(None) if idx is None else idx
        start, end = self.hist_start[sel], self.hist_end[sel]
        width = self.log.max_len
        pos = end[:, None] - width + np.arange(width)[None, :]
        mask = pos >= start[:, None]
        pos = np.where(mask, pos, 0)
        log = self.log
        dt = self.time[sel][:, None] - log.timestamps[pos]
        bucket = 1 + np.minimum(
            np.floor(np.log2(1.0 + np.maximum(dt, 0.0) / log.time_unit)), log.n_time_buckets - 2
        ).astype(np.int64)
        return {
            "user": torch.from_numpy(self.user[sel]),
            "item": torch.from_numpy(self.item[sel]),
            "category": torch.from_numpy(self.category[sel]),
            "label": torch.from_numpy(self.label[sel]),
            "hist_item": torch.from_numpy(np.where(mask, log.items[pos], 0)),
            "hist_cat": torch.from_numpy(np.where(mask, log.categories[pos], 0)),
            "hist_delta": torch.from_numpy(np.where(mask, dt, 0.0).astype(np.float32)),
            "hist_time": torch.from_numpy(np.where(mask, bucket, 0)),
            "hist_mask": torch.from_numpy(mask),
        }


@dataclass
class _SortedLog:
    """The behaviour log sorted by (user, time, file order) plus the bucketing settings."""

    items: np.ndarray
    categories: np.ndarray
    timestamps: np.ndarray
    max_len: int
    time_unit: float
    n_time_buckets: int


@dataclass
class CTRData:
    """Train/validation/test samples of one log, plus what models need to size themselves."""

    train: CTRSamples
    valid: CTRSamples
    test: CTRSamples
    n_users: int
    n_items: int
    n_categories: int
    item_category: np.ndarray
    item_frequency: np.ndarray
    item_ids: np.ndarray  # external id of item i at i - 1 (the log's)
    protocol: CTRProtocol
    name: str = "custom"

    @property
    def dims(self) -> dict[str, int]:
        """Vocabulary sizes (+1 for padding) and history width, as models need them."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items + 1,
            "n_categories": self.n_categories + 1,
            "n_time_buckets": self.protocol.n_time_buckets,
            "max_len": self.protocol.max_len,
        }

    def summary(self) -> dict[str, int | float]:
        """Sizes of the splits, for run records."""
        return {
            "users": len(np.unique(self.test.user)),
            "train_samples": len(self.train),
            "valid_samples": len(self.valid),
            "test_samples": len(self.test),
            "mean_history": float((self.test.hist_end - self.test.hist_start).mean()),
        }


def build_ctr_samples(log: BehaviorLog, protocol: CTRProtocol | None = None) -> CTRData:
    """Cut train/validation/test CTR samples from ``log`` (see the module docstring)."""
    cfg = protocol or CTRProtocol()
    n = len(log.users)
    order = np.lexsort((np.arange(n), log.timestamps, log.users))
    users, items = log.users[order], log.items[order]
    cats, ts = log.categories[order], log.timestamps[order]
    counts = np.bincount(users, minlength=log.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # first sorted position of the run of equal (user, time) each event belongs to: the history
    # of a target ends there, so it holds only events strictly earlier in time
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (users[1:] != users[:-1]) | (ts[1:] != ts[:-1])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))

    eligible = np.flatnonzero(counts >= cfg.min_events)
    if len(eligible) == 0:
        raise PolyrecError(
            f"no user has >= {cfg.min_events} events (max {counts.max()}); lower min_events"
        )
    last = offsets[eligible] + counts[eligible] - 1
    test_pos, valid_pos = last, last - 1
    steps = cfg.train_stride * np.arange(cfg.n_train)
    train_pos = ((last - 2)[:, None] - steps[None, :]).ravel()

    item_freq = np.bincount(items, minlength=log.n_items + 1).astype(np.float64)
    item_freq[0] = 0.0
    item_category = np.zeros(log.n_items + 1, dtype=np.int64)
    item_category[items] = cats
    seen = sp.csr_matrix((np.ones(n, np.float32), (users, items)), (log.n_users, log.n_items + 1))
    sampler = PopularityNegativeSampler(seen, popularity=item_freq)
    rng = np.random.default_rng(cfg.seed)
    sorted_log = _SortedLog(items, cats, ts, cfg.max_len, cfg.time_unit, cfg.n_time_buckets)

    def split(pos: np.ndarray) -> CTRSamples:
        u = users[pos]
        negs = sampler.sample(u, cfg.neg_ratio, rng=rng)
        k = 1 + cfg.neg_ratio
        item = np.concatenate([items[pos][:, None], negs], axis=1).ravel()
        label = np.zeros((len(pos), k), dtype=np.float32)
        label[:, 0] = 1.0
        end = run_start[pos]
        start = np.maximum(offsets[u], end - cfg.max_len)
        return CTRSamples(
            user=np.repeat(u, k),
            item=item,
            category=item_category[item],
            label=label.ravel(),
            time=np.repeat(ts[pos], k),
            hist_start=np.repeat(start, k),
            hist_end=np.repeat(end, k),
            log=sorted_log,
        )

    return CTRData(
        train=split(train_pos),
        valid=split(valid_pos),
        test=split(test_pos),
        n_users=log.n_users,
        n_items=log.n_items,
        n_categories=log.n_categories,
        item_category=item_category,
        item_frequency=item_freq,
        item_ids=log.item_ids,
        protocol=cfg,
        name=log.name,
    )
