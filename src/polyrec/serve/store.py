"""The service's store: users, items, events, forget requests and API keys, through SQLAlchemy.

One schema and one code path for SQLite (the embedded default, ``sqlite:///polyrec.db``, run in
WAL mode with ``synchronous=FULL`` so an acknowledged write survives a killed process) and
PostgreSQL (``postgresql+psycopg://...``). The schema is versioned in ``schema_version``; a
database written by a newer schema is refused rather than silently misread.

Ids are stored as the service sees them: strings. Event ingestion is idempotent: an event
with an ``idempotency_key`` already stored is skipped (``INSERT ... ON CONFLICT DO NOTHING``,
which both dialects support), so a client may retry a batch whose answer it did not get.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from polyrec.errors import PolyrecError

SCHEMA_VERSION = 1
DEFAULT_DB = "sqlite:///polyrec.db"

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata, sa.Column("version", sa.Integer, primary_key=True)
)
users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
items = sa.Table(
    "items",
    metadata,
    sa.Column("item_id", sa.String(256), primary_key=True),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("attributes", sa.Text, nullable=False, default="{}"),  # JSON object
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("item_id", sa.String(256), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("idempotency_key", sa.String(160), nullable=True, unique=True),
    sa.Index("ix_events_user", "user_id", "ts"),
    sa.Index("ix_events_item", "item_id"),
)
forget_requests = sa.Table(
    "forget_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("item_ids", sa.Text, nullable=False),  # JSON list
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("removed_events", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Event:
    """One interaction as stored: external ids, type, time (epoch seconds), optional key."""

    user_id: str
    item_id: str
    type: str
    ts: float
    idempotency_key: str | None = None


@dataclass(frozen=True)
class ForgetRecord:
    """A forget request and the state of its unlearning job."""

    id: str
    kind: str
    user_id: str | None
    item_ids: list[str]
    status: str
    message: str
    removed_events: int
    created_at: float
    updated_at: float


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key. Keys are random 256-bit tokens, so a fast unsalted hash is
    safe (nothing to brute-force) and lets a key be looked up by its hash."""
    return hashlib.sha256(key.encode()).hexdigest()


class Store:
    """All reads and writes of the service's database."""

    def __init__(self, url: str = DEFAULT_DB) -> None:
        self.url = url
        try:
            self.engine: Engine = _make_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise PolyrecError(f"cannot open database {url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise PolyrecError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._migrate()

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        try:
            metadata.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise PolyrecError(f"cannot open database {self.url!r}: {exc.orig}") from exc
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            if found is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise PolyrecError(
                    f"database {self.url!r} has schema {found}, newer than this polyrec's "
                    f"({SCHEMA_VERSION}); upgrade polyrec"
                )

    def _insert(self, table: sa.Table) -> Any:
        """A dialect insert that supports ``on_conflict_do_nothing``."""
        return (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(table)

    # ------------------------------------------------------------------ items
    def upsert_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or update catalogue rows ``{item_id, title, attributes}``."""
        if not rows:
            return
        values = [
            {
                "item_id": r["item_id"],
                "title": r.get("title"),
                "attributes": json.dumps(r.get("attributes") or {}, sort_keys=True),
            }
            for r in rows
        ]
        stmt = self._insert(items)
        stmt = stmt.on_conflict_do_update(
            index_elements=["item_id"],
            set_={"title": stmt.excluded.title, "attributes": stmt.excluded.attributes},
        )
        with self.engine.begin() as conn:
            for start in range(0, len(values), 5000):
                conn.execute(stmt, values[start : start + 5000])

    def count_items(self) -> int:
        """Number of catalogue rows."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(items)).scalar_one())

    # ------------------------------------------------------------------ events
    def add_events(self, batch: Sequence[Event]) -> tuple[int, int]:
        """Store a batch in one transaction; returns ``(stored, duplicates)``.

        Duplicates are events whose idempotency key is already stored or repeated earlier in
        the batch; they are skipped, not errors.
        """
        seen: set[str] = set()
        fresh: list[Event] = []
        for ev in batch:
            key = ev.idempotency_key
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(ev)
        now = time.time()
        with self.engine.begin() as conn:
            if seen:
                existing: set[str] = set()
                keys = list(seen)
                for start in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                    chunk = keys[start : start + 900]
                    found = conn.execute(
                        sa.select(events.c.idempotency_key).where(
                            events.c.idempotency_key.in_(chunk)
                        )
                    )
                    existing.update(row[0] for row in found)
                fresh = [ev for ev in fresh if ev.idempotency_key not in existing]
            if fresh:
                user_rows = [{"user_id": u, "created_at": now} for u in {e.user_id for e in fresh}]
                conn.execute(self._insert(users).on_conflict_do_nothing(), user_rows)
                # a concurrent request may store the same key meanwhile: skip, do not fail
                stmt = self._insert(events).on_conflict_do_nothing(
                    index_elements=["idempotency_key"]
                )
                conn.execute(
                    stmt,
                    [
                        {
                            "user_id": e.user_id,
                            "item_id": e.item_id,
                            "type": e.type,
                            "ts": e.ts,
                            "idempotency_key": e.idempotency_key,
                        }
                        for e in fresh
                    ],
                )
        return len(fresh), len(batch) - len(fresh)

    def count_events(self, *, user_id: str | None = None, item_id: str | None = None) -> int:
        """Number of stored events, optionally of one user and/or one item."""
        query = sa.select(sa.func.count()).select_from(events)
        if user_id is not None:
            query = query.where(events.c.user_id == user_id)
        if item_id is not None:
            query = query.where(events.c.item_id == item_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_keys(self, keys: Iterable[str]) -> int:
        """How many of ``keys`` are stored idempotency keys."""
        keys = list(keys)
        total = 0
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 900):
                chunk = keys[start : start + 900]
                query = (
                    sa.select(sa.func.count())
                    .select_from(events)
                    .where(events.c.idempotency_key.in_(chunk))
                )
                total += int(conn.execute(query).scalar_one())
        return total

    def user_history(self, user_id: str, limit: int = 200) -> list[str]:
        """The user's most recent ``limit`` event items, oldest first."""
        query = (
            sa.select(events.c.item_id)
            .where(events.c.user_id == user_id)
            .order_by(events.c.ts.desc(), events.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = [row[0] for row in conn.execute(query)]
        return rows[::-1]

    def has_user(self, user_id: str) -> bool:
        """Whether the user has a row (an event was stored for them)."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id))
            return found.first() is not None

    # ------------------------------------------------------------------ forget
    def forget(self, kind: str, user_id: str | None, item_ids: Sequence[str]) -> ForgetRecord:
        """Delete the data a forget request names and record the request, in one transaction.

        ``user``: the user's events and row; ``items``: every event of the items;
        ``interactions``: the user's events with the items. Returns the stored request
        (status ``scheduled``).
        """
        delete = events.delete()
        if kind == "user":
            delete = delete.where(events.c.user_id == user_id)
        elif kind == "items":
            delete = delete.where(events.c.item_id.in_(list(item_ids)))
        elif kind == "interactions":
            delete = delete.where(events.c.user_id == user_id, events.c.item_id.in_(list(item_ids)))
        else:
            raise PolyrecError(f"unknown forget kind {kind!r}")
        now = time.time()
        record = ForgetRecord(
            id=secrets.token_hex(8),
            kind=kind,
            user_id=user_id,
            item_ids=list(item_ids),
            status="scheduled",
            message="",
            removed_events=0,
            created_at=now,
            updated_at=now,
        )
        with self.engine.begin() as conn:
            removed = conn.execute(delete).rowcount
            if kind == "user":
                conn.execute(users.delete().where(users.c.user_id == user_id))
            record = ForgetRecord(**{**record.__dict__, "removed_events": int(removed)})
            conn.execute(
                forget_requests.insert().values(
                    **{**record.__dict__, "item_ids": json.dumps(record.item_ids)}
                )
            )
        return record

    def forget_request(self, request_id: str) -> ForgetRecord | None:
        """One forget request by id, or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(forget_requests).where(forget_requests.c.id == request_id)
            ).first()
        return None if row is None else _forget_record(row)

    def forget_requests(self) -> list[ForgetRecord]:
        """Every forget request, oldest first (they define what serving masks)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(forget_requests).order_by(forget_requests.c.created_at))
            return [_forget_record(row) for row in rows]

    def set_forget_status(self, request_id: str, status: str, message: str) -> None:
        """Update the unlearning job state of a forget request."""
        with self.engine.begin() as conn:
            conn.execute(
                forget_requests.update()
                .where(forget_requests.c.id == request_id)
                .values(status=status, message=message, updated_at=time.time())
            )

    # ------------------------------------------------------------------ API keys
    def add_api_key(self, key: str, name: str = "default") -> None:
        """Store the hash of ``key`` (never the key); adding a known key is a no-op."""
        if len(key) < 16:
            raise PolyrecError("an API key must be at least 16 characters")
        stmt = self._insert(api_keys).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            conn.execute(
                stmt, [{"key_hash": hash_key(key), "name": name, "created_at": time.time()}]
            )

    def check_api_key(self, key: str) -> bool:
        """Whether ``key`` is a stored API key."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(api_keys.c.name).where(api_keys.c.key_hash == hash_key(key))
            )
            return found.first() is not None

    def count_api_keys(self) -> int:
        """Number of stored API keys."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one())


def new_api_key() -> str:
    """A fresh random API key (43 url-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def _forget_record(row: Any) -> ForgetRecord:
    data = dict(row._mapping)
    data["item_ids"] = json.loads(data["item_ids"])
    return ForgetRecord(**data)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns, so an acknowledged event survives
            # a crash of the process or the machine
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=8)
