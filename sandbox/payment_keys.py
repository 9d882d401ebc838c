"""The payment provider's idempotency layer, with Stripe's semantics.

A POST with an `Idempotency-Key` claims the key before it runs; the answer it produced (status
and exact body, a `402` decline or a `400` of a wrong state included) is saved in the same
transaction as its change, and every later request with the key and the same endpoint and
parameters gets that answer again, marked `Idempotent-Replayed: true`. Another endpoint or other
parameters under the key are an `idempotency_error`; a repeat while the first still runs is a
`409`. A request refused before it ran (invalid parameters, a 429, a 5xx before commit) saves
nothing, so the key stays free. Keys are forgotten 24 hours (divided by `time_scale`) after
their first use.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

from sandbox.faults import Faults
from sandbox.store import Store

KEY_LIFETIME_S = 24 * 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS payment_idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,                  -- endpoint and parameters it was first used with
    state TEXT NOT NULL,                        -- in_flight|done
    status INTEGER,                             -- the saved answer, once done
    body TEXT,
    created_real REAL NOT NULL                  -- real epoch of its first use
);
"""
TABLES = ("payment_idempotency_keys",)


@dataclass(frozen=True)
class Claim:
    kind: Literal["new", "replay", "mismatch", "in_flight"]
    status: int | None = None
    body: str | None = None


class IdempotencyKeys:
    def __init__(self, *, store: Store, faults: Faults) -> None:
        self.store = store
        self.faults = faults
        store.add_schema(SCHEMA, TABLES)

    def claim(self, key: str, fingerprint: str) -> Claim:
        now = time.time()
        with self.store.transaction() as tx:
            row = tx.execute("SELECT * FROM payment_idempotency_keys WHERE key = ?", (key,)).fetchone()
            if row is None or row["created_real"] + self.faults.scaled(KEY_LIFETIME_S) <= now:
                tx.execute(
                    "INSERT OR REPLACE INTO payment_idempotency_keys (key, fingerprint, state, created_real) "
                    "VALUES (?, ?, 'in_flight', ?)",
                    (key, fingerprint, now),
                )
                return Claim("new")
        if row["fingerprint"] != fingerprint:
            return Claim("mismatch")
        if row["state"] != "done":
            return Claim("in_flight")
        return Claim("replay", row["status"], row["body"])

    @staticmethod
    def save(tx: sqlite3.Connection, key: str, status: int, body: str) -> None:
        """Inside the transaction of the change: the answer to replay."""
        tx.execute(
            "UPDATE payment_idempotency_keys SET state = 'done', status = ?, body = ? WHERE key = ?",
            (status, body, key),
        )

    @staticmethod
    def keeps_500(tx: sqlite3.Connection, key: str) -> bool:
        """Whether the key still keeps a saved 500 (a reset wipes it)."""
        row = tx.execute("SELECT status FROM payment_idempotency_keys WHERE key = ?", (key,)).fetchone()
        return row is not None and row["status"] == 500

    def replace_answer(self, key: str, status: int, body: str) -> None:
        """The change was made but the call failed after it (a 5xx after commit): Stripe saves
        that failure under the key, so a retry with the key gets the failure again."""
        with self.store.transaction() as tx:
            self.save(tx, key, status, body)

    def release(self, key: str) -> None:
        """The claimed request never committed: the key is free again."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM payment_idempotency_keys WHERE key = ? AND state = 'in_flight'", (key,))

    def release_stale(self) -> None:
        """At start no request is in flight: keys left in flight by a killed process are void."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM payment_idempotency_keys WHERE state = 'in_flight'")

    def all(self) -> list[dict[str, object]]:
        rows = self.store.query(
            "SELECT key, state, status, created_real FROM payment_idempotency_keys ORDER BY created_real"
        )
        return [dict(row) for row in rows]
