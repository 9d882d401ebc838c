"""A capture or void whose answer was lost is read, and closed as the read shows: not made when
the intent shows the step never happened, never "succeeded". The next step is then decided at
once under a new key, as before. Played by hand against the real provider: its key keeps the 500
of a request that failed before its change, so asking again replays it and only a read tells."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from bookings.models import Booking, BookingEvent
from bookings.states import BookingState
from payments.models import OperationState, PaymentOperation, PaymentStatus
from payments.services import runs
from tests.payments.conftest import payment_of

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
NEVER_HAPPENED = (
    ": not made: its one call provably did nothing; decided again"
    " (the provider shows it never happened: its intent is requires_capture)"
)


def operations(booking) -> list[tuple[str, int, str, bool]]:
    return list(
        PaymentOperation.objects.filter(payment__booking=booking)
        .order_by("opened_at", "id")
        .values_list("kind", "seq", "state", "answer_lost")
    )


@pytest.mark.parametrize(
    ("step", "ends", "money"),
    [("capture", S.CONFIRMED, P.CAPTURED), ("void", S.CANCELLED, P.VOIDED)],
)
def test_a_step_whose_lost_answer_a_read_shows_never_made_is_closed_not_made_and_asked_anew(
    step, ends, money, paying_idle
):
    # Given a booking whose money is held, then confirmed (a capture owed) or cancelled before
    # the partner confirmed (a void owed)
    booking = paying_idle.book()
    runs.payment_run(booking.pk)
    assert payment_of(booking).status == P.AUTHORIZED
    confirmed = timezone.now() if ends == S.CONFIRMED else None
    Booking.objects.filter(pk=booking.pk).update(status=ends, confirmed_shown_at=confirmed)

    # When the step's first call fails before its change and the provider keeps that 500 under
    # its key: asked again, the key replays it (the answer lost), so the next try reads the intent
    paying_idle.provider.set_faults(error_500_saved_rate=1)
    runs.payment_run(booking.pk)
    paying_idle.provider.set_faults(error_500_saved_rate=0)
    runs.payment_run(booking.pk)  # the replayed 500
    runs.payment_run(booking.pk)  # the read, then the step under a new key

    # Then the read closed the first operation as not made, saying what it showed, and the step
    # was made once, under the second key
    assert operations(booking)[1:] == [
        (step, 1, OperationState.NOT_MADE, True),
        (step, 2, OperationState.SUCCEEDED, False),
    ]
    first = PaymentOperation.objects.get(payment__booking=booking, kind=step, seq=1)
    assert first.last_error == "the provider shows it never happened: its intent is requires_capture"
    rows = list(
        BookingEvent.objects.filter(booking=booking, data__idempotency_key=first.idempotency_key)
        .order_by("occurred_at", "id")
        .values_list("kind", "summary")
    )
    assert rows[-1][0] == f"payment.{step}.read", rows
    assert rows[-1][1].endswith(NEVER_HAPPENED), rows
    assert payment_of(booking).status == money
    [intent] = paying_idle.intents(booking)
    captured = 36_000 if step == "capture" else 0
    assert (intent["status"], intent["amount_received"]) == (
        "succeeded" if step == "capture" else "canceled",
        captured,
    )
    assert payment_of(booking).captured_amount == Decimal(captured) / 100
