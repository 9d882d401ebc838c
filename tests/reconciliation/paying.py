"""Bookings that pay, for the support tests of payments: a payment row as a test states it, or one
the payments app's own run authorized (and captured) at a real provider process."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.utils import timezone

from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Booking, BookingEvent
from bookings.states import BookingState
from payments.models import Payment, PaymentStatus
from payments.services.runs import payment_run
from tests.factories import BookingFactory

S = BookingState
P = PaymentStatus
PRICE = Decimal("360.00")
_FACT = {P.AUTHORIZED: "held", P.CAPTURED: "charged", P.PENDING: "authorizing", P.VOIDED: "released"}


def paying_booking(
    *,
    status: str = S.CONFIRMED,
    payment_status: str = P.CAPTURED,
    price: Decimal = PRICE,
    captured: Decimal | None = None,
    refunded: Decimal = Decimal("0.00"),
    booking_fields: dict | None = None,
    currency: str = "EUR",
    **payment_fields,
) -> Payment:
    """A booking (with `booking_fields`) and its payment in `currency` as the test states them (no
    provider is asked)."""
    facts = PaymentFacts(state=_FACT.get(payment_status, "authorizing"), currency=currency, amount=price)
    booking = BookingFactory(
        status=status,
        total_price=price,
        currency=currency,
        customer_money=money_of(facts).as_json(),
        **(booking_fields or {}),
    )
    if captured is None:
        captured = price if payment_status == P.CAPTURED else Decimal("0.00")
    payment_fields.setdefault("provider_intent_id", f"pi_{uuid.uuid4().hex[:24]}")
    return Payment.objects.create(
        booking=booking,
        amount=price,
        currency=currency,
        payment_method="pm_card_visa",
        status=payment_status,
        captured_amount=captured,
        refunded_amount=refunded,
        **payment_fields,
    )


def paid_at_provider(
    *, capture: bool = True, price: Decimal = PRICE, method: str = "pm_card_visa"
) -> Payment:
    """A booking whose payment the payments app's own run authorized at the provider (the booking
    then moves to requested); confirmed by the partner, as the test says; and, with `capture`,
    captured by the run that follows the confirmation. Needs a transactional database (the run
    calls outside any transaction) and the `provider` fixture."""
    facts = PaymentFacts(state="authorizing", currency="EUR", amount=price)
    booking = BookingFactory(
        status=S.AWAITING_PAYMENT, total_price=price, customer_money=money_of(facts).as_json()
    )
    payment = Payment.objects.create(booking=booking, amount=price, currency="EUR", payment_method=method)
    payment_run(booking.pk)
    payment.refresh_from_db()
    assert payment.status == P.AUTHORIZED, payment.status
    Booking.objects.filter(pk=booking.pk).update(status=S.CONFIRMED, confirmed_shown_at=timezone.now())
    if capture:
        payment_run(booking.pk)
        payment.refresh_from_db()
        assert payment.status == P.CAPTURED, payment.status
    return Payment.objects.select_related("booking").get(pk=payment.pk)


def kinds(booking: Booking) -> list[str]:
    return list(
        BookingEvent.objects.filter(booking=booking)
        .order_by("occurred_at", "id")
        .values_list("kind", flat=True)
    )


def support_rows(booking: Booking) -> list[BookingEvent]:
    return list(BookingEvent.objects.filter(booking=booking, kind__startswith="support.").order_by("id"))
