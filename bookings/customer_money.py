"""What a customer is told about their money (docs/design.md, "Money"): the payments app states
what its provider holds for a booking (`PaymentFacts`), this module words it (`money_of`) as a
`CustomerMoney` code with the amounts told (`Money`). `customer_view` stores it with the rest of
the view; the pages, the API, the mails and the cancel rules read it back from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from bookings import ports
from bookings.models import Booking
from bookings.payment_facts import PaymentFacts
from bookings.pricing import amount_text
from bookings.states import (
    CHARGE_UNKNOWN_OF_PART,
    REFUND_FAILED_PARTLY_PAID_BACK,
    RELEASE_REFUSED_NO_LAPSE,
    CustomerMoney,
)

MONEY = CustomerMoney


@dataclass(frozen=True)
class Money:
    """What the customer is told about their money: a `CustomerMoney` code and its amounts."""

    code: str
    currency: str
    amount: Decimal
    charged: Decimal
    refunded: Decimal
    # Refunded, then refused by the card: still owed (stored only when there is some).
    refund_failed: Decimal = Decimal(0)
    # Paid back another way than to the card, the card having refused it (stored only when some).
    refunded_outside: Decimal = Decimal(0)
    # When a hold the provider would not release lapses (`release_refused` only; stored only then).
    lapses_at: datetime | None = None
    # What a charge in doubt asked to take of the hold when it is only part of it (a cancel's fee;
    # `charge_unknown` only, stored only then): None, the whole hold.
    charging: Decimal | None = None

    @property
    def charge_asked(self) -> Decimal:
        """What the charge in doubt asked for: `charging`, or else the whole hold (as a view kept
        before `charging` was, and told so, asked too)."""
        return self.amount if self.charging is None else self.charging

    @property
    def paid(self) -> Decimal:
        """What the customer paid in the end: charged, less what went back to them."""
        return self.charged - self.refunded - self.refunded_outside

    @property
    def text(self) -> str:
        def shown(value: Decimal) -> str:
            return amount_text(value, self.currency)

        words = CustomerMoney(self.code).label
        if self.code == CustomerMoney.REFUND_FAILED and self.refunded_outside > 0:
            words = REFUND_FAILED_PARTLY_PAID_BACK
        if self.code == CustomerMoney.RELEASE_REFUSED and self.lapses_at is None:
            words = RELEASE_REFUSED_NO_LAPSE
        if self.code == CustomerMoney.CHARGE_UNKNOWN and self.charge_asked < self.amount:
            words = CHARGE_UNKNOWN_OF_PART
        return words.format(
            amount=shown(self.amount),
            charging=shown(self.charge_asked),
            charged=shown(self.charged),
            refunded=shown(self.refunded),
            paid=shown(self.paid),
            refund_failed=shown(self.refund_failed),
            refunded_outside=shown(self.refunded_outside),
            lapses=shown_at(self.lapses_at) if self.lapses_at is not None else "",
        )

    def as_json(self) -> dict[str, str]:
        told = {
            "code": self.code,
            "currency": self.currency,
            "amount": str(self.amount),
            "charged": str(self.charged),
            "refunded": str(self.refunded),
        }
        if self.refund_failed:
            told["refund_failed"] = str(self.refund_failed)
        if self.refunded_outside:
            told["refunded_outside"] = str(self.refunded_outside)
        if self.lapses_at is not None:
            told["lapses_at"] = self.lapses_at.isoformat()
        if self.charging is not None:
            told["charging"] = str(self.charging)
        return told

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Money | None:
        if not data:
            return None
        return cls(
            code=data["code"],
            currency=data["currency"],
            amount=Decimal(data["amount"]),
            charged=Decimal(data["charged"]),
            refunded=Decimal(data["refunded"]),
            refund_failed=Decimal(data.get("refund_failed", "0")),
            refunded_outside=Decimal(data.get("refunded_outside", "0")),
            lapses_at=datetime.fromisoformat(data["lapses_at"]) if data.get("lapses_at") else None,
            charging=Decimal(data["charging"]) if data.get("charging") else None,
        )


_MONEY_OF_STATE = {
    "authorizing": MONEY.AUTHORIZING,
    "held": MONEY.HELD,
    "held_in_review": MONEY.HELD_IN_REVIEW,
    "charge_unknown": MONEY.CHARGE_UNKNOWN,
    "released": MONEY.RELEASED,
    "lapsed": MONEY.LAPSED,
    "release_refused": MONEY.RELEASE_REFUSED,
    "declined": MONEY.DECLINED,
    "refused": MONEY.METHOD_REFUSED,
    "needs_action": MONEY.NEEDS_ACTION,
    "not_charged": MONEY.NOT_CHARGED,
}


# Money held on the card and not charged, whatever else the provider says of it.
MONEY_HELD = frozenset({MONEY.HELD, MONEY.HELD_IN_REVIEW})


def money_of(facts: PaymentFacts) -> Money:
    """The words for what the provider holds: exactly what happened, never what will. A refund
    the card refused, still owed, is said before anything else of a charge: it is what the
    customer must know (and support's to settle); once support paid it all back another way,
    that is said instead: "we still owe you" would no longer be true."""
    if facts.state == "charged":
        if facts.refund_failed > 0:
            code = MONEY.REFUND_FAILED
        elif facts.refunded_outside > 0:
            code = MONEY.REFUNDED_OUTSIDE
        elif facts.refunded <= 0:
            code = MONEY.CHARGED
        elif facts.refunded >= facts.charged:
            code = MONEY.REFUNDED
        else:
            code = MONEY.PARTLY_REFUNDED
    else:
        code = _MONEY_OF_STATE[facts.state]
    refund_failed = facts.refund_failed if code == MONEY.REFUND_FAILED else Decimal(0)
    outside = facts.refunded_outside if facts.state == "charged" else Decimal(0)
    lapses_at = facts.lapses_at if code == MONEY.RELEASE_REFUSED else None
    # Only part of the hold: the whole hold's charge is told as it always was, and kept so.
    part = code == MONEY.CHARGE_UNKNOWN and facts.charging is not None and facts.charging < facts.amount
    charging = facts.charging if part else None
    return Money(
        code,
        facts.currency,
        facts.amount,
        facts.charged,
        facts.refunded,
        refund_failed,
        outside,
        lapses_at,
        charging,
    )


def shown_at(moment: datetime) -> str:
    """A moment as the customer's pages and mails show one (in UTC)."""
    utc = moment.astimezone(UTC)
    return f"{utc.day} {utc:%b %Y, %H:%M} UTC"


def money_shown(booking: Booking) -> Money | None:
    return Money.from_json(booking.customer_money)


# Charged, and no refund refused since: what was paid beyond what is owed is refunded by automation.
_REFUNDABLE = frozenset({MONEY.CHARGED, MONEY.PARTLY_REFUNDED})


def refund_due(booking: Booking, money: Money | None) -> Decimal:
    """What the booking's charge still has to give back to the card: what was paid beyond what
    the booking owes (`ports.money_owed`, the payment side's own rule, `payments.decisions.owed`),
    from the move that decided it (a cancel's confirmation, the partner taking a confirmed booking
    back, support ending it) until the refund is answered: a cancelled one's beyond the fee its
    cancel fixed; one that will not go ahead, all of it. Zero while what it owes is not decided,
    and for money that is not a charge automation refunds. No query: the customer's pages and
    mails say it ("are refunding") and keep following it before the provider has even been
    asked."""
    if money is None or money.code not in _REFUNDABLE:
        return Decimal(0)
    owed = ports.money_owed(booking)
    if owed is None:
        return Decimal(0)
    return max(money.paid - owed, Decimal(0))
