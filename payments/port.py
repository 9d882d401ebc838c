"""The payments app's implementation of the booking core's payment port (bookings/ports.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.payment_facts import PaymentFacts
from bookings.pricing import amount_text
from config.errors import ValidationFailed
from payments import decisions, messages
from payments.models import Payment
from payments.money import BelowMinimumCharge, RefusedAmount, charge_minor
from payments.services.runs import booking_facts, money_at_cancel, payment_run_and_follow_up


class DramatiqPaymentPort:
    def payment_for(self, booking: Booking, *, payment_method: str) -> tuple[Payment, PaymentFacts]:
        """Due at once: if the run queued after commit is lost, the sweeper runs it. A price the
        provider cannot charge (not a whole number of the currency's unit, out of range, or below
        its minimum charge) is refused here, before anything is stored: asked, it would end as a
        card decline although the card is fine."""
        try:
            charge_minor(booking.total_price, booking.currency)
        except RefusedAmount as refused:
            price = amount_text(booking.total_price, booking.currency)
            why = f"{price} cannot be paid by card."
            if isinstance(refused, BelowMinimumCharge):
                currency, least = booking.currency, amount_text(refused.minimum, booking.currency)
                why = f"{price} cannot be paid by card: a card payment in {currency} is at least {least}."
            raise ValidationFailed(
                "This price cannot be paid by card.", code="not_payable", fields={"payment_method": [why]}
            ) from refused
        payment = Payment(
            booking=booking,
            amount=booking.total_price,
            currency=booking.currency,
            payment_method=payment_method,
            next_check_at=timezone.now() + timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S),
        )
        facts = PaymentFacts(state="authorizing", currency=booking.currency, amount=booking.total_price)
        return payment, facts

    def mark_due(self, booking_id: UUID) -> None:
        Payment.objects.filter(booking_id=booking_id).update(
            next_check_at=timezone.now() + timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S)
        )

    def queue_run(self, booking_id: UUID) -> None:
        messages.send_run(booking_id)

    def run_now(self, booking_id: UUID) -> None:
        payment_run_and_follow_up(booking_id)

    def owed(self, booking: Booking) -> Decimal | None:
        return decisions.owed(booking_facts(booking))

    def money_at_cancel(
        self, booking: Booking, *, ending: str, actor: Actor | str, actor_label: str
    ) -> PaymentFacts | None:
        return money_at_cancel(booking, ending=ending, actor=actor, actor_label=actor_label)
