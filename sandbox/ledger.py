"""The partner's business rules, shared by both wire protocols.

Every change is one store transaction that updates the reservation, bumps its version, appends
a history row and queues its webhook (outbox), so no change exists without its record. A
reservation the partner lost (`vanished_at`) is absent from every read but the ground truth.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sandbox.clock import PartnerClock, to_store
from sandbox.faults import Faults
from sandbox.store import Reservation, Store

if TYPE_CHECKING:
    from sandbox.webhooks import ReservationOutbox

LIVE = ("pending", "confirmed")
SETTLE_BATCH = 100
IDLE_WAIT_S = 1.0


@dataclass(frozen=True)
class Product:
    id: str
    capacity: int
    price: Decimal


@dataclass(frozen=True)
class NewReservation:
    client_reference: str
    product_id: str
    start_date: date
    end_date: date
    guests: int
    total_price: str
    currency: str


@dataclass(frozen=True)
class Claim:
    """Result of claiming an idempotency key before a create."""

    kind: Literal["new", "done", "in_flight", "reused"]
    reservation: Reservation | None = None


@dataclass(frozen=True)
class Change:
    reservation: Reservation
    changed: bool
    inline_event: str | None = None  # a webhook to deliver before answering (webhook_early)


class UnknownProduct(Exception):
    pass


class NotFound(Exception):
    pass


class NotCancellable(Exception):
    pass


class Planner(Protocol):
    """What the partner does on its own (`sandbox.initiatives.Initiatives`), as the ledger sees it:
    a roll for each reservation created or settled, and a wake-up after the commit that planned."""

    def plan(self, tx: sqlite3.Connection, reservation: Reservation, *, created: bool) -> bool: ...

    def wake(self) -> None: ...


class Ledger:
    def __init__(
        self,
        *,
        store: Store,
        faults: Faults,
        clock: PartnerClock,
        catalogue: dict[str, Product] | None,
        outbox: ReservationOutbox | None,
        on_pending: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.faults = faults
        self.clock = clock
        self.catalogue = catalogue
        self.outbox = outbox
        self.on_pending = on_pending  # wakes the settler thread
        self.initiatives: Planner | None = None  # what the partner does on its own

    # --- reads (what the partner's API still knows) ------------------------------------
    def get(self, reservation_id: str) -> Reservation | None:
        rows = self.store.query(
            "SELECT * FROM reservations WHERE id = ? AND vanished_at IS NULL", (reservation_id,)
        )
        return Reservation.from_row(rows[0]) if rows else None

    def get_by_seq(self, seq: int) -> Reservation | None:
        rows = self.store.query("SELECT * FROM reservations WHERE seq = ? AND vanished_at IS NULL", (seq,))
        return Reservation.from_row(rows[0]) if rows else None

    def by_client_reference(self, client_reference: str) -> list[Reservation]:
        rows = self.store.query(
            "SELECT * FROM reservations WHERE client_reference = ? AND vanished_at IS NULL ORDER BY seq",
            (client_reference,),
        )
        return [Reservation.from_row(r) for r in rows]

    def changed_since(self, since: datetime | None, offset: int, limit: int) -> list[Reservation]:
        rows = self.store.query(
            "SELECT * FROM reservations WHERE updated_at >= ? AND vanished_at IS NULL "
            "ORDER BY updated_at, seq LIMIT ? OFFSET ?",
            (to_store(since) if since else "", limit, offset),
        )
        return [Reservation.from_row(r) for r in rows]

    # --- ground truth (everything, vanished included) ------------------------------------
    def all(self, client_reference: str | None = None) -> list[Reservation]:
        if client_reference is None:
            rows = self.store.query("SELECT * FROM reservations ORDER BY seq")
        else:
            rows = self.store.query(
                "SELECT * FROM reservations WHERE client_reference = ? ORDER BY seq", (client_reference,)
            )
        return [Reservation.from_row(r) for r in rows]

    def history(self) -> dict[str, list[dict[str, Any]]]:
        """Every version of every reservation, then a `vanish` entry for each one the partner lost."""
        result: dict[str, list[dict[str, Any]]] = {}
        for row in self.store.query("SELECT * FROM history ORDER BY reservation_id, version"):
            result.setdefault(row["reservation_id"], []).append(dict(row))
        for row in self.store.query(
            "SELECT id, version, status, reason, vanished_at FROM reservations WHERE vanished_at IS NOT NULL"
        ):
            result.setdefault(row["id"], []).append(
                {
                    "reservation_id": row["id"],
                    "version": row["version"],
                    "status": row["status"],
                    "reason": row["reason"],
                    "at": row["vanished_at"],
                    "cause": "vanish",
                    "changes": None,
                }
            )
        return result

    # --- idempotency keys (reference) ----------------------------------------------------
    def claim_key(self, key: str, fingerprint: str) -> Claim:
        with self.store.transaction() as tx:
            row = tx.execute("SELECT * FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
            if row is None:
                tx.execute(
                    "INSERT INTO idempotency_keys (key, fingerprint, state, created_at) "
                    "VALUES (?, ?, 'in_flight', ?)",
                    (key, fingerprint, to_store(self.clock.now())),
                )
                return Claim("new")
        if row["fingerprint"] != fingerprint:
            return Claim("reused")
        if row["state"] != "done":
            return Claim("in_flight")
        return Claim("done", self.get(row["reservation_id"]))

    def release_key(self, key: str) -> None:
        """The claimed create never committed: the key is free again."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM idempotency_keys WHERE key = ? AND state = 'in_flight'", (key,))

    def release_stale_keys(self) -> None:
        """At start no request is in flight: keys left in_flight by a killed process are void."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM idempotency_keys WHERE state = 'in_flight'")

    # --- writes --------------------------------------------------------------------------
    def check_product(self, product_id: str) -> None:
        if self.catalogue is not None and product_id not in self.catalogue:
            raise UnknownProduct(product_id)

    def create(self, new: NewReservation, *, idempotency_key: str | None = None) -> Change:
        self.check_product(new.product_id)
        settings = self.faults.settings
        now = self.clock.now()
        settle_at: float | None = None
        with self.store.transaction() as tx:
            if settings.async_confirm_delay_s is not None:
                status, reason = "pending", None
                settle_at = time.time() + self.faults.scaled(settings.async_confirm_delay_s)
                Store.bump_in(tx, "faults", "async_confirm")
            else:
                status, reason = self._decide(tx, new, reservation_id=None, blocking=LIVE)
            reservation_id = f"R-{secrets.token_hex(8)}"
            tx.execute(
                "INSERT INTO reservations (id, client_reference, product_id, start_date, "
                "end_date, guests, total_price, currency, status, reason, version, created_at, "
                "updated_at, settle_at, idempotency_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (
                    reservation_id,
                    new.client_reference,
                    new.product_id,
                    new.start_date.isoformat(),
                    new.end_date.isoformat(),
                    new.guests,
                    new.total_price,
                    new.currency,
                    status,
                    reason,
                    to_store(now),
                    to_store(now),
                    settle_at,
                    idempotency_key,
                ),
            )
            self._append_history(tx, reservation_id, 1, status, reason, now, "create")
            if idempotency_key is not None:
                tx.execute(
                    "UPDATE idempotency_keys SET state = 'done', reservation_id = ? WHERE key = ?",
                    (reservation_id, idempotency_key),
                )
            Store.bump_in(tx, "outcomes", f"created_{status}")
            reservation = self.load_in(tx, reservation_id)
            assert reservation is not None
            inline = self.outbox.enqueue(tx, reservation, created=True) if self.outbox else None
            planned = self._plan(tx, reservation, created=True)
        self.committed(planned=planned)
        if settle_at is not None:
            self.on_pending()
        return Change(reservation, changed=True, inline_event=inline)

    def cancel(self, reservation_id: str) -> Change:
        with self.store.transaction() as tx:
            current = self.load_in(tx, reservation_id)
            if current is None or current.vanished_at is not None:
                raise NotFound(reservation_id)
            if current.status == "rejected":
                raise NotCancellable(reservation_id)
            if current.status == "cancelled":
                return Change(current, changed=False)
            updated = self.apply_change(tx, current, "cancelled", None, "cancel")
        self.committed()
        return Change(updated, changed=True)

    def settle_due(self) -> float:
        """Settle pending creates whose delay is over; return seconds until the next one."""
        due = self.store.query(
            "SELECT id FROM reservations WHERE status = 'pending' AND settle_at <= ? "
            "ORDER BY settle_at, seq LIMIT ?",
            (time.time(), SETTLE_BATCH),
        )
        for row in due:
            self._settle(row["id"])
        if len(due) == SETTLE_BATCH:
            return 0.0
        nxt = self.store.query(
            "SELECT MIN(settle_at) AS nxt FROM reservations "
            "WHERE status = 'pending' AND settle_at IS NOT NULL"
        )[0]["nxt"]
        return IDLE_WAIT_S if nxt is None else max(0.0, min(IDLE_WAIT_S, nxt - time.time()))

    def _settle(self, reservation_id: str) -> None:
        with self.store.transaction() as tx:
            current = self.load_in(tx, reservation_id)
            # Re-check under the lock: a cancel (or a vanish) may have won the race.
            if current is None or current.status != "pending" or current.settle_at is None:
                return
            new = NewReservation(
                client_reference=current.client_reference,
                product_id=current.product_id,
                start_date=date.fromisoformat(current.start_date),
                end_date=date.fromisoformat(current.end_date),
                guests=current.guests,
                total_price=current.total_price,
                currency=current.currency,
            )
            # Only confirmed ones hold the product now; pending ones settle first come, first served.
            status, reason = self._decide(tx, new, reservation_id=reservation_id, blocking=("confirmed",))
            settled = self.apply_change(tx, current, status, reason, "settle")
            planned = self._plan(tx, settled, created=False)
        self.committed(planned=planned)

    # --- helpers -------------------------------------------------------------------------
    def committed(self, *, planned: bool = False) -> None:
        """After a commit (never inside it): the sender can now see the new event, and the
        partner's own worker an action it just planned."""
        if self.outbox is not None:
            self.outbox.wake()
        if planned and self.initiatives is not None:
            self.initiatives.wake()

    def _plan(self, tx: sqlite3.Connection, reservation: Reservation, *, created: bool) -> bool:
        if self.initiatives is None:
            return False
        return self.initiatives.plan(tx, reservation, created=created)

    def _decide(
        self,
        tx: sqlite3.Connection,
        new: NewReservation,
        *,
        reservation_id: str | None,
        blocking: tuple[str, ...],
    ) -> tuple[str, str | None]:
        if self.faults.chance("reject_rate"):
            Store.bump_in(tx, "faults", "reject")
            return "rejected", "sold_out"
        product = self.catalogue.get(new.product_id) if self.catalogue is not None else None
        if product is not None:
            marks = ",".join("?" * len(blocking))
            taken = tx.execute(
                f"SELECT COUNT(*) FROM reservations WHERE product_id = ? AND status IN ({marks}) "
                "AND start_date < ? AND end_date > ? AND id != ? AND vanished_at IS NULL",
                (
                    new.product_id,
                    *blocking,
                    new.end_date.isoformat(),
                    new.start_date.isoformat(),
                    reservation_id or "",
                ),
            ).fetchone()[0]
            if taken >= product.capacity:
                Store.bump_in(tx, "outcomes", "sold_out")
                return "rejected", "sold_out"
        return "confirmed", None

    def apply_change(
        self,
        tx: sqlite3.Connection,
        current: Reservation,
        status: str,
        reason: str | None,
        cause: str,
        *,
        changes: Mapping[str, tuple[object, object]] | None = None,
        notify: bool = True,
    ) -> Reservation:
        """The next version: new status and reason, and `changes` ({column: (old, new)}) if any."""
        now = self.clock.now()
        version = current.version + 1
        changes = changes or {}
        assignments = "".join(f"{column} = ?, " for column in changes)
        tx.execute(
            f"UPDATE reservations SET {assignments}status = ?, reason = ?, version = ?, "
            "updated_at = ?, settle_at = NULL WHERE id = ?",
            (*(new for _, new in changes.values()), status, reason, version, to_store(now), current.id),
        )
        self._append_history(
            tx, current.id, version, status, reason, now, cause, json.dumps(changes) if changes else None
        )
        Store.bump_in(tx, "outcomes", f"{cause}_{status}")
        updated = self.load_in(tx, current.id)
        assert updated is not None
        if notify and self.outbox is not None:
            self.outbox.enqueue(tx, updated, created=False)
        return updated

    @staticmethod
    def _append_history(
        tx: sqlite3.Connection,
        reservation_id: str,
        version: int,
        status: str,
        reason: str | None,
        at: datetime,
        cause: str,
        changes: str | None = None,
    ) -> None:
        tx.execute(
            "INSERT INTO history (reservation_id, version, status, reason, at, cause, changes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (reservation_id, version, status, reason, to_store(at), cause, changes),
        )

    @staticmethod
    def load_in(tx: sqlite3.Connection, reservation_id: str) -> Reservation | None:
        """The row as it is inside `tx`, vanished or not."""
        row = tx.execute("SELECT * FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
        return Reservation.from_row(row) if row else None
