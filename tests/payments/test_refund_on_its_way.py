"""From the partner's confirmation of a cancel until the provider answers its refund, a booking
charged beyond the fee is cancelled and still `charged`: the page and the API said only "We
charged 360.00 EUR to your card." for that while (about a second on a tester's run, as long as a
broker outage or a refused refund on a bad day), and the page stopped following it ("There is
nothing else to do"), though the fee fixed by the cancel already says a refund is owed. The page,
the API's `money.message` and the mails now say the same: the fee kept and the refund on its way
(`cancelling.money_words`, `customer_money.refund_due`), and the page keeps following the payment.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.test import Client

from bookings import customer_view
from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Booking, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import booking_request_cancel
from bookings.states import BookingState, CustomerMessage
from payments.models import OperationKind, OperationState, PaymentOperation
from tests.factories import BookingFactory, NotificationFactory, OfferFactory
from tests.helpers import wait_until
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import HANG_S, payment_of, wait_for_money

S = BookingState
A = customer_view.Awaited
PRICE = Decimal("360.00")
START = date(2030, 6, 10)
# Free until 60 days before the start (11 April 2030), then a quarter of the price: 90.00 EUR.
POLICY = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": Decimal("25")}
AFTER = "free cancellation ended on 11 Apr 2030, 00:00 UTC (1440 hours before the start)"
CHARGED = "We charged 360.00 EUR to your card."
REFUNDING = (
    f"{CHARGED} We keep the cancellation fee of 90.00 EUR and are refunding the other 270.00 EUR "
    f"to your card. Your booking was cancelled after {AFTER}: the fee is 25% of the price."
)


def told(state: str, charged: str = "0", refunded: str = "0") -> dict:
    return money_of(PaymentFacts(state, "EUR", PRICE, Decimal(charged), Decimal(refunded))).as_json()


def booking_with(customer, status: str, money: dict, *, fee: str | None, **fields) -> Booking:
    return BookingFactory(
        customer=customer,
        offer=OfferFactory(**POLICY),
        status=status,
        start_date=START,
        cancellation_fee=None if fee is None else Decimal(fee),
        customer_money=money,
        submission_count=1,
        **fields,
    )


def seen(customer, booking: Booking) -> str:
    """The booking page's money paragraph, as the page renders it."""
    page = Client()
    page.force_login(customer)
    html = page.get(f"/bookings/{booking.reference}/").content.decode()
    start = html.index('class="status-panel__money"')
    return html[html.index(">", start) + 1 : html.index("</p>", start)]


@pytest.mark.parametrize(
    ("money", "fee", "fields", "words", "awaited"),
    [
        (  # cancelled after the cut-off: the fee kept, the rest on its way back
            told("charged", "360.00"),
            "90.00",
            {},
            REFUNDING,
            A.PAYMENT,
        ),
        (  # cancelled before the cut-off: all of it on its way back
            told("charged", "360.00"),
            "0.00",
            {},
            f"{CHARGED} We are refunding the 360.00 EUR you paid to your card, in full. Your booking "
            f"was cancelled before {AFTER}: it cost nothing.",
            A.PAYMENT,
        ),
        (  # confirmed, then a problem at the partner: cancelled free, no fee fixed
            told("charged", "360.00"),
            None,
            {"confirmed_shown_at": datetime(2030, 1, 1, tzinfo=UTC)},
            f"{CHARGED} We are refunding the 360.00 EUR you paid to your card, in full.",
            A.PAYMENT,
        ),
        (  # the refund answered: what was paid is the fee, nothing more to come
            told("charged", "360.00", "270.00"),
            "90.00",
            {},
            "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR. "
            f"The 90.00 EUR you paid is the cancellation fee we keep. Your booking was cancelled "
            f"after {AFTER}: the fee is 25% of the price.",
            None,
        ),
        (  # the whole price is the fee (a policy changed since: no why): nothing to refund
            told("charged", "360.00"),
            "360.00",
            {},
            f"{CHARGED} We keep the 360.00 EUR you paid as the cancellation fee: there is nothing to refund.",
            None,
        ),
    ],
    ids=["refund-less-fee", "refund-in-full", "no-fee-fixed", "refunded", "all-kept"],
)
def test_a_cancelled_booking_says_the_refund_to_come_on_the_page_in_the_api_and_in_its_mail(
    db, customer, api_client, money, fee, fields, words, awaited
):
    booking = booking_with(customer, S.CANCELLED, money, fee=fee, **fields)

    shown = api_client.get(f"/api/v1/bookings/{booking.reference}")
    assert shown.json()["money"]["message"] == words
    assert seen(customer, booking) == words
    notification = NotificationFactory(
        booking=booking, kind=NotificationKind.CANCELLED, message=CustomerMessage.CANCELLED, money=money
    )
    mail = compose(notification)
    assert words in mail.body and words in mail.alternatives[0].content  # as the mail says it
    # a refund to come is news awaited from the provider: the page and the API keep following
    assert customer_view.awaited(booking) == awaited
    assert ("Retry-After" in shown.headers) is (awaited is not None)


def test_while_the_partner_has_not_confirmed_the_cancel_nothing_is_said_to_be_refunded_yet(
    db, customer, api_client
):
    # nothing is refunded until the cancellation is done (`payments.decisions.owed`: not decided)
    booking = booking_with(customer, S.CANCEL_REQUESTED, told("charged", "360.00"), fee="90.00")

    assert api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]["message"] == CHARGED
    assert seen(customer, booking) == CHARGED
    assert customer_view.awaited(booking) == A.PARTNER


# --- with the real provider, partner, worker and SMTP sink ---------------------------------------
def refund_out(booking: Booking) -> bool:
    return PaymentOperation.objects.filter(
        payment__booking=booking, kind=OperationKind.REFUND, state=OperationState.OPEN
    ).exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_page_and_the_api_say_the_refund_is_on_its_way_before_the_provider_answers_it(
    paying, settings, customer, api_client, request
):
    sink = request.getfixturevalue("mail_sink")
    # given a confirmed booking charged 360.00 EUR, whose free cancellation ended 60 days before
    # its start (it starts in 40): a quarter is kept
    offer = paying.h.partner.offers.get()
    type(offer).objects.filter(pk=offer.pk).update(**POLICY)
    booking = paying.book(customer=customer)
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    before = set(Notification.objects.filter(booking=booking).values_list("pk", flat=True))
    # and a provider that takes seconds to answer (a slow answer, not a timeout)
    settings.PAYMENTS_READ_TIMEOUT_S = 4 * HANG_S
    paying.provider.set_faults(latency_ms=[3000, 3000])

    # when the customer cancels it and the partner confirms the cancellation
    booking_request_cancel(booking_id=booking.pk, actor="customer")
    wait_for_status(booking, S.CANCELLED)

    # then, while the refund is out to the provider, the page and the API say it is on its way
    wait_until(lambda: refund_out(booking), what="the refund's call", timeout_s=10)
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}")
    page = seen(customer, booking)
    assert payment_of(booking).refunded_amount == 0  # not answered yet: what was read is the window
    assert shown.json()["money"]["code"] == "charged"
    cut_off = datetime.combine(booking.start_date, time.min, tzinfo=UTC) - timedelta(days=60)
    why = (
        f"Your booking was cancelled after free cancellation ended on {cut_off.day} {cut_off:%b %Y}, "
        "00:00 UTC (1440 hours before the start): the fee is 25% of the price."
    )
    refunding = (
        f"{CHARGED} We keep the cancellation fee of 90.00 EUR and are refunding the other 270.00 EUR "
        f"to your card. {why}"
    )
    assert shown.json()["money"]["message"] == refunding
    assert page == refunding
    assert "Retry-After" in shown.headers  # the refund is news still to come

    # and once it is answered, they say what was done; the mails are the two they were
    wait_for_money(booking, "partly_refunded", timeout_s=30)
    refunded = (
        "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR. "
        f"The 90.00 EUR you paid is the cancellation fee we keep. {why}"
    )
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}")
    assert shown.json()["money"]["message"] == refunded
    assert seen(customer, booking) == refunded
    assert "Retry-After" not in shown.headers
    after = Notification.objects.filter(booking=booking).exclude(pk__in=before).order_by("status_version")
    wait_until(
        lambda: list(after.all().values_list("state", flat=True)) == ["sent", "sent"],
        what="the two mails after the cancel to be sent",
    )
    assert list(after.values_list("kind", flat=True)) == [NotificationKind.CANCELLED, NotificationKind.MONEY]
    sent = {mail["Subject"]: mail for mail in sink.messages()}
    cancelled = sent[f"Your booking {booking.reference} is cancelled"]
    assert refunding in " ".join(cancelled.get_body(("plain",)).get_content().split())
