"""Money owed back that support paid another way than through the provider.

A refund the card refused after it was made is owed to the customer (`failed_refunds_owed`), and
automation never asks the card again. When the card cannot take money back at all (closed), support
pays the customer another way (a bank transfer) and records it here: what is owed goes down by it
and `refunded_outside` up, so that for the booking at rest captured - refunded - refunded outside
is what it owes. The provider is not asked and knows nothing of it: `refunded_amount` stays the
provider's refunds only, the figure every comparison with the provider reads (the console's pairs,
the day's settlement). The customer is told at once, as any other news of their money.
"""

from __future__ import annotations

from decimal import Decimal

from bookings.models import Actor, Booking
from bookings.timeline import record_event
from payments.models import Payment
from payments.services.observations import booking_follow
from payments.services.runs import schedule


def refund_outside_record(
    *,
    booking: Booking,
    payment: Payment,
    amount: Decimal,
    actor: Actor | str,
    actor_label: str = "",
) -> None:
    """Record `amount` of what failed refunds owe as paid back outside the provider. Call inside
    `atomic()` on the booking and payment from `lock_booking` and `lock_payment`, with no
    operation open (one asked of the provider meanwhile could give the same money back again);
    the caller has checked 0 < amount <= `failed_refunds_owed`."""
    if not 0 < amount <= payment.failed_refunds_owed:
        raise ValueError(f"{amount} is not part of the {payment.failed_refunds_owed} owed back")
    payment.failed_refunds_owed -= amount
    payment.refunded_outside += amount
    payment.save(update_fields=["failed_refunds_owed", "refunded_outside", "updated_at"])
    money = payment.currency
    record_event(
        booking,
        "payment.refunded_outside",
        actor=actor,
        actor_label=actor_label,
        summary=f"{amount} {money} owed back paid to the customer another way (not through the provider): "
        f"{payment.refunded_outside} {money} so in all, {payment.failed_refunds_owed} {money} owed still",
        data={
            "amount": str(amount),
            "currency": money,
            "refunded_outside": str(payment.refunded_outside),
            "owed": str(payment.failed_refunds_owed),
            "refunded": str(payment.refunded_amount),
            "captured": str(payment.captured_amount),
        },
    )
    booking_follow(booking, payment, open_operation=None, actor=actor, actor_label=actor_label)
    schedule(payment, booking)  # owed nothing back any more: at rest, or due if it paid more than it owes
