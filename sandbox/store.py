"""The partner's own SQLite store: stdlib sqlite3, WAL, one connection per thread.

Writers serialise on one process lock and `BEGIN IMMEDIATE`, so a read-check-write sequence (a
capacity check, an idempotency claim) is atomic; readers run concurrently under WAL. Both
profiles share one reservations table: the legacy wire names (`booking_no`, `ref`, `item`,
`from`/`to`, `pax`, `amount`, `ccy`, `state`, `modified`) are views of the same columns, and
legacy's `booking_no` is the row's integer key.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sandbox.clock import from_store

FIRST_BOOKING_NO = 550_001

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- legacy booking_no
    id TEXT NOT NULL UNIQUE,                    -- reference id, R-<hex>
    client_reference TEXT NOT NULL,             -- legacy ref
    product_id TEXT NOT NULL,                   -- legacy item
    start_date TEXT NOT NULL,                   -- legacy from
    end_date TEXT NOT NULL,                     -- legacy to
    guests INTEGER NOT NULL,                    -- legacy pax
    total_price TEXT NOT NULL,                  -- legacy amount
    currency TEXT NOT NULL,                     -- legacy ccy
    status TEXT NOT NULL,                       -- pending|confirmed|rejected|cancelled
    reason TEXT,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,                   -- partner clock, UTC
    updated_at TEXT NOT NULL,                   -- partner clock, UTC (legacy modified)
    settle_at REAL,                             -- real epoch when a pending create settles
    idempotency_key TEXT,
    vanished_at TEXT                            -- partner clock, UTC: lost to every read since
);
CREATE INDEX IF NOT EXISTS reservations_client_reference ON reservations (client_reference);
CREATE INDEX IF NOT EXISTS reservations_updated ON reservations (updated_at, seq);
CREATE INDEX IF NOT EXISTS reservations_product ON reservations (product_id, status);
CREATE INDEX IF NOT EXISTS reservations_settle ON reservations (status, settle_at);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    reservation_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL,
    cause TEXT NOT NULL,
    changes TEXT,                               -- amend: JSON {column: [old, new]}
    UNIQUE (reservation_id, version)
);
CREATE TABLE IF NOT EXISTS partner_actions (    -- changes the partner makes on its own, when due
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    reservation_id TEXT NOT NULL,
    action TEXT NOT NULL,                       -- cancel|vanish|amend
    due_at REAL NOT NULL                        -- real epoch
);
CREATE INDEX IF NOT EXISTS partner_actions_due ON partner_actions (due_at, seq);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    reservation_id TEXT,
    state TEXT NOT NULL,                        -- in_flight|done
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    reservation_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload TEXT NOT NULL,                      -- the exact body, signed at each attempt
    status TEXT NOT NULL,                       -- queued|inline|delivered|failed
    created_real REAL NOT NULL,
    due_at REAL NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,            -- reorder: wait behind a later event
    hold_deadline REAL,
    copies_left INTEGER NOT NULL DEFAULT 0,     -- duplicates still to send after a success
    failures INTEGER NOT NULL DEFAULT 0,        -- consecutive failures, for the backoff
    first_delivered_real REAL
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (status, due_at);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    response_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
"""
# Columns added since the first stores were written; a store from before gets them at open.
ADDED_COLUMNS = (("reservations", "vanished_at", "TEXT"), ("history", "changes", "TEXT"))
DATA_TABLES = (
    "reservations",
    "history",
    "partner_actions",
    "idempotency_keys",
    "webhook_events",
    "webhook_attempts",
    "counters",
)


class StoreProfileError(RuntimeError):
    """The store file belongs to a partner of the other profile."""


@dataclass(frozen=True)
class Reservation:
    seq: int
    id: str
    client_reference: str
    product_id: str
    start_date: str
    end_date: str
    guests: int
    total_price: str
    currency: str
    status: str
    reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    settle_at: float | None
    idempotency_key: str | None
    vanished_at: datetime | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Reservation:
        data = dict(row)
        data["created_at"] = from_store(data["created_at"])
        data["updated_at"] = from_store(data["updated_at"])
        data["vanished_at"] = data["vanished_at"] and from_store(data["vanished_at"])
        return cls(**data)


class Store:
    def __init__(self, path: str | Path, profile: str) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._data_tables = list(DATA_TABLES)
        conn = self.conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        with self.transaction() as tx:
            self._add_missing_columns(tx)
            row = tx.execute("SELECT value FROM meta WHERE key = 'profile'").fetchone()
            if row is None:
                tx.execute("INSERT INTO meta (key, value) VALUES ('profile', ?)", (profile,))
                self._seed_booking_numbers(tx)
            elif row["value"] != profile:
                raise StoreProfileError(f"{self.path} holds a {row['value']} partner")

    def add_schema(self, schema: str, tables: tuple[str, ...]) -> None:
        """A profile's own tables, created if missing and wiped by `reset` like the shared ones."""
        self.conn().executescript(schema)
        self._data_tables.extend(tables)

    @staticmethod
    def _add_missing_columns(tx: sqlite3.Connection) -> None:
        for table, column, kind in ADDED_COLUMNS:
            if not any(c["name"] == column for c in tx.execute(f"PRAGMA table_info({table})")):
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @staticmethod
    def _seed_booking_numbers(tx: sqlite3.Connection) -> None:
        # Legacy booking numbers look like a real partner's, not 1, 2, 3.
        if tx.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'reservations'").fetchone():
            return
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('reservations', ?)",
            (FIRST_BOOKING_NO - 1,),
        )

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, params).fetchall()

    @staticmethod
    def bump_in(tx: sqlite3.Connection, kind: str, name: str, n: int = 1) -> None:
        tx.execute(
            "INSERT INTO counters (kind, name, n) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET n = n + excluded.n",
            (kind, name, n),
        )

    def bump(self, kind: str, name: str, n: int = 1) -> None:
        with self.transaction() as tx:
            self.bump_in(tx, kind, name, n)

    def counters(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for row in self.query("SELECT kind, name, n FROM counters ORDER BY kind, name"):
            result.setdefault(row["kind"], {})[row["name"]] = row["n"]
        return result

    def reset(self) -> None:
        """Wipe every reservation, payment, key, webhook and counter (tests); booking numbers go on."""
        with self.transaction() as tx:
            for table in self._data_tables:
                tx.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
