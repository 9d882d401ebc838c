"""A provider 500 replayed under its key leaves the call's outcome indeterminate: Stripe reconciles
such a request afterwards, and what it made may appear later, with its webhook. A read that finds
nothing then proves nothing until PAYMENTS_SERVER_ERROR_GRACE_S has passed: the operation stays
open and the payment fenced, read again, and whatever appears closes it. Concluding "not made" at
once asked again under a new key: a second refund, or a second hold. Against the real provider
(`error_500_reconciled_rate`: the 500 kept under the key, the change made a few seconds later)
and a real worker. A 500 after which nothing ever appears is concluded "not made" after the
grace (`tests/payments/test_faults.py`, a refund whose saved 500 made nothing)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bookings.services import booking_request_cancel
from bookings.states import BookingState
from payments.models import OperationKind, OperationState, PaymentOperation, PaymentStatus
from tests.helpers import wait_until
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import assert_money_at_rest, money_code, payment_of, wait_for_money

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PRICE = Decimal("360.00")
LATE_S = 8  # the provider makes the change this long after its 500: several of our reads find nothing


def operations(booking, kind: str) -> list[tuple[int, str, bool]]:
    return list(
        PaymentOperation.objects.filter(payment__booking=booking, kind=kind)
        .order_by("opened_at", "id")
        .values_list("seq", "state", "answer_lost")
    )


def tried(booking, kind: str) -> bool:
    return PaymentOperation.objects.filter(payment__booking=booking, kind=kind, tries__gte=1).exists()


def read_found_nothing(booking, kind: str) -> PaymentOperation | None:
    """The operation, once a read of it found nothing made (its last word says it is in doubt)."""
    return PaymentOperation.objects.filter(
        payment__booking=booking, kind=kind, last_error__startswith="nothing made found yet"
    ).first()


@pytest.fixture
def quick(settings):
    settings.PAYMENTS_RETRY_BASE_S = 0.5
    settings.PAYMENTS_RETRY_MAX_S = 2.0
    return settings


def test_a_refund_the_provider_makes_after_its_500_is_made_once_and_counted_once(paying, quick):
    booking = paying.book()
    wait_for_money(booking, "charged")
    paying.provider.set_faults(error_500_reconciled_rate=1, error_500_reconciled_delay_s=[LATE_S, LATE_S])

    booking_request_cancel(booking_id=booking.pk, actor="customer")  # free: refunded in full
    wait_until(lambda: tried(booking, OperationKind.REFUND), what="the first refund", timeout_s=15)
    paying.provider.set_faults(error_500_reconciled_rate=0)

    # The key replays its 500 and a read finds nothing made: in doubt, not "not made". The refund
    # stays open (fenced: no second refund is asked) and the customer is told no refund yet.
    operation = wait_until(lambda: read_found_nothing(booking, OperationKind.REFUND), what="an empty read")
    assert (operation.state, operation.answer_lost, operation.key_spent) == (OperationState.OPEN, True, True)
    [intent] = paying.intents(booking)
    assert paying.provider.refunds(intent["id"]) == []
    assert money_code(booking) == "charged"
    assert payment_of(booking).next_check_at is not None  # the sweeper reads it again if no run does

    # Then the provider makes it (with its webhook): the next read finds it and closes the operation
    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "refunded", timeout_s=40)
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="refunded")
    [made] = paying.provider.refunds(intent["id"])
    assert made["amount"] == 36_000 and made["metadata"]["operation"].endswith(":refund:1")
    assert operations(booking, OperationKind.REFUND) == [(1, OperationState.SUCCEEDED, True)]
    assert payment_of(booking).refunded_amount == PRICE  # counted once


def test_an_authorization_the_provider_makes_after_its_500_is_one_hold(paying, quick):
    paying.provider.set_faults(error_500_reconciled_rate=1, error_500_reconciled_delay_s=[LATE_S, LATE_S])
    booking = paying.book()
    wait_until(lambda: tried(booking, OperationKind.AUTHORIZE), what="the first authorization")
    paying.provider.set_faults(error_500_reconciled_rate=0)

    # A read found no intent yet: the payment stays unknown (fenced), never released to a new key
    operation = wait_until(lambda: read_found_nothing(booking, OperationKind.AUTHORIZE), what="an empty read")
    assert (operation.state, operation.key_spent) == (OperationState.OPEN, True)
    assert payment_of(booking).status == P.UNKNOWN
    assert money_code(booking) == "authorizing"
    assert paying.intents(booking) == []

    # The intent appears (its hold, its webhook): read, authorized, and the booking goes on
    wait_for_status(booking, S.CONFIRMED, timeout_s=40)
    wait_for_money(booking, "charged", timeout_s=30)
    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    [intent] = paying.intents(booking)
    assert intent["amount_received"] == 36_000
    assert operations(booking, OperationKind.AUTHORIZE) == [(1, OperationState.SUCCEEDED, True)]
