"""Money owed back that support paid another way than through the provider.

A refund the card refused after it was made is owed to the customer (`failed_refunds_owed`), and
so is one the provider refused every time it was asked (`refused_refunds_owed`, e.g. a charge it
will not refund): automation never asks the card again. When the card cannot take money back at
all (closed), support pays the customer another way (a bank transfer, cash, a voucher or credit)
and records it here: what is owed goes down by it and `refunded_outside` up, so that for the
booking at rest captured - refunded - refunded outside is what it owes. The provider is not
asked and knows nothing of it: `refunded_amount` stays the provider's refunds only, the figure
every comparison with the provider reads (the console's pairs, the day's settlement). The
customer is told at once, as any other news of their money.

Each recording is its `payment.refunded_outside` timeline row, whose data says how it was paid
(`method`, an `OutsideMethod`), who recorded it and, above the approval amount, who approved it:
`outside_refunds` reads them back for the payment panel and the day's settlement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from bookings.models import Actor, Booking, BookingEvent
from bookings.timeline import record_event
from payments.models import OutsideMethod, Payment
from payments.services.observations import booking_follow
from payments.services.runs import schedule

RECORDED_KIND = "payment.refunded_outside"


def method_label(method: str) -> str:
    """The method as people read it ('Bank transfer'); a recording made before the method was
    asked has none."""
    if not method:
        return "not said (recorded before the method was asked)"
    return OutsideMethod(method).label if method in OutsideMethod.values else method


def refund_outside_record(
    *,
    booking: Booking,
    payment: Payment,
    amount: Decimal,
    method: str,
    actor: Actor | str,
    actor_label: str = "",
    recorded_by: str = "",
    approved_by: str = "",
    proposal: int | None = None,
) -> None:
    """Record `amount` of what failed refunds owe as paid back outside the provider, by `method`
    (an `OutsideMethod`). `recorded_by`: who recorded it (default `actor_label`); above the
    approval amount, who proposed it, `approved_by` who approved it and `proposal` which. Call
    inside `atomic()` on the booking and payment from `lock_booking` and `lock_payment`, with no
    operation open (one asked of the provider meanwhile could give the same money back again);
    the caller has checked 0 < amount <= `owed_back`."""
    if not 0 < amount <= payment.owed_back:
        raise ValueError(f"{amount} is not part of the {payment.owed_back} owed back")
    if method not in OutsideMethod.values:
        raise ValueError(f"{method!r} is not a way of paying outside the provider")
    # What failed refunds owe first, then what a refund the provider refused for good owes.
    from_failed = min(amount, payment.failed_refunds_owed)
    payment.failed_refunds_owed -= from_failed
    payment.refused_refunds_owed -= amount - from_failed
    payment.refunded_outside += amount
    payment.save(
        update_fields=["failed_refunds_owed", "refused_refunds_owed", "refunded_outside", "updated_at"]
    )
    money = payment.currency
    how = method_label(method).lower()
    approved = f", approved by {approved_by}" if approved_by else ""
    record_event(
        booking,
        RECORDED_KIND,
        actor=actor,
        actor_label=actor_label,
        summary=f"{amount} {money} owed back paid to the customer another way ({how}, "
        f"not through the provider; recorded by {recorded_by or actor_label}{approved}): "
        f"{payment.refunded_outside} {money} so in all, {payment.owed_back} {money} owed still",
        data={
            "amount": str(amount),
            "currency": money,
            "method": method,
            "recorded_by": recorded_by or actor_label,
            "approved_by": approved_by or None,
            "proposal": proposal,
            "refunded_outside": str(payment.refunded_outside),
            "owed": str(payment.owed_back),
            "refunded": str(payment.refunded_amount),
            "captured": str(payment.captured_amount),
        },
    )
    booking_follow(booking, payment, open_operation=None, actor=actor, actor_label=actor_label)
    schedule(payment, booking)  # owed nothing back any more: at rest, or due if it paid more than it owes


@dataclass(frozen=True)
class OutsideRefund:
    """One recording of money paid back another way, as its timeline row says it."""

    booking: str  # the booking's reference
    amount: Decimal
    currency: str
    method: str  # an OutsideMethod; '' for a recording made before the method was asked
    recorded_by: str  # who recorded it (above the approval amount: who proposed it)
    approved_by: str  # who approved it ('' when it needed nobody)
    proposal: int | None
    at: datetime

    @property
    def method_label(self) -> str:
        return method_label(self.method)

    def as_dict(self) -> dict[str, Any]:
        return {
            "booking": self.booking,
            "amount": str(self.amount),
            "currency": self.currency,
            "method": self.method or None,
            "recorded_by": self.recorded_by,
            "approved_by": self.approved_by or None,
            "proposal": self.proposal,
            "at": self.at.isoformat(),
        }


def outside_refunds(
    *, booking: Booking | None = None, start: datetime | None = None, end: datetime | None = None
) -> list[OutsideRefund]:
    """The recordings of money paid back another way, oldest first: of one booking, and/or those
    recorded in [start, end)."""
    rows = BookingEvent.objects.filter(kind=RECORDED_KIND).select_related("booking")
    if booking is not None:
        rows = rows.filter(booking=booking)
    if start is not None:
        rows = rows.filter(occurred_at__gte=start)
    if end is not None:
        rows = rows.filter(occurred_at__lt=end)
    found = []
    for row in rows.order_by("occurred_at", "id"):
        data = row.data or {}
        found.append(
            OutsideRefund(
                booking=row.booking.reference,
                amount=Decimal(data.get("amount") or "0.00"),
                currency=data.get("currency") or row.booking.currency,
                method=data.get("method") or "",
                recorded_by=data.get("recorded_by") or row.actor_label,
                approved_by=data.get("approved_by") or "",
                proposal=data.get("proposal"),
                at=row.occurred_at,
            )
        )
    return found
