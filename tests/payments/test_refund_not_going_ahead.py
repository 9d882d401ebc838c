"""A confirmed booking, charged, that then will not go ahead (the partner took it back:
`disrupted_partner_cancelled`, `disrupted_partner_lost`; or support ended it: `disrupted_ended`)
owes nothing (`payments.decisions.owed`), and its charge is refunded in full by the payment run.
From that move until the provider answers the refund, its page, the API's `money.message`, its
stream and its mail said only "We charged 360.00 EUR to your card." beside "it will not go
ahead", and `disrupted_ended` was awaited by nobody (no `Retry-After`, the page stopped
following it). They now say the refund on its way, and keep following it
(`customer_money.refund_due`: what was paid beyond what is owed, as the payment run refunds it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client

from bookings import customer_view
from bookings.cancelling import money_words
from bookings.customer_money import PaymentFacts, money_of, money_shown
from bookings.models import Actor, Booking, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import lock_booking
from bookings.states import BookingState, CustomerMessage, CustomerStatus
from payments.models import OperationKind, OperationState, PaymentOperation
from tests.factories import BookingFactory
from tests.helpers import wait_until
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import HANG_S, payment_of, wait_for_money

S = BookingState
M = CustomerMessage
A = customer_view.Awaited
PRICE = Decimal("360.00")
CHARGED = "We charged 360.00 EUR to your card."
REFUNDING = (
    f"{CHARGED} As your booking is not going ahead, we are refunding the 360.00 EUR you paid to "
    "your card, in full."
)
REFUNDED = "We refunded the 360.00 EUR we charged to your card: you paid nothing."
CONFIRMED_AT = datetime(2030, 1, 1, tzinfo=UTC)


def told(state: str, charged: str = "0", refunded: str = "0") -> dict:
    return money_of(PaymentFacts(state, "EUR", PRICE, Decimal(charged), Decimal(refunded))).as_json()


def seen(customer, booking: Booking) -> str:
    """The booking page's money paragraph, as the page renders it."""
    page = Client()
    page.force_login(customer)
    html = page.get(f"/bookings/{booking.reference}/").content.decode()
    start = html.index('class="status-panel__money"')
    return html[html.index(">", start) + 1 : html.index("</p>", start)]


# (state, attention reason, message shown, who the page waits for)
NOT_GOING_AHEAD = [
    (S.NEEDS_ATTENTION, "partner_cancelled_confirmed", M.DISRUPTED_PARTNER_CANCELLED, A.SUPPORT),
    (S.NEEDS_ATTENTION, "partner_lost_reservation", M.DISRUPTED_PARTNER_LOST, A.SUPPORT),
    (S.FAILED, "", M.DISRUPTED_ENDED, A.PAYMENT),
    (S.REJECTED, "", M.DISRUPTED_ENDED, A.PAYMENT),
]


def disrupted(customer, state: str, reason: str, message: str, money: dict) -> Booking:
    return BookingFactory(
        customer=customer,
        status=state,
        attention_reason=reason,
        confirmed_shown_at=CONFIRMED_AT,
        customer_status=CustomerStatus.DISRUPTED,
        customer_message=message,
        customer_money=money,
        submission_count=1,
    )


@pytest.mark.parametrize(("state", "reason", "message", "awaited"), NOT_GOING_AHEAD)
def test_a_charged_booking_that_will_not_go_ahead_says_the_refund_to_come_and_keeps_following_it(
    db, customer, api_client, state, reason, message, awaited
):
    booking = disrupted(customer, state, reason, message, told("charged", "360.00"))

    shown = api_client.get(f"/api/v1/bookings/{booking.reference}")
    assert shown.json()["money"]["message"] == REFUNDING
    assert seen(customer, booking) == REFUNDING
    # the refund is news still to come: the page and the API keep following it
    assert customer_view.awaited(booking) == awaited
    assert "Retry-After" in shown.headers


@pytest.mark.parametrize(("state", "reason", "message", "awaited"), NOT_GOING_AHEAD)
def test_once_refunded_it_says_so_and_ended_it_awaits_nothing_more(
    db, customer, api_client, state, reason, message, awaited
):
    booking = disrupted(customer, state, reason, message, told("charged", "360.00", "360.00"))

    shown = api_client.get(f"/api/v1/bookings/{booking.reference}")
    assert shown.json()["money"]["message"] == REFUNDED
    assert seen(customer, booking) == REFUNDED
    # support still has the partner's taking back; an ended one has nothing left to come
    assert customer_view.awaited(booking) == (A.SUPPORT if awaited == A.SUPPORT else None)


def test_a_problem_whose_outcome_is_not_decided_says_only_what_was_charged(db, customer, api_client):
    # with support for a problem of ours: what it owes waits for support (`owed` is None)
    booking = disrupted(customer, S.NEEDS_ATTENTION, "worker_gave_up", M.DISRUPTED, told("charged", "360.00"))

    assert api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]["message"] == CHARGED
    assert seen(customer, booking) == CHARGED


def test_support_ending_a_charged_booking_mails_the_refund_to_come_and_lets_it_settle(
    db, customer, django_capture_on_commit_callbacks
):
    # given a confirmed, charged booking with support for a problem of ours (owed: not decided)
    booking = disrupted(customer, S.NEEDS_ATTENTION, "worker_gave_up", M.DISRUPTED, told("charged", "360.00"))

    # when support fails it (it will not go ahead: nothing owed, the refund is made next)
    type(booking).objects.filter(pk=booking.pk).update(status=S.FAILED, attention_reason="")
    booking = lock_booking(booking.pk)
    with django_capture_on_commit_callbacks():
        customer_view.refresh(booking, actor=Actor.SUPPORT)

    # then its mail says the refund to come, as its page does, and the page keeps following it
    notification = Notification.objects.get(booking=booking)
    assert (notification.kind, notification.message) == (NotificationKind.DISRUPTED, M.DISRUPTED_ENDED)
    mail = compose(notification)
    for text in (mail.body, mail.alternatives[0].content):
        assert REFUNDING in " ".join(text.split())
    assert money_words(booking, money_shown(booking)) == REFUNDING
    assert customer_view.awaited(booking) == A.PAYMENT
    # and, the refund made due with the move, the mail waits for it to tell it instead
    change = customer_view.ViewChange(
        customer_view.View(CustomerStatus.DISRUPTED, M.DISRUPTED, money_shown(booking)),
        customer_view.shown(booking),
        booking.status_version,
        NotificationKind.DISRUPTED,
    )
    assert customer_view._settles(booking, change)


# --- with the real provider, partner, worker and SMTP sink ---------------------------------------
def refund_out(booking: Booking) -> bool:
    return PaymentOperation.objects.filter(
        payment__booking=booking, kind=OperationKind.REFUND, state=OperationState.OPEN
    ).exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_partner_taking_a_charged_booking_back_says_the_refund_on_its_way_until_it_is_made(
    paying, settings, customer, api_client
):
    # given a partner that cancels a confirmed booking on its own a few seconds after confirming
    paying.h.faults(partner_cancel_rate=1, partner_cancel_delay_s=[3, 3])
    booking = paying.book(customer=customer)
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    # and a provider that takes seconds to answer (a slow answer, not a timeout)
    settings.PAYMENTS_READ_TIMEOUT_S = 4 * HANG_S
    paying.provider.set_faults(latency_ms=[3000, 3000])

    # when the partner takes it back: with support, nothing owed, the refund out to the provider
    wait_for_status(booking, S.NEEDS_ATTENTION)
    wait_until(lambda: refund_out(booking), what="the refund's call", timeout_s=15)

    # then the page and the API say it is on its way, and keep following it
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}")
    assert payment_of(booking).refunded_amount == 0  # not answered yet: what was read is the window
    assert shown.json()["message_code"] == M.DISRUPTED_PARTNER_CANCELLED
    assert shown.json()["money"]["message"] == REFUNDING
    assert seen(customer, booking) == REFUNDING
    assert "Retry-After" in shown.headers

    # and once it is answered, they say it was refunded
    wait_for_money(booking, "refunded", timeout_s=30)
    assert api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]["message"] == REFUNDED
    assert seen(customer, booking) == REFUNDED


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_problem_mail_of_a_charged_booking_the_partner_took_back_tells_the_refund(paying, request):
    """The "problem with your booking" mail said "We charged 360.00 EUR to your card." and a
    mail of the refund followed it: the refund runs right after the partner's cancel commits, and
    the status mail did not wait for it. It waits NOTIFICATION_SETTLE_S, as a cancel's does, and
    tells the refund; the refund's own mail is included."""
    sink = request.getfixturevalue("mail_sink")
    paying.h.faults(partner_cancel_rate=1, partner_cancel_delay_s=[3, 3])
    booking = paying.book()
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    before = set(Notification.objects.filter(booking=booking).values_list("pk", flat=True))
    # a provider that answers the refund 0.7 s after the partner's cancel commits: the mail of
    # that move, composed at once, would be on its way before the refund is made
    paying.provider.set_faults(latency_ms=[700, 700])

    wait_for_status(booking, S.NEEDS_ATTENTION)
    wait_for_money(booking, "refunded")

    after = Notification.objects.filter(booking=booking).exclude(pk__in=before).order_by("status_version")
    wait_until(
        lambda: (
            list(after.all().values_list("kind", "state"))
            == [(NotificationKind.DISRUPTED, "sent"), (NotificationKind.MONEY, "included")]
        ),
        what="the problem's mail to be sent, the refund's included",
    )
    problem = next(m for m in sink.messages() if m["X-Notification-Kind"] == NotificationKind.DISRUPTED)
    for subtype in ("plain", "html"):
        text = " ".join(problem.get_body((subtype,)).get_content().split())
        assert REFUNDED in text
        assert CHARGED not in text
