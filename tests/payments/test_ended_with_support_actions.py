"""Support's actions on a booking that had ended before support took it up (`ended_with_support`):
a cancelled booking, charged 360.00 EUR and refunded all but its 90.00 EUR fee, whose stray
reservation the partner would not cancel. Support's job is only that stray: cancel it, verify it,
and the booking returns to cancelled (`return_to_end`), never to another state. Before, "send
again" re-submitted a booking its customer had cancelled, compensate failed it (its fee dropped,
so automation refunded the fee the customer agreed to), support's cancel showed it `cancelling`
again, and resolve could make it `failed`.

Through the production path: the real payment provider and partner sandboxes, the booking, the
partner's webhook, the compensation giving up and flagging, support's services, and a real worker
cancelling and verifying the stray.
"""

from __future__ import annotations

import pytest
import requests

from bookings.models import Booking, BookingEvent, Notification
from bookings.states import BookingState
from config.errors import InvalidTransition
from partners.models import PartnerReservation
from partners.services.sync import booking_sync
from payments.services.runs import payment_run
from reconciliation.services import support
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.payments.conftest import Paying, assert_money_at_rest, money_code
from tests.payments.test_ended_with_support_money import (
    FEE,
    REFUNDED,
    cancelled,
    confirmed_and_charged,
    status_of,
    stray_flagged,
    told,
)

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
# What the customer was shown and mailed, and what they owe: none of it moves through support's hands.
SEEN = ("customer_status", "customer_message", "status_version", "customer_money", "cancellation_fee")


def seen(booking: Booking) -> dict:
    return Booking.objects.values(*SEEN).get(pk=booking.pk)


def mails(booking: Booking) -> int:
    return Notification.objects.filter(booking=booking).count()


def refunded_then_flagged(p: Paying, settings) -> tuple[Booking, PartnerReservation]:
    """The customer cancelled their confirmed, charged booking (a fee of 90.00 EUR), was refunded
    the rest, and then the partner's stray of it would not be cancelled: support has it."""
    booking = cancelled(p, confirmed_and_charged(p))
    payment_run(booking.pk)  # the cancel's run: the refund less the fee
    stray = stray_flagged(p, booking, settings)
    payment_run(booking.pk)  # the flag's run: nothing more to do
    assert money_code(booking) == "partly_refunded"
    assert told(booking).startswith(REFUNDED)
    return Booking.objects.get(pk=booking.pk), stray


def act(action: str, booking: Booking, operator: support.Operator, **kwargs) -> support.ActionResult:
    return support.support_action_run(
        action, booking_id=booking.pk, operator=operator, token=support.new_token(), note="checked", **kwargs
    )


def assert_refused(action: str, booking: Booking, operator, *, saying: str, **kwargs) -> None:
    before, events = seen(booking), BookingEvent.objects.filter(booking=booking).count()
    with pytest.raises(InvalidTransition) as refused:
        act(action, booking, operator, **kwargs)
    assert saying in refused.value.message, refused.value.message
    assert status_of(booking) == S.NEEDS_ATTENTION
    assert seen(booking) == before
    assert BookingEvent.objects.filter(booking=booking).count() == events


def assert_back_to_cancelled_as_the_customer_saw_it(p: Paying, booking: Booking, before: dict, sent: int):
    booking.refresh_from_db()
    assert (booking.status, booking.attention_from, booking.attention_reason) == (S.CANCELLED, "", "")
    assert seen(booking) == before  # the view, its number, the money told, the fee: all as they were
    assert booking.cancellation_fee == FEE
    assert mails(booking) == sent  # no new mail
    payment_run(booking.pk)  # whatever the move owes the money: nothing
    assert_money_at_rest(p, booking, owed=FEE, code="partly_refunded")
    [intent] = p.intents(booking)
    assert len(p.provider.refunds(intent["id"])) == 1  # refunded once, less the fee
    assert told(booking).startswith(REFUNDED)


def let_go_at_the_partner(p: Paying, booking: Booking, stray: PartnerReservation) -> None:
    """The partner lets the stray go after all, as a sync learns; our cancel of it never verified."""
    p.h.faults(rate_limit_rate=0)
    requests.post(
        f"{p.h.sandbox.base_url}/v1/reservations/{stray.partner_ref}/cancel",
        headers=p.h.sandbox.auth,
        timeout=5,
    ).raise_for_status()
    booking_sync(booking.pk)
    stray.refresh_from_db()
    assert (stray.status, stray.compensated_at) == ("cancelled", None)
    assert status_of(booking) == S.NEEDS_ATTENTION  # support has it until its cancel is verified


def test_support_only_returns_a_cancelled_booking_whose_stray_is_gone_to_cancelled(paying_idle, settings):
    p = paying_idle
    operator = support.Operator.for_user(UserFactory(is_staff=True, is_superuser=True))
    booking, stray = refunded_then_flagged(p, settings)
    let_go_at_the_partner(p, booking, stray)
    before, sent = seen(booking), mails(booking)

    # then nothing support may do sends it again, cancels it again, or ends it another way
    ended = "The customer's booking had ended (cancelled) before support took it up"
    assert_refused(support.CANCEL, booking, operator, saying=ended, expected_fee=FEE)
    assert_refused(support.RETRY, booking, operator, saying=ended)
    for outcome in (S.FAILED, S.CONFIRMED):
        assert_refused(
            support.RESOLVE,
            booking,
            operator,
            saying=f"returns to cancelled, never to {outcome}",
            outcome=outcome,
        )
    # and the preview says so: the one outcome offered is its end
    shown = support.preview(support.RESOLVE, booking, live=False)
    assert [(value, bool(why)) for value, _, why in shown.outcomes] == [
        (S.CANCELLED, False),
        (S.CONFIRMED, True),
        (S.FAILED, True),
    ]
    assert not support.preview(support.RETRY, booking, live=False).allowed

    # when support resolves it: back to cancelled, as its customer saw it all along
    result = act(support.RESOLVE, booking, operator, outcome=S.CANCELLED)

    assert (result.from_state, result.to_state) == (S.NEEDS_ATTENTION, S.CANCELLED)
    assert_back_to_cancelled_as_the_customer_saw_it(p, booking, before, sent)


def test_compensate_cancels_the_stray_and_returns_the_booking_to_cancelled_with_its_fee(
    paying_idle, settings
):
    p = paying_idle
    operator = support.Operator.for_user(UserFactory(is_staff=True, is_superuser=True))
    booking, stray = refunded_then_flagged(p, settings)
    before, sent = seen(booking), mails(booking)
    # the stray is still live at the partner: the booking cannot be resolved yet
    assert_refused(support.RESOLVE, booking, operator, saying="compensate instead", outcome=S.CANCELLED)
    p.h.faults(rate_limit_rate=0)  # the partner would cancel it now

    # when support compensates: the stray's cancel is driven again, the booking not failed
    result = act(support.COMPENSATE, booking, operator)

    assert (result.from_state, result.to_state) == (S.NEEDS_ATTENTION, S.NEEDS_ATTENTION)
    assert "back to cancelled once verified" in result.message
    assert seen(booking) == before
    # then a worker cancels it at the partner and verifies it, and the booking returns to cancelled
    p.start_worker()
    wait_until(lambda: status_of(booking) != S.NEEDS_ATTENTION, what="the booking to leave support")
    stray.refresh_from_db()
    assert stray.compensated_at is not None
    assert not p.h.live(booking)
    moves = BookingEvent.objects.filter(booking=booking).exclude(to_state="").order_by("occurred_at", "id")
    assert list(moves.values_list("from_state", "to_state"))[-2:] == [
        (S.NEEDS_ATTENTION, S.NEEDS_ATTENTION),  # support.compensated: not failed
        (S.NEEDS_ATTENTION, S.CANCELLED),  # the stray's cancel verified: back to its end
    ]
    wait_until(lambda: not Notification.objects.filter(booking=booking, state="queued").exists(), what="mail")
    assert_back_to_cancelled_as_the_customer_saw_it(p, booking, before, sent)


def test_a_refund_less_the_fee_is_unchanged_by_supports_refusals(paying_idle, settings):
    """The fee the customer agreed to stays owed: a compensate before the fix failed the booking
    (the fee dropped) and automation refunded it."""
    p = paying_idle
    operator = support.Operator.for_user(UserFactory(is_staff=True, is_superuser=True))
    booking, _ = refunded_then_flagged(p, settings)

    act(support.COMPENSATE, booking, operator)  # the partner still refuses: support keeps it

    assert status_of(booking) == S.NEEDS_ATTENTION
    booking.refresh_from_db()
    assert booking.cancellation_fee == FEE
    payment_run(booking.pk)
    assert_money_at_rest(p, booking, owed=FEE, code="partly_refunded")
    assert told(booking).startswith(REFUNDED)


def test_compensate_verifies_a_stray_the_partner_let_go_and_returns_the_booking_to_cancelled(
    paying_idle, settings
):
    p = paying_idle
    operator = support.Operator.for_user(UserFactory(is_staff=True, is_superuser=True))
    booking, stray = refunded_then_flagged(p, settings)
    let_go_at_the_partner(p, booking, stray)
    before, sent = seen(booking), mails(booking)
    assert any(
        step.startswith(f"Verify {stray.partner_ref} (cancelled)")
        for step in support.preview(support.COMPENSATE, booking, live=False).effects
    )

    act(support.COMPENSATE, booking, operator)  # its verifying read asked again
    p.start_worker()

    wait_until(lambda: status_of(booking) != S.NEEDS_ATTENTION, what="the booking to leave support")
    stray.refresh_from_db()
    assert stray.compensated_at is not None
    assert_back_to_cancelled_as_the_customer_saw_it(p, booking, before, sent)
