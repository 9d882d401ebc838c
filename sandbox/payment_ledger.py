"""The payment provider's rules: PaymentIntents with manual or automatic capture, their charges
and refunds, authorizations that lapse, refunds that fail after they were made, and the events
each change sends.

Each object is stored as the API renders it (JSON) with a version. Every change is one store
transaction that rewrites the objects, appends a history row per object and queues the events
(outbox), so no change exists without its record and its webhook. As at Stripe, money an
authorization no longer holds (the rest of a partial capture, a cancelled or lapsed
authorization) is released as a refund without a balance transaction: the charge's
`amount_refunded` counts it, `charge.refunded` announces it, and no money moved. A refund to a
card that cannot take it (the test card `pm_card_refundFail`) answers `succeeded` and fails a
little later, as at Stripe: `failed` with its `failure_reason`, the charge's `amount_refunded`
back down, announced by `charge.refund.updated`, `refund.updated` and `refund.failed`.

An operation raises `ApiError` before it writes anything, or returns its `Outcome`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.clock import PartnerClock, to_store
from sandbox.faults import Faults
from sandbox.store import Store
from sandbox.stripe_wire import API_VERSION, ApiError, dumps, new_id
from sandbox.webhooks import Outbox

AUTHORIZATION_VALIDITY_S = 7 * 24 * 3600.0  # before time_scale
# How long after it answered `succeeded` a refund to a card that refuses it fails (before
# time_scale). Stripe says only "some time later"; a short delay keeps it within a demo's wait.
REFUND_FAILURE_DELAY_S = 30.0
# How long a confirmation with the sandbox's `pm_card_processing` stays `processing` before its
# hold is made (before time_scale): the bank's answer, late.
PROCESSING_DELAY_S = 30.0
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CONFIRMABLE = ("requires_payment_method", "requires_confirmation")
DUE_BATCH = 100
IDLE_WAIT_S = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS payment_objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,                    -- pi_..., ch_..., re_...
    object TEXT NOT NULL,                       -- payment_intent|charge|refund
    created INTEGER NOT NULL,                   -- unix seconds, partner clock
    payment_intent TEXT,                        -- the intent it belongs to (its own id for an intent)
    charge TEXT,                                -- a refund's charge
    version INTEGER NOT NULL,
    data TEXT NOT NULL,                         -- the object as the API renders it
    test_card TEXT,                             -- intents: the test PaymentMethod confirmed with
    expires_at REAL                             -- real epoch: an intent's authorization lapses then,
                                                -- or a refund to a card that refuses it fails then
);
CREATE INDEX IF NOT EXISTS payment_objects_listing ON payment_objects (object, created, seq);
CREATE INDEX IF NOT EXISTS payment_objects_intent ON payment_objects (payment_intent);
CREATE INDEX IF NOT EXISTS payment_objects_expiry ON payment_objects (expires_at);
CREATE TABLE IF NOT EXISTS payment_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,                           -- partner clock, UTC
    cause TEXT NOT NULL,                        -- create|confirm|processed|capture|cancel|refund|expire|
                                                -- refund_failed
    request_id TEXT,
    idempotency_key TEXT,
    data TEXT NOT NULL,                         -- the object at this version
    UNIQUE (object_id, version)
);
"""
TABLES = ("payment_objects", "payment_history")


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    decline_code: str | None = None  # declined by the issuer with this code
    review: bool = False  # authorized, and placed in the manual review queue (elevated risk)
    # A refund to it answers succeeded, then fails with this `failure_reason` (the card is closed).
    refund_failure: str | None = None
    # Its confirmation answers `processing`; the hold is made later (`run_due`).
    processing: bool = False


# Stripe's test PaymentMethods (docs.stripe.com/testing), the ones this sandbox knows.
TEST_CARDS = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", decline_code="generic_decline"),
    "pm_card_visa_chargeDeclined": TestCard("visa", "0002", decline_code="generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard("visa", "9995", decline_code="insufficient_funds"),
    "pm_card_visa_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", decline_code="insufficient_funds"
    ),
    "pm_card_riskLevelElevated": TestCard("visa", "9235", review=True),
    "pm_card_refundFail": TestCard("visa", "5126", refund_failure="expired_or_canceled_card"),
    # The sandbox's own (Stripe has no card test for it): the bank answers after the confirmation.
    "pm_card_processing": TestCard("visa", "1881", processing=True),
}
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}
AUTHORIZED = {
    "network_status": "approved_by_network",
    "reason": None,
    "risk_level": "normal",
    "seller_message": "Payment complete.",
    "type": "authorized",
}
IN_REVIEW = {
    "network_status": "approved_by_network",
    "reason": "elevated_risk_level",
    "risk_level": "elevated",
    "seller_message": "Stripe evaluated this payment as having elevated risk, and placed it in your manual "
    "review queue.",
    "type": "manual_review",
}


@dataclass(frozen=True)
class RequestMeta:
    """Who caused a change: an API request (its id and key), or nobody (an authorization lapsing)."""

    request_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class NewIntent:
    amount: int
    currency: str
    capture_method: str
    confirm: bool
    payment_method: str | None
    payment_method_types: list[str]
    automatic_payment_methods: dict[str, Any] | None
    metadata: dict[str, str]
    description: str | None
    return_url: str | None


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    inline_events: list[str] = field(default_factory=list)  # webhooks to send before answering


class PaymentLedger:
    def __init__(self, *, store: Store, faults: Faults, clock: PartnerClock, outbox: Outbox | None) -> None:
        self.store = store
        self.faults = faults
        self.clock = clock
        self.outbox = outbox
        store.add_schema(SCHEMA, TABLES)

    # --- reads -----------------------------------------------------------------------------
    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT data FROM payment_objects WHERE id = ? AND object = ?", (object_id, kind)
        )
        return json.loads(rows[0]["data"]) if rows else None

    def page(
        self,
        kind: str,
        *,
        created: dict[str, int],
        belongs_to: dict[str, str],
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, as Stripe lists; (objects, has_more) after or before a cursor object."""
        operators = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        where = ["object = ?"]
        args: list[object] = [kind]
        for op, value in created.items():
            where.append(f"created {operators[op]} ?")
            args.append(value)
        for column, value in belongs_to.items():  # payment_intent / charge
            where.append(f"{column} = ?")
            args.append(value)
        cursor_id = starting_after or ending_before
        newest_first = ending_before is None
        if cursor_id is not None:
            cursor = self.store.query(
                "SELECT created, seq FROM payment_objects WHERE id = ? AND object = ?", (cursor_id, kind)
            )
            if not cursor:
                param = "starting_after" if starting_after else "ending_before"
                raise ApiError(400, f"No such {kind}: '{cursor_id}'", code="resource_missing", param=param)
            side = "<" if newest_first else ">"
            where.append(f"(created {side} ? OR (created = ? AND seq {side} ?))")
            args += [cursor[0]["created"], cursor[0]["created"], cursor[0]["seq"]]
        order = "DESC" if newest_first else "ASC"
        rows = self.store.query(
            f"SELECT data FROM payment_objects WHERE {' AND '.join(where)} "
            f"ORDER BY created {order}, seq {order} LIMIT ?",
            (*args, limit + 1),
        )
        objects = [json.loads(row["data"]) for row in rows[:limit]]
        return (objects if newest_first else objects[::-1]), len(rows) > limit

    def ground_truth(self, payment_intent: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every intent, charge and refund with each of its versions; sandbox-only facts under `sandbox`."""
        only_intent = "WHERE o.payment_intent = ?" if payment_intent else ""
        args = (payment_intent,) if payment_intent else ()
        history: dict[str, list[dict[str, Any]]] = {}
        for row in self.store.query(
            "SELECT h.* FROM payment_history AS h JOIN payment_objects AS o ON o.id = h.object_id "
            f"{only_intent} ORDER BY h.object_id, h.version",
            args,
        ):
            history.setdefault(row["object_id"], []).append(
                {
                    "version": row["version"],
                    "at": row["at"],
                    "cause": row["cause"],
                    "request_id": row["request_id"],
                    "idempotency_key": row["idempotency_key"],
                    "object": json.loads(row["data"]),
                }
            )
        truth: dict[str, list[dict[str, Any]]] = {"payment_intents": [], "charges": [], "refunds": []}
        for row in self.store.query(f"SELECT o.* FROM payment_objects AS o {only_intent} ORDER BY seq", args):
            entry = {
                **json.loads(row["data"]),
                "version": row["version"],
                "history": history.get(row["id"], []),
            }
            when = row["expires_at"] and datetime.fromtimestamp(row["expires_at"], UTC).isoformat(
                timespec="milliseconds"
            )
            if row["object"] == "payment_intent":
                # A confirmation still `processing` holds nothing yet: its deadline is the bank's answer.
                lapses = None if entry.get("status") == "processing" else when
                entry["sandbox"] = {"test_card": row["test_card"], "authorization_lapses_at": lapses}
            elif row["object"] == "refund":
                entry["sandbox"] = {"fails_at": when}
            truth[f"{row['object']}s"].append(entry)
        return truth

    @staticmethod
    def load_in(tx: sqlite3.Connection, kind: str, object_id: str) -> dict[str, Any] | None:
        row = tx.execute(
            "SELECT data FROM payment_objects WHERE id = ? AND object = ?", (object_id, kind)
        ).fetchone()
        return json.loads(row["data"]) if row else None

    def require_in(self, tx: sqlite3.Connection, kind: str, object_id: str, param: str) -> dict[str, Any]:
        found = self.load_in(tx, kind, object_id)
        if found is None:
            raise ApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)
        return found

    # --- writes ----------------------------------------------------------------------------
    def create_intent(self, tx: sqlite3.Connection, new: NewIntent, meta: RequestMeta) -> Outcome:
        card_name = new.payment_method
        if card_name is not None:
            self._test_card(card_name)
        if new.confirm and card_name is None:
            raise ApiError(
                400,
                "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the "
                "PaymentIntent, either provide a `payment_method` or set one on the PaymentIntent first.",
                code="payment_intent_unexpected_state",
            )
        if new.confirm:
            self._check_return_url(new.automatic_payment_methods, new.return_url)
        intent_id = new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": new.amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": new.automatic_payment_methods,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": new.capture_method,
            "client_secret": f"{intent_id}_secret_{secrets.token_urlsafe(18)}",
            "confirmation_method": "automatic",
            "created": self._now(),
            "currency": new.currency,
            "customer": None,
            "description": new.description,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": new.metadata,
            "next_action": None,
            "payment_method": self._payment_method_id(card_name),
            "payment_method_types": new.payment_method_types,
            "status": "requires_confirmation" if card_name else "requires_payment_method",
        }
        tx.execute(
            "INSERT INTO payment_objects (id, object, created, payment_intent, version, data, test_card) "
            "VALUES (?, 'payment_intent', ?, ?, 0, '{}', ?)",
            (intent_id, intent["created"], intent_id, card_name),
        )
        if not new.confirm:
            self._save(tx, intent, "create", meta)
            return Outcome(200, intent)
        assert card_name is not None
        return self._confirm(tx, intent, card_name, "create", meta)

    def confirm(
        self,
        tx: sqlite3.Connection,
        intent_id: str,
        payment_method: str | None,
        return_url: str | None,
        meta: RequestMeta,
    ) -> Outcome:
        intent = self.require_in(tx, "payment_intent", intent_id, "intent")
        if intent["status"] not in CONFIRMABLE:
            raise ApiError(
                400,
                f"This PaymentIntent's status is {intent['status']}, but it must be one of "
                f"{', '.join(CONFIRMABLE)} to be confirmed.",
                code="payment_intent_unexpected_state",
                extra={"payment_intent": intent},
            )
        card_name = payment_method or self._card_of(tx, intent_id)
        if card_name is None:
            raise ApiError(
                400,
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
                extra={"payment_intent": intent},
            )
        self._test_card(card_name)
        self._check_return_url(intent["automatic_payment_methods"], return_url)
        tx.execute("UPDATE payment_objects SET test_card = ? WHERE id = ?", (card_name, intent_id))
        return self._confirm(tx, intent, card_name, "confirm", meta)

    def capture(
        self,
        tx: sqlite3.Connection,
        intent_id: str,
        amount_to_capture: int | None,
        metadata: dict[str, str] | None,
        meta: RequestMeta,
    ) -> Outcome:
        intent = self.require_in(tx, "payment_intent", intent_id, "intent")
        if intent["status"] != "requires_capture":
            raise ApiError(
                400,
                f"This PaymentIntent could not be captured because it has a status of {intent['status']}. "
                "Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
                extra={"payment_intent": intent},
            )
        capturable = intent["amount_capturable"]
        amount = capturable if amount_to_capture is None else amount_to_capture
        if amount > capturable:
            raise ApiError(
                400,
                f"The amount to capture ({amount}) must be less than or equal to the amount capturable "
                f"({capturable}).",
                code="amount_too_large",
                param="amount_to_capture",
            )
        charge = self.require_in(tx, "charge", intent["latest_charge"], "charge")
        charge.update(captured=True, amount_captured=amount, balance_transaction=new_id("txn"))
        self._card(charge)["capture_before"] = None
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self._merge_metadata(intent, metadata)
        self._lapse_no_more(tx, intent_id)
        released = capturable - amount
        if released:
            self._refund(tx, charge, released, reason=None, moved=False, cause="capture", meta=meta)
        self._save(tx, charge, "capture", meta)
        self._save(tx, intent, "capture", meta)
        self._event(tx, "payment_intent.succeeded", intent, meta)
        if released:
            self._event(tx, "charge.refunded", charge, meta)
        return Outcome(200, intent)

    def cancel(
        self, tx: sqlite3.Connection, intent_id: str, reason: str | None, meta: RequestMeta
    ) -> Outcome:
        intent = self.require_in(tx, "payment_intent", intent_id, "intent")
        if intent["status"] not in CANCELABLE:
            raise ApiError(
                400,
                f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. Only a "
                f"PaymentIntent with one of the following statuses may be canceled: {', '.join(CANCELABLE)}.",
                code="payment_intent_unexpected_state",
                extra={"payment_intent": intent},
            )
        if self.faults.chance("void_refused_rate"):
            # A cancel refused whole, nothing changed (the hold stays until it lapses): each ask
            # rolls the dice again, so at rate 1 every ask is refused.
            raise ApiError(
                400,
                f"This PaymentIntent ({intent_id}) could not be canceled now; its authorization "
                "stays in place until it is captured or expires.",
                code="payment_intent_unexpected_state",
                extra={"payment_intent": intent},
            )
        self._void(tx, intent, reason, cause="cancel", meta=meta)
        return Outcome(200, intent)

    def create_refund(
        self,
        tx: sqlite3.Connection,
        *,
        intent_id: str | None,
        charge_id: str | None,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, str],
        meta: RequestMeta,
    ) -> Outcome:
        if intent_id is not None:
            intent = self.require_in(tx, "payment_intent", intent_id, "payment_intent")
            if intent["status"] != "succeeded":
                raise ApiError(
                    400,
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                    code="charge_not_refundable",
                    param="payment_intent",
                )
            charge_id = intent["latest_charge"]
        assert charge_id is not None
        charge = self.require_in(tx, "charge", charge_id, "charge")
        if not charge["captured"]:
            raise ApiError(
                400,
                f"Charge {charge_id} has not been captured; cancel its PaymentIntent to release it.",
                code="charge_not_refundable",
                param="charge",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise ApiError(
                400, f"Charge {charge_id} has already been refunded.", code="charge_already_refunded"
            )
        amount = remaining if amount is None else amount
        if amount > remaining:
            raise ApiError(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                code="amount_too_large",
                param="amount",
            )
        if self.faults.chance("refund_refused_rate"):
            # A refund refused whole, nothing made (as Stripe refuses one of a charge it will not
            # refund): each ask rolls the dice again, so at rate 1 every ask is refused.
            raise ApiError(
                400, f"Charge {charge_id} cannot be refunded.", code="charge_not_refundable", param="charge"
            )
        fails = self._refund_fails(tx, charge)
        refund = self._refund(tx, charge, amount, reason=reason, moved=True, cause="refund", meta=meta)
        refund["metadata"] = metadata
        self._save(tx, refund, "refund", meta)
        self._save(tx, charge, "refund", meta)
        if fails:  # answered succeeded now, failed later (`run_due`)
            tx.execute(
                "UPDATE payment_objects SET expires_at = ? WHERE id = ?",
                (time.time() + self.faults.scaled(REFUND_FAILURE_DELAY_S), refund["id"]),
            )
        self._event(tx, "charge.refunded", charge, meta)
        return Outcome(200, refund)

    def run_due(self) -> float:
        """Worker step: authorizations past their validity are cancelled (`automatic`) and
        released; refunds to a card that refuses them fail; a confirmation `processing` is
        settled (held)."""
        due = self.store.query(
            "SELECT id, object FROM payment_objects WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
            (time.time(), DUE_BATCH),
        )
        for row in due:
            inline: list[str] = []
            with self.store.transaction() as tx:
                self._lapse_no_more(tx, row["id"])
                if row["object"] == "refund":
                    self._fail_refund(tx, row["id"])
                    continue
                intent = self.load_in(tx, "payment_intent", row["id"])
                if intent is not None and intent["status"] == "processing":
                    charge = self.require_in(tx, "charge", intent["latest_charge"], "charge")
                    inline = self._settle(tx, intent, charge, "processed", RequestMeta()).inline_events
                elif intent is not None and intent["status"] == "requires_capture":
                    self._void(tx, intent, "automatic", cause="expire", meta=RequestMeta())
                    Store.bump_in(tx, "outcomes", "authorization_expired")
            self.committed(inline)
        if len(due) == DUE_BATCH:
            return 0.0
        nxt = self.store.query("SELECT MIN(expires_at) AS nxt FROM payment_objects")[0]["nxt"]
        return IDLE_WAIT_S if nxt is None else max(0.0, min(IDLE_WAIT_S, nxt - time.time()))

    def committed(self, inline_events: list[str]) -> None:
        """After the commit: send the early webhooks now, and wake the sender for the others."""
        if self.outbox is None:
            return
        for event_id in inline_events:
            self.outbox.deliver_inline(event_id)
        self.outbox.wake()

    # --- the steps of a change -----------------------------------------------------------
    def _confirm(
        self, tx: sqlite3.Connection, intent: dict[str, Any], card_name: str, cause: str, meta: RequestMeta
    ) -> Outcome:
        card = TEST_CARDS[card_name]
        charge = self._new_charge(intent, card)
        tx.execute(
            "INSERT INTO payment_objects (id, object, created, payment_intent, version, data) "
            "VALUES (?, 'charge', ?, ?, 0, '{}')",
            (charge["id"], charge["created"], intent["id"]),
        )
        intent["latest_charge"] = charge["id"]
        if card.decline_code is not None:
            error = ApiError(
                402,
                DECLINE_MESSAGES[card.decline_code],
                type="card_error",
                code="card_declined",
                decline_code=card.decline_code,
                extra={"charge": charge["id"], "payment_method": {"id": charge["payment_method"]}},
            )
            charge.update(
                status="failed",
                paid=False,
                failure_code="card_declined",
                failure_message=DECLINE_MESSAGES[card.decline_code],
                outcome={
                    "network_status": "declined_by_network",
                    "reason": card.decline_code,
                    "risk_level": "normal",
                    "seller_message": f"The bank returned the decline code `{card.decline_code}`.",
                    "type": "issuer_declined",
                },
            )
            self._card(charge)["capture_before"] = None
            intent.update(
                status="requires_payment_method", payment_method=None, last_payment_error=error.error
            )
            # As at Stripe, a declined method is detached: a later confirm must name one again.
            tx.execute("UPDATE payment_objects SET test_card = NULL WHERE id = ?", (intent["id"],))
            self._save(tx, charge, cause, meta)
            self._save(tx, intent, cause, meta)
            Store.bump_in(tx, "outcomes", f"declined_{card.decline_code}")
            early = self._event(tx, "payment_intent.payment_failed", intent, meta, may_be_early=True)
            return Outcome(402, {"error": {**error.error, "payment_intent": intent}}, early)
        intent.update(payment_method=charge["payment_method"], last_payment_error=None)
        if card.processing:
            # Answered before the bank: `processing`, its charge `pending`, settled by `run_due`.
            charge.update(status="pending", paid=False)
            intent.update(status="processing")
            tx.execute(
                "UPDATE payment_objects SET expires_at = ? WHERE id = ?",
                (time.time() + self.faults.scaled(PROCESSING_DELAY_S), intent["id"]),
            )
            self._save(tx, charge, cause, meta)
            self._save(tx, intent, cause, meta)
            Store.bump_in(tx, "outcomes", "processing")
            return Outcome(200, intent, self._event(tx, "payment_intent.processing", intent, meta))
        return self._settle(tx, intent, charge, cause, meta)

    def _settle(
        self,
        tx: sqlite3.Connection,
        intent: dict[str, Any],
        charge: dict[str, Any],
        cause: str,
        meta: RequestMeta,
    ) -> Outcome:
        """The bank's yes: the amount held (manual capture) or taken."""
        charge.update(status="succeeded", paid=True)
        if intent["capture_method"] == "manual":
            validity_s = self.faults.scaled(AUTHORIZATION_VALIDITY_S)
            self._card(charge)["capture_before"] = self._now() + round(validity_s)
            tx.execute(
                "UPDATE payment_objects SET expires_at = ? WHERE id = ?",
                (time.time() + validity_s, intent["id"]),
            )
            intent.update(status="requires_capture", amount_capturable=intent["amount"])
            event = "payment_intent.amount_capturable_updated"
        else:
            charge.update(captured=True, amount_captured=charge["amount"], balance_transaction=new_id("txn"))
            intent.update(status="succeeded", amount_received=intent["amount"])
            event = "payment_intent.succeeded"
        self._save(tx, charge, cause, meta)
        self._save(tx, intent, cause, meta)
        Store.bump_in(tx, "outcomes", f"authorized_{intent['status']}")
        return Outcome(200, intent, self._event(tx, event, intent, meta, may_be_early=True))

    def _void(
        self,
        tx: sqlite3.Connection,
        intent: dict[str, Any],
        reason: str | None,
        *,
        cause: str,
        meta: RequestMeta,
    ) -> None:
        """Cancel the intent; an authorization it holds is released (a refund that moves no money)."""
        released = intent["amount_capturable"]
        charge = None
        if released:
            charge = self.require_in(tx, "charge", intent["latest_charge"], "charge")
            self._card(charge)["capture_before"] = None
            refund_reason = "expired_uncaptured_charge" if cause == "expire" else None
            self._refund(tx, charge, released, reason=refund_reason, moved=False, cause=cause, meta=meta)
            self._save(tx, charge, cause, meta)
        intent.update(
            status="canceled", canceled_at=self._now(), cancellation_reason=reason, amount_capturable=0
        )
        self._lapse_no_more(tx, intent["id"])
        self._save(tx, intent, cause, meta)
        if charge is not None:
            self._event(tx, "charge.refunded", charge, meta)
        self._event(tx, "payment_intent.canceled", intent, meta)

    def _refund(
        self,
        tx: sqlite3.Connection,
        charge: dict[str, Any],
        amount: int,
        *,
        reason: str | None,
        moved: bool,
        cause: str,
        meta: RequestMeta,
    ) -> dict[str, Any]:
        """A succeeded refund of `amount` on `charge`, saved; `moved` is False for a released hold."""
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": new_id("txn") if moved else None,
            "charge": charge["id"],
            "created": self._now(),
            "currency": charge["currency"],
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
        }
        tx.execute(
            "INSERT INTO payment_objects (id, object, created, payment_intent, charge, version, data) "
            "VALUES (?, 'refund', ?, ?, ?, 0, '{}')",
            (refund["id"], refund["created"], charge["payment_intent"], charge["id"]),
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        if not moved:  # the caller saves a refund it returns, after setting its metadata
            self._save(tx, refund, cause, meta)
        return refund

    def _refund_fails(self, tx: sqlite3.Connection, charge: dict[str, Any]) -> bool:
        """Whether a refund made now of `charge` is to fail: its card refuses refunds, and none of
        the charge's refunds has failed or is due to yet. (At Stripe every refund to the test card
        fails; here one made after a failure succeeds, as once the card's issuer takes it, so
        that what follows a failed refund can be tested to its end.)"""
        card_name = self._card_of(tx, charge["payment_intent"])
        card = TEST_CARDS.get(card_name) if card_name else None
        if card is None or card.refund_failure is None:
            return False
        failed_before = tx.execute(
            "SELECT 1 FROM payment_objects WHERE object = 'refund' AND charge = ? "
            "AND (expires_at IS NOT NULL OR json_extract(data, '$.status') = 'failed') LIMIT 1",
            (charge["id"],),
        ).fetchone()
        return failed_before is None

    def _fail_refund(self, tx: sqlite3.Connection, refund_id: str) -> None:
        """The card refused the refund: it is `failed`, the money is back with the merchant (a
        balance transaction reverses it) and no longer counts in the charge's `amount_refunded`."""
        refund = self.load_in(tx, "refund", refund_id)
        if refund is None or refund["status"] not in ("succeeded", "pending"):
            return
        charge = self.require_in(tx, "charge", refund["charge"], "charge")
        card_name = self._card_of(tx, charge["payment_intent"])
        reason = (TEST_CARDS[card_name].refund_failure if card_name in TEST_CARDS else None) or "unknown"
        previous = {"status": refund["status"], "failure_balance_transaction": None, "failure_reason": None}
        refund.update(status="failed", failure_balance_transaction=new_id("txn"), failure_reason=reason)
        charge["amount_refunded"] -= refund["amount"]
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        meta = RequestMeta()  # nobody asked: the card's bank refused it
        self._save(tx, refund, "refund_failed", meta)
        self._save(tx, charge, "refund_failed", meta)
        # As Stripe announces it: `charge.refund.updated` (sent for some payment methods only) and,
        # for every refund, `refund.updated` and `refund.failed`.
        self._event(tx, "charge.refund.updated", refund, meta, previous=previous)
        self._event(tx, "refund.updated", refund, meta, previous=previous)
        self._event(tx, "refund.failed", refund, meta)
        Store.bump_in(tx, "outcomes", "refund_failed")

    def _new_charge(self, intent: dict[str, Any], card: TestCard) -> dict[str, Any]:
        return {
            "id": new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "captured": False,
            "created": self._now(),
            "currency": intent["currency"],
            "description": intent["description"],
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": {},
            "outcome": IN_REVIEW if card.review else AUTHORIZED,
            "paid": True,
            "payment_intent": intent["id"],
            "payment_method": new_id("pm"),
            "payment_method_details": {
                "type": "card",
                "card": {
                    "brand": card.brand,
                    "capture_before": None,
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": self.clock.now().year + 3,
                    "funding": "credit",
                    "last4": card.last4,
                },
            },
            "refunded": False,
            "review": new_id("prv") if card.review else None,
            "status": "succeeded",
        }

    def _save(self, tx: sqlite3.Connection, obj: dict[str, Any], cause: str, meta: RequestMeta) -> None:
        """The object's next version, and its history row."""
        version = (
            tx.execute("SELECT version FROM payment_objects WHERE id = ?", (obj["id"],)).fetchone()[0] + 1
        )
        data = dumps(obj)
        tx.execute(
            "UPDATE payment_objects SET version = ?, data = ? WHERE id = ?", (version, data, obj["id"])
        )
        tx.execute(
            "INSERT INTO payment_history (object_id, version, at, cause, request_id, idempotency_key, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                obj["id"],
                version,
                to_store(self.clock.now()),
                cause,
                meta.request_id,
                meta.idempotency_key,
                data,
            ),
        )

    def _event(
        self,
        tx: sqlite3.Connection,
        event_type: str,
        obj: dict[str, Any],
        meta: RequestMeta,
        *,
        may_be_early: bool = False,
        previous: dict[str, Any] | None = None,
    ) -> list[str]:
        """Queue a Stripe Event whose `data.object` is the object as it now is (an `*.updated`
        event's `data.previous_attributes`: the changed fields as they were); [its id] if it must be
        sent before the answer (webhook_early)."""
        if self.outbox is None:
            return []
        event_id = new_id("evt")
        payload = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self._now(),
            "data": {"object": obj} if previous is None else {"object": obj, "previous_attributes": previous},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": meta.request_id, "idempotency_key": meta.idempotency_key},
            "type": event_type,
        }
        version = tx.execute("SELECT version FROM payment_objects WHERE id = ?", (obj["id"],)).fetchone()[0]
        inline = self.outbox.enqueue_event(
            tx,
            event_id=event_id,
            subject_id=obj["id"],
            version=version,
            payload=dumps(payload),
            may_be_early=may_be_early,
        )
        return [] if inline is None else [inline]

    @staticmethod
    def _lapse_no_more(tx: sqlite3.Connection, intent_id: str) -> None:
        tx.execute("UPDATE payment_objects SET expires_at = NULL WHERE id = ?", (intent_id,))

    @staticmethod
    def _card_of(tx: sqlite3.Connection, intent_id: str) -> str | None:
        row = tx.execute("SELECT test_card FROM payment_objects WHERE id = ?", (intent_id,)).fetchone()
        return row["test_card"] if row else None

    @staticmethod
    def _card(charge: dict[str, Any]) -> dict[str, Any]:
        return charge["payment_method_details"]["card"]

    @staticmethod
    def _test_card(name: str) -> TestCard:
        card = TEST_CARDS.get(name)
        if card is None:
            raise ApiError(
                400, f"No such PaymentMethod: '{name}'", code="resource_missing", param="payment_method"
            )
        return card

    @staticmethod
    def _payment_method_id(card_name: str | None) -> str | None:
        return None if card_name is None else new_id("pm")

    @staticmethod
    def _check_return_url(automatic: dict[str, Any] | None, return_url: str | None) -> None:
        """Payment methods from the Dashboard may redirect: Stripe wants a return_url, or none of those."""
        if (
            automatic
            and automatic.get("enabled")
            and automatic.get("allow_redirects") != "never"
            and not return_url
        ):
            raise ApiError(
                400,
                "This PaymentIntent is configured to accept payment methods enabled in your Dashboard. "
                "Because some of these payment methods might redirect your customer off of your page, you "
                "must provide a `return_url`. If you don't want to accept redirect-based payment methods, "
                "set `automatic_payment_methods[enabled]` to `true` and "
                "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and "
                "Payment Intents.",
            )

    @staticmethod
    def _merge_metadata(obj: dict[str, Any], changes: dict[str, str] | None) -> None:
        """Stripe's update rule: given keys are set, an empty value removes its key."""
        if changes is None:
            return
        merged = {**obj["metadata"], **changes}
        obj["metadata"] = {key: value for key, value in merged.items() if value != ""}

    def _now(self) -> int:
        return int(self.clock.now().timestamp())
