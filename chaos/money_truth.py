"""The money side of a chaos run's snapshot: our payment rows of the run's bookings and the
payment provider's ground truth (`/_sandbox/ground_truth` of the sandbox's `payments` profile),
as plain records the money checks (`chaos.checks.money`) judge."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

ZERO = Decimal("0.00")
# What the booking's final state owes (docs/design.md, "Money"), spelled out here on purpose: the
# checks are an oracle of their own, not the product's rule read back.
OWE_NOTHING = frozenset({"rejected", "failed", "expired"})
ENDS = OWE_NOTHING | {"cancelled"}
PARTNER_TOOK_IT_BACK = frozenset({"partner_cancelled_confirmed", "partner_lost_reservation"})
# Refusals of a step in a row after which it is left to support: the run pins the product's
# PAYMENTS_REFUSED_MAX_TRIES to it (`chaos.payments`), so a refund or a release refused for good
# was refused at least this many times.
REFUSED_MAX_TRIES = 2


@dataclass(frozen=True)
class PaymentRow:
    """Our payment of one booking, and the booking's facts that decide what it owes."""

    booking: str  # the booking's reference
    payment: str  # our payment's id (the intent's metadata.payment)
    status: str
    amount: Decimal  # the price asked for
    currency: str
    captured: Decimal
    refunded: Decimal
    provider_intent: str
    booking_status: str
    attention_reason: str = ""
    confirmed_ever: bool = False  # the booking reached confirmed at some time
    cancellation_fee: Decimal | None = None  # fixed when a cancel of the confirmed booking was asked
    # With support, the state its timeline's latest move into needs_attention came from: an end
    # (support took up a stray reservation of an ended booking) owes what that end owes.
    attention_from: str = ""
    next_check_at: datetime | None = None  # our next look at the payment
    # Owed after a refund the card refused, paid back by support another way: given back, though
    # the provider never saw it (so not in its refunds, nor in ours compared with them).
    refunded_outside: Decimal = ZERO
    # A refund the provider refused every time it was asked, kept owed to the customer and left to
    # support (ours alone: never made, so in no total of the provider's), and the idempotency keys
    # of our refund operations the provider refused.
    refused_refunds_owed: Decimal = ZERO
    refund_refusals: tuple[str, ...] = ()
    # A hold the provider refused to release every time it was asked, of a booking that owes
    # nothing, left to support (`Payment.release_refused`), and the idempotency keys of our void
    # operations the provider refused.
    release_refused: bool = False
    void_refusals: tuple[str, ...] = ()

    def owed(self) -> Decimal | None:
        """What the booking owes at rest; None while that is not decided."""
        status = self.booking_status
        if status == "needs_attention" and self.attention_from in ENDS:
            status = self.attention_from  # the customer's booking had ended: support's stray is not it
        if status == "confirmed":
            return self.amount
        if status == "cancelled":
            return self.cancellation_fee or ZERO
        if status in OWE_NOTHING:
            return ZERO
        if status == "needs_attention" and self.confirmed_ever:
            return ZERO if self.attention_reason in PARTNER_TOOK_IT_BACK else None
        return None

    def excerpt(self) -> str:
        fee = "-" if self.cancellation_fee is None else f"{self.cancellation_fee}"
        return (
            f"payment {self.payment} {self.status} {self.amount} {self.currency}: captured {self.captured}, "
            f"refunded {self.refunded}, intent {self.provider_intent or '-'}; booking {self.booking_status}"
            f"{' from ' + self.attention_from if self.attention_from else ''}"
            f"{' (' + self.attention_reason + ')' if self.attention_reason else ''}, "
            f"{'confirmed once' if self.confirmed_ever else 'never confirmed'}, fee {fee}"
            + (
                f"; owed back, refused for good {self.refused_refunds_owed} (refund operations refused: "
                f"{', '.join(self.refund_refusals) or 'none'})"
                if self.refused_refunds_owed or self.refund_refusals
                else ""
            )
            + (
                f"; release {'refused for good' if self.release_refused else 'not given up'} "
                f"(void operations refused: {', '.join(self.void_refusals) or 'none'})"
                if self.release_refused or self.void_refusals
                else ""
            )
        )


@dataclass(frozen=True)
class ProviderIntent:
    """A PaymentIntent as the provider holds it, amounts in minor units."""

    id: str
    payment: str
    booking: str
    status: str
    amount: int
    amount_received: int
    history: tuple[str, ...] = ()
    lapses_at: datetime | None = None  # a live hold's lapse (the sandbox's own fact)
    # The idempotency keys of the requests that changed it, as its history names them.
    changed_by: frozenset[str] = frozenset()

    @classmethod
    def from_truth(cls, data: dict[str, Any]) -> ProviderIntent:
        metadata = data.get("metadata") or {}
        return cls(
            id=data["id"],
            payment=str(metadata.get("payment", "")),
            booking=str(metadata.get("booking", "")),
            status=data["status"],
            amount=int(data["amount"]),
            amount_received=int(data.get("amount_received") or 0),
            lapses_at=_when((data.get("sandbox") or {}).get("authorization_lapses_at")),
            history=tuple(
                f"{h['at']} v{h['version']} {h['cause']} → {h['object'].get('status')}"
                f" received {h['object'].get('amount_received', 0)}"
                f"{' key ' + h['idempotency_key'] if h.get('idempotency_key') else ''}"
                for h in data.get("history") or []
            ),
            changed_by=frozenset(
                str(h["idempotency_key"]) for h in data.get("history") or [] if h.get("idempotency_key")
            ),
        )

    def excerpt(self) -> str:
        return f"intent {self.id} {self.status} amount {self.amount} received {self.amount_received}"


@dataclass(frozen=True)
class ProviderRefund:
    """A refund as the provider holds it; `moved` is False for a hold's release (no money moved),
    `failed` True for one the card refused after it was made (the money came back to us)."""

    id: str
    payment_intent: str
    amount: int
    moved: bool
    operation: str  # our operation's key (metadata.operation)
    created: int = 0
    failed: bool = False

    @property
    def given_back(self) -> bool:
        """Money that reached the customer: a refund that moved money and did not fail."""
        return self.moved and not self.failed

    @classmethod
    def from_truth(cls, data: dict[str, Any]) -> ProviderRefund:
        return cls(
            id=data["id"],
            payment_intent=data["payment_intent"],
            amount=int(data["amount"]),
            moved=data.get("balance_transaction") is not None,
            operation=str((data.get("metadata") or {}).get("operation", "")),
            created=int(data.get("created") or 0),
            failed=data.get("status") in ("failed", "canceled"),
        )

    def excerpt(self) -> str:
        kind = ("failed refund" if self.failed else "refund") if self.moved else "release"
        return f"{kind} {self.id} of {self.payment_intent}: {self.amount} (operation {self.operation or '-'})"


@dataclass(frozen=True)
class MoneyTruth:
    """Our payment rows of the run's bookings and the provider's ground truth."""

    payments: tuple[PaymentRow, ...]
    intents: tuple[ProviderIntent, ...]
    refunds: tuple[ProviderRefund, ...]
    # The HTTP status the provider saved under each idempotency key: the answer it gave (and
    # replays) for the one request the key stands for.
    answers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_ground_truth(cls, payments: list[PaymentRow], truth: dict[str, Any]) -> MoneyTruth:
        return cls(
            payments=tuple(payments),
            intents=tuple(ProviderIntent.from_truth(i) for i in truth.get("payment_intents", [])),
            refunds=tuple(ProviderRefund.from_truth(r) for r in truth.get("refunds", [])),
            answers={
                str(k["key"]): int(k["status"])
                for k in truth.get("idempotency_keys", [])
                if k.get("status") is not None
            },
        )

    def intents_of(self, payment: str) -> list[ProviderIntent]:
        return [i for i in self.intents if i.payment == payment]

    def refunds_of(self, intent: str) -> list[ProviderRefund]:
        return [r for r in self.refunds if r.payment_intent == intent]


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
