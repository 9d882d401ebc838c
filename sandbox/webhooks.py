"""Webhooks: a persistent outbox and the partner's own redelivery (reference and payments profiles).

Events are queued in the same transaction as the change they describe, so they survive a
restart; a background thread delivers due ones, records every attempt, and redelivers with
exponential backoff until a 2xx (or until it gives up after a day). Faults shape delivery:
extra delay, duplicates (same event id), held back behind later events, sent inline
before the create's response, or (reference) carrying out-of-range values, signed like any
other body. Each profile brings its payload and its signature scheme (`Signer`).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import requests
from standardwebhooks.webhooks import Webhook

from sandbox.clock import PartnerClock, to_store
from sandbox.faults import Faults
from sandbox.garbage import garble
from sandbox.store import Reservation, Store

logger = logging.getLogger(__name__)

TIMEOUT = (3.05, 10.0)  # connect, read: a slow receiver must not hold the sender forever
MAX_BACKOFF_S = 3600.0
GIVE_UP_AFTER_S = 24 * 3600.0
MAX_HOLD_S = 120.0  # a held-back event waits at most this long for a later one to overtake it
DUPLICATE_GAP_S = (0.2, 3.0)
BATCH = 50
IDLE_WAIT_S = 1.0

ELIGIBLE = """
SELECT * FROM webhook_events AS e
WHERE e.status = 'queued' AND e.due_at <= :now
  AND (e.held = 0 OR e.hold_deadline <= :now OR EXISTS (
      SELECT 1 FROM webhook_events AS later
      WHERE later.seq > e.seq AND later.first_delivered_real IS NOT NULL))
ORDER BY e.due_at, e.seq
LIMIT :batch
"""
# (event id, the moment it is sent, the exact body) -> the headers that sign it
Signer = Callable[[str, datetime, str], dict[str, str]]

NEXT_DUE = """
SELECT MIN(CASE WHEN held = 1 THEN MAX(due_at, hold_deadline) ELSE due_at END) AS nxt
FROM webhook_events WHERE status = 'queued'
"""


def standard_webhooks_signer(secret: str) -> Signer:
    """The reference partner's scheme: Standard Webhooks (webhook-id, -timestamp, -signature)."""
    webhook = Webhook(secret)

    def sign(event_id: str, sent_at: datetime, payload: str) -> dict[str, str]:
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(math.floor(sent_at.timestamp())),
            "webhook-signature": webhook.sign(event_id, sent_at, payload),
            "Content-Type": "application/json",
        }

    return sign


class Outbox:
    def __init__(
        self,
        *,
        store: Store,
        faults: Faults,
        clock: PartnerClock,
        url: str,
        sign: Signer,
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.faults = faults
        self.clock = clock
        self.url = url
        self._sign = sign
        self._stopping = stopping
        self._local = threading.local()
        self.wake: Callable[[], None] = lambda: None  # set by the server to its sender thread

    def enqueue_event(
        self,
        tx: sqlite3.Connection,
        *,
        event_id: str,
        subject_id: str,
        version: int,
        payload: str,
        may_be_early: bool,
    ) -> str | None:
        """Queue one event (the exact body); return its id if it must be sent inline (early)."""
        now = time.time()
        settings = self.faults.settings
        copies = 0
        if self.faults.chance("webhook_duplicate_rate"):
            copies = self.faults.randint(1, 2)
            Store.bump_in(tx, "faults", "webhook_duplicate")
        early = may_be_early and self.faults.chance("webhook_early_rate")
        held, hold_deadline, due_at, status = 0, None, now, "queued"
        if early:
            status = "inline"  # the request thread sends it; the sender leaves it alone
            Store.bump_in(tx, "faults", "webhook_early")
        else:
            delay = self.faults.scaled(self.faults.uniform(*settings.webhook_delay_s))
            if delay > 0:
                due_at += delay
                Store.bump_in(tx, "faults", "webhook_delay")
            if self.faults.chance("webhook_reorder_rate"):
                held, hold_deadline = 1, due_at + self.faults.scaled(MAX_HOLD_S)
                Store.bump_in(tx, "faults", "webhook_reorder")
        tx.execute(
            "INSERT INTO webhook_events (event_id, reservation_id, version, payload, status, "
            "created_real, due_at, held, hold_deadline, copies_left) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                subject_id,
                version,
                payload,
                status,
                now,
                due_at,
                held,
                hold_deadline,
                copies,
            ),
        )
        Store.bump_in(tx, "webhooks", "events")
        # No wake here: the sender could not see the event before the caller commits.
        return event_id if early else None

    def deliver_inline(self, event_id: str) -> None:
        """Send one event now, from the request thread, before the response goes out."""
        rows = self.store.query("SELECT * FROM webhook_events WHERE event_id = ?", (event_id,))
        if rows:
            self._attempt(rows[0])
        self.wake()  # a later event went out: held-back ones may now follow, and retries are due

    def deliver_due(self) -> float:
        """Deliver every due event once; return seconds until the next is due."""
        rows = self.store.query(ELIGIBLE, {"now": time.time(), "batch": BATCH})
        for row in rows:
            if self._stopping.is_set():
                break
            self._attempt(row)
        if rows:
            return 0.0  # a delivery may have released held-back events
        nxt = self.store.query(NEXT_DUE)[0]["nxt"]
        return IDLE_WAIT_S if nxt is None else max(0.0, min(IDLE_WAIT_S, nxt - time.time()))

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            # Deliveries go where the sandbox was told to send them: no proxy from the
            # environment (looking one up on every delivery was a fifth of its CPU).
            session.trust_env = False
        return session

    def _attempt(self, event: sqlite3.Row) -> None:
        event_id, payload = event["event_id"], event["payload"]
        sent_at = self.clock.now()  # signed with the partner's own (possibly skewed) clock
        headers = self._sign(event_id, sent_at, payload)
        code: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            with self._session().post(
                self.url, data=payload.encode(), headers=headers, timeout=TIMEOUT
            ) as response:
                code = response.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = round((time.monotonic() - started) * 1000)
        self._record(event_id, sent_at_text=to_store(sent_at), code=code, error=error, ms=duration_ms)

    def _record(
        self, event_id: str, *, sent_at_text: str, code: int | None, error: str | None, ms: int
    ) -> None:
        now = time.time()
        with self.store.transaction() as tx:
            event = tx.execute("SELECT * FROM webhook_events WHERE event_id = ?", (event_id,)).fetchone()
            if event is None:  # wiped by a reset meanwhile
                return
            attempt = (
                1
                + tx.execute(
                    "SELECT COUNT(*) FROM webhook_attempts WHERE event_id = ?", (event_id,)
                ).fetchone()[0]
            )
            tx.execute(
                "INSERT INTO webhook_attempts (event_id, attempt, at, response_code, error, "
                "duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, attempt, sent_at_text, code, error, ms),
            )
            Store.bump_in(tx, "webhook_attempts", str(code) if code is not None else "error")
            if code is not None and 200 <= code < 300:
                first = event["first_delivered_real"] or now
                if event["copies_left"] > 0:
                    gap = self.faults.scaled(self.faults.uniform(*DUPLICATE_GAP_S))
                    tx.execute(
                        "UPDATE webhook_events SET status = 'queued', copies_left = copies_left - 1,"
                        " due_at = ?, failures = 0, first_delivered_real = ? WHERE event_id = ?",
                        (now + gap, first, event_id),
                    )
                else:
                    tx.execute(
                        "UPDATE webhook_events SET status = 'delivered', first_delivered_real = ?"
                        " WHERE event_id = ?",
                        (first, event_id),
                    )
                return
            failures = event["failures"] + 1
            if now - event["created_real"] > self.faults.scaled(GIVE_UP_AFTER_S):
                tx.execute(
                    "UPDATE webhook_events SET status = 'failed', failures = ? WHERE event_id = ?",
                    (failures, event_id),
                )
                logger.warning("webhook %s given up after %d attempts", event_id, attempt)
                return
            backoff = self.faults.scaled(min(2.0 ** (failures - 1), MAX_BACKOFF_S))
            tx.execute(
                "UPDATE webhook_events SET status = 'queued', failures = ?, due_at = ? WHERE event_id = ?",
                (failures, now + backoff, event_id),
            )


class ReservationOutbox(Outbox):
    """The reference partner's events: one `reservation.updated` per version."""

    def __init__(
        self,
        *,
        render: Callable[[Reservation], dict[str, Any]],
        garbage: Mapping[str, Sequence[object]],
        **outbox: Any,
    ) -> None:
        super().__init__(**outbox)
        self._render = render
        self._garbage = garbage

    def enqueue(self, tx: sqlite3.Connection, reservation: Reservation, *, created: bool) -> str | None:
        """Queue the event for this version; return its id if it must be sent inline (early)."""
        data = self._render(reservation)
        if self.faults.chance("garbage_values_rate") and garble(data, self._garbage, self.faults):
            Store.bump_in(tx, "faults", "webhook_garbage_values")
        payload = json.dumps(
            {
                "type": "reservation.updated",
                "timestamp": self.clock.rfc3339(reservation.updated_at),
                "data": data,
            },
            separators=(",", ":"),
        )
        return self.enqueue_event(
            tx,
            event_id=f"msg_{secrets.token_hex(12)}",
            subject_id=reservation.id,
            version=reservation.version,
            payload=payload,
            may_be_early=created,
        )
