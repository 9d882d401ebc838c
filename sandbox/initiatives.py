"""What the partner does on its own: cancel a confirmed reservation, lose one, or amend one.

The dice roll when a reservation is created (vanish) or confirmed (cancel, amend), and the delay
is drawn then and divided by the `time_scale` of that moment. A planned action is a row of
`partner_actions`, so it survives a restart; the partner's worker thread carries it out when
due. An amendment is due at once and silent: a new version on every read, but no webhook.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

from sandbox.clock import to_store
from sandbox.ledger import Ledger
from sandbox.store import Reservation, Store

BATCH = 100
IDLE_WAIT_S = 1.0
AMENDMENTS = ("dates", "guests", "price")


class Initiatives:
    def __init__(self, *, ledger: Ledger) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.faults = ledger.faults
        self.clock = ledger.clock
        self.wake: Callable[[], None] = lambda: None  # set by the server to its worker thread

    def plan(self, tx: sqlite3.Connection, reservation: Reservation, *, created: bool) -> bool:
        """Roll for a reservation just created or settled; True if an action was planned."""
        now = time.time()
        planned: list[tuple[str, float]] = []
        if created and self.faults.chance("vanish_rate"):
            planned.append(("vanish", now + self._delay("vanish_delay_s")))
        if reservation.status == "confirmed":
            if self.faults.chance("partner_cancel_rate"):
                planned.append(("cancel", now + self._delay("partner_cancel_delay_s")))
            if self.faults.chance("amend_rate"):
                planned.append(("amend", now))
        tx.executemany(
            "INSERT INTO partner_actions (reservation_id, action, due_at) VALUES (?, ?, ?)",
            [(reservation.id, action, due_at) for action, due_at in planned],
        )
        return bool(planned)

    def run_due(self) -> float:
        """Carry out the actions now due; return seconds until the next one."""
        due = self.store.query(
            "SELECT * FROM partner_actions WHERE due_at <= ? ORDER BY due_at, seq LIMIT ?",
            (time.time(), BATCH),
        )
        for row in due:
            self._carry_out(row)
        if len(due) == BATCH:
            return 0.0
        nxt = self.store.query("SELECT MIN(due_at) AS nxt FROM partner_actions")[0]["nxt"]
        return IDLE_WAIT_S if nxt is None else max(0.0, min(IDLE_WAIT_S, nxt - time.time()))

    def _delay(self, key: str) -> float:
        return self.faults.scaled(self.faults.uniform(*getattr(self.faults.settings, key)))

    def _carry_out(self, action: sqlite3.Row) -> None:
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM partner_actions WHERE seq = ?", (action["seq"],))
            current = Ledger.load_in(tx, action["reservation_id"])
            if current is None or current.vanished_at is not None:
                return
            if action["action"] == "vanish":
                self._vanish(tx, current)
            elif current.status != "confirmed":
                return  # cancelled by the client meanwhile: nothing left to cancel or amend
            elif action["action"] == "cancel":
                self.ledger.apply_change(tx, current, "cancelled", "partner_cancelled", "partner_cancel")
                Store.bump_in(tx, "faults", "partner_cancel")
            else:
                changes = self._amendment(current)
                # Same status and reason: only the booking's terms change, and no webhook says so.
                self.ledger.apply_change(
                    tx, current, current.status, current.reason, "amend", changes=changes, notify=False
                )
                Store.bump_in(tx, "faults", "amend")
        self.ledger.committed()

    def _vanish(self, tx: sqlite3.Connection, current: Reservation) -> None:
        """The partner loses every trace its API could show, its idempotency key included."""
        tx.execute(
            "UPDATE reservations SET vanished_at = ?, settle_at = NULL WHERE id = ?",
            (to_store(self.clock.now()), current.id),
        )
        tx.execute("DELETE FROM idempotency_keys WHERE reservation_id = ?", (current.id,))
        tx.execute("DELETE FROM partner_actions WHERE reservation_id = ?", (current.id,))
        Store.bump_in(tx, "faults", "vanish")

    def _amendment(self, current: Reservation) -> dict[str, tuple[object, object]]:
        """{column: (old, new)}: dates shifted by 1-3 days, one guest more or fewer, or a dearer price."""
        kind = self.faults.choice(AMENDMENTS)
        if kind == "dates":
            shift = timedelta(days=self.faults.randint(1, 3))
            return {
                column: (old, (date.fromisoformat(old) + shift).isoformat())
                for column, old in (("start_date", current.start_date), ("end_date", current.end_date))
            }
        if kind == "guests":
            fewer = current.guests > 1 and self.faults.coin()
            return {"guests": (current.guests, current.guests - 1 if fewer else current.guests + 1)}
        price = Decimal(current.total_price) + self.faults.randint(5, 50)
        return {"total_price": (current.total_price, format(price, "f"))}
