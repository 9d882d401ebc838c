"""A booking that pays is never confirmed by support while its payment holds no money, and one
confirmed that way (a hold released before the partner confirmed) is said by payment health.

Review: support voided the hold of a booking with support (allowed, with a warning), then retried
it within its deadline; the partner confirmed a stay nobody paid for, and nothing said so.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from bookings.states import BookingState
from partners.models import ReservationStatus
from payments.models import PaymentStatus
from reconciliation.selectors.payment_health import payment_health
from reconciliation.services.support.checks import Situation, outcome_refusal, refusal
from reconciliation.services.support.permissions import RETRY
from tests.factories import PartnerReservationFactory
from tests.reconciliation.paying import paying_booking

S = BookingState
P = PaymentStatus
pytestmark = pytest.mark.django_db
UNPAID = "Its payment holds no money"


def _with_support(payment_status: str, **money):
    payment = paying_booking(status=S.NEEDS_ATTENTION, payment_status=payment_status, **money)
    PartnerReservationFactory(booking=payment.booking, status=ReservationStatus.CONFIRMED)
    return payment.booking


@pytest.mark.parametrize(
    ("payment_status", "money", "refused"),
    [
        (P.AUTHORIZED, {}, False),
        (P.CAPTURED, {}, False),
        (P.CAPTURED, {"refunded": Decimal("100.00")}, False),  # support's goodwill: still paid for
        (P.VOIDED, {}, True),
        (P.LAPSED, {}, True),
        (P.CAPTURED, {"refunded": Decimal("360.00")}, True),
    ],
    ids=["held", "captured", "partly-refunded", "voided", "lapsed", "refunded-in-full"],
)
def test_resolving_to_confirmed_needs_money_held_or_kept(payment_status, money, refused):
    booking = _with_support(payment_status, **money)

    why = outcome_refusal(S.CONFIRMED, Situation(booking))

    assert why.startswith(UNPAID) is refused, why


def test_a_retry_after_the_hold_was_released_is_refused():
    payment = paying_booking(status=S.NEEDS_ATTENTION, payment_status=P.VOIDED)

    assert refusal(RETRY, Situation(payment.booking)).startswith(UNPAID)


def test_a_retry_while_the_hold_is_not_known_yet_says_so():
    payment = paying_booking(status=S.NEEDS_ATTENTION, payment_status=P.UNKNOWN)

    assert refusal(RETRY, Situation(payment.booking)).startswith("Its payment is not held yet (unknown)")


def test_a_retry_while_the_hold_stands_is_not_refused_for_money():
    payment = paying_booking(status=S.NEEDS_ATTENTION, payment_status=P.AUTHORIZED)

    assert not refusal(RETRY, Situation(payment.booking)).startswith(UNPAID)


def test_payment_health_names_confirmed_bookings_whose_payment_holds_no_money():
    released = paying_booking(status=S.CONFIRMED, payment_status=P.VOIDED)
    refunded = paying_booking(status=S.CONFIRMED, payment_status=P.CAPTURED, refunded=Decimal("360.00"))
    paying_booking(status=S.CONFIRMED, payment_status=P.CAPTURED)  # paid
    paying_booking(status=S.CANCELLED, payment_status=P.VOIDED)  # owes nothing

    health = payment_health(probe=False)

    assert sorted(health.unpaid_confirmed) == sorted([released.booking.reference, refunded.booking.reference])
    assert any("holds no money" in problem for problem in health.problems)
    assert health.as_dict()["unpaid_confirmed"] == health.unpaid_confirmed
