"""What to forget: a :class:`ForgetRequest` and its application to a training :class:`Dataset`.

A request names users, items and individual (user, item) interactions by *external* id, and/or
a whole item modality (a key of ``Dataset.item_vectors``). :func:`apply_request` turns it into
the retain set (training data without every forgotten interaction, forgotten items' feature rows
zeroed, the forgotten modality removed) and the forget set (the removed interactions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyrec.data.dataset import Dataset
from polyrec.errors import PolyrecError


@dataclass(frozen=True)
class ForgetRequest:
    """Users, items, (user, item) interactions (external ids) and/or a modality to forget."""

    users: tuple[Any, ...] = ()
    items: tuple[Any, ...] = ()
    interactions: tuple[tuple[Any, Any], ...] = ()
    modality: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", tuple(self.users))
        object.__setattr__(self, "items", tuple(self.items))
        pairs = tuple(tuple(p) for p in self.interactions)
        for pair in pairs:
            if len(pair) != 2:
                raise PolyrecError(f"an interaction to forget is a (user, item) pair, got {pair!r}")
        object.__setattr__(self, "interactions", pairs)
        if not (self.users or self.items or self.interactions or self.modality):
            raise PolyrecError("empty forget request: give users, items, interactions or modality")

    @classmethod
    def from_file(cls, path: str | Path) -> ForgetRequest:
        """Read a request: JSON ``{"users": [...], "items": [...], "interactions": [[u, i]],
        "modality": "image"}`` (any subset), or CSV with ``user,item`` columns (interactions)."""
        p = Path(path)
        if not p.is_file():
            raise PolyrecError(f"forget file not found: {p}")
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False)  # ids as written: 0205616461
            if not {"user", "item"} <= set(df.columns):
                raise PolyrecError(f"{p}: a CSV forget file needs columns user,item")
            return cls(
                interactions=tuple(zip(df["user"].tolist(), df["item"].tolist(), strict=True))
            )
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise PolyrecError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict):
            raise PolyrecError(f"{p}: expected a JSON object")
        unknown = set(data) - {"users", "items", "interactions", "modality"}
        if unknown:
            raise PolyrecError(f"{p}: unknown key {sorted(unknown)[0]!r}")
        return cls(
            users=tuple(data.get("users", ())),
            items=tuple(data.get("items", ())),
            interactions=tuple(tuple(x) for x in data.get("interactions", ())),
            modality=data.get("modality"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the inverse of :meth:`from_file` for JSON)."""
        return {
            "users": [_plain(u) for u in self.users],
            "items": [_plain(i) for i in self.items],
            "interactions": [[_plain(u), _plain(i)] for u, i in self.interactions],
            "modality": self.modality,
        }

    @classmethod
    def sample(cls, train: Dataset, kind: str, fraction: float, *, seed: int = 0) -> ForgetRequest:
        """A random request: ``fraction`` of the ``interactions``, ``users`` or ``items``."""
        if not 0 < fraction < 1:
            raise PolyrecError(f"fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(seed)
        if kind == "interactions":
            n = max(1, round(fraction * train.n_interactions))
            rows = rng.choice(train.n_interactions, n, replace=False)
            u = train.user_ids.to_external(train.users[rows])
            i = train.item_ids.to_external(train.items[rows])
            return cls(interactions=tuple(zip(u.tolist(), i.tolist(), strict=True)))
        if kind in ("users", "items"):
            active = (
                train.active_users if kind == "users" else np.flatnonzero(train.item_popularity)
            )
            n = max(1, round(fraction * len(active)))
            chosen = np.sort(rng.choice(active, n, replace=False))
            ids = (train.user_ids if kind == "users" else train.item_ids).to_external(chosen)
            return cls(**{kind: tuple(ids.tolist())})
        raise PolyrecError(f"kind must be interactions, users or items, got {kind!r}")


@dataclass
class AppliedRequest:
    """The result of :func:`apply_request` (internal indices)."""

    retain: Dataset
    forget: Dataset
    forget_mask: np.ndarray
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    modality: str | None = None


def apply_request(train: Dataset, request: ForgetRequest) -> AppliedRequest:
    """Validate ``request`` against ``train`` and split it into retain and forget sets."""
    users = (
        train.user_ids.to_internal(np.asarray(request.users, dtype=object), what="user")
        if request.users
        else np.zeros(0, np.int64)
    )
    items = (
        train.item_ids.to_internal(np.asarray(request.items, dtype=object), what="item")
        if request.items
        else np.zeros(0, np.int64)
    )
    mask = np.isin(train.users, users) | np.isin(train.items, items)
    if request.interactions:
        pu = train.user_ids.to_internal(
            np.asarray([p[0] for p in request.interactions], dtype=object), what="user"
        )
        pi = train.item_ids.to_internal(
            np.asarray([p[1] for p in request.interactions], dtype=object), what="item"
        )
        keys = train.users * train.n_items + train.items
        wanted = pu * train.n_items + pi
        found = np.isin(wanted, keys)
        if not found.all():
            k = int(np.flatnonzero(~found)[0])
            raise PolyrecError(
                f"interaction to forget ({request.interactions[k][0]!r}, "
                f"{request.interactions[k][1]!r}) is not in the training data"
            )
        mask |= np.isin(keys, wanted)
    if request.modality is not None and request.modality not in train.item_vectors:
        have = ", ".join(sorted(train.item_vectors)) or "none"
        raise PolyrecError(f"modality {request.modality!r} is not an item feature (have: {have})")
    if (len(users) or len(items) or request.interactions) and not mask.any():
        raise PolyrecError("the forget request matches no training interaction")
    retain = train.with_interactions(~mask)
    vectors = {k: v for k, v in train.item_vectors.items() if k != request.modality}
    if len(items):
        vectors = {k: _wipe_rows(v, items) for k, v in vectors.items()}
    retain.item_vectors = vectors
    forget = train.with_interactions(mask)
    return AppliedRequest(
        retain=retain,
        forget=forget,
        forget_mask=mask,
        users=np.unique(users),
        items=np.unique(items),
        modality=request.modality,
    )


def _wipe_rows(matrix: np.ndarray, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    out = np.array(matrix, copy=True)
    out[np.asarray(rows)] = 0
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
