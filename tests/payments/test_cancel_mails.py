"""The mails that follow a customer's cancel of a booking that pays say what was kept, what is
refunded or released, and the cut-off that decided it (bookings/cancelling.py `after_cancel`,
in templates/email/booking_cancelled.* and booking_money.*). The cancel itself mails nothing (the
customer caused it); the partner's confirmation of it ("cancelled") and the refund completing
at the provider ("money") each owe one."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from email.message import EmailMessage

import pytest

from bookings.cancelling import money_words
from bookings.customer_money import Money, PaymentFacts, money_of
from bookings.customer_view import refresh
from bookings.models import Actor, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import booking_request_cancel
from bookings.states import BookingState, CustomerMessage
from tests.factories import BookingFactory, NotificationFactory, OfferFactory
from tests.helpers import wait_until
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import wait_for_money

S = BookingState
PRICE = Decimal("360.00")
START = date(2030, 6, 10)
# Free until 60 days before the start (11 April 2030), then a quarter of the price: 90.00 EUR.
POLICY = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": Decimal("25")}
# The same, with the whole price as the fee: 360.00 EUR.
ALL_OF_IT = {**POLICY, "cancellation_fee_percent": Decimal("100")}
AFTER = "free cancellation ended on 11 Apr 2030, 00:00 UTC (1440 hours before the start)"


def told(state: str, charged: str = "0", refunded: str = "0") -> dict:
    return money_of(PaymentFacts(state, "EUR", PRICE, Decimal(charged), Decimal(refunded))).as_json()


def mail_of(kind: str, money: dict, *, fee: str | None, **policy) -> tuple[str, str]:
    booking = BookingFactory(
        offer=OfferFactory(**(policy or POLICY)),
        status=S.CANCELLED,
        start_date=START,
        cancellation_fee=None if fee is None else Decimal(fee),
        customer_money=money,
    )
    notification = NotificationFactory(
        booking=booking, kind=kind, message=CustomerMessage.CANCELLED, money=money
    )
    mail = compose(notification)
    return mail.body, mail.alternatives[0].content


@pytest.mark.parametrize(
    ("kind", "money", "fee", "words"),
    [
        (  # the partner confirmed the cancel; the refund is being made
            NotificationKind.CANCELLED,
            told("charged", "360.00"),
            "90.00",
            "We charged 360.00 EUR to your card. We keep the cancellation fee of 90.00 EUR and are "
            f"refunding the other 270.00 EUR to your card. Your booking was cancelled after {AFTER}: "
            "the fee is 25% of the price.",
        ),
        (  # the refund is done at the provider
            NotificationKind.MONEY,
            told("charged", "360.00", "270.00"),
            "90.00",
            "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR. "
            "The 90.00 EUR you paid is the cancellation fee we keep. Your booking was cancelled "
            f"after {AFTER}: the fee is 25% of the price.",
        ),
        (  # cancelled before the cut-off: refunded in full
            NotificationKind.MONEY,
            told("charged", "360.00", "360.00"),
            "0.00",
            "We refunded the 360.00 EUR we charged to your card: you paid nothing. No cancellation "
            f"fee is kept. Your booking was cancelled before {AFTER}: it cost nothing.",
        ),
        (  # a hold: the fee charged from it, the rest let go
            NotificationKind.CANCELLED,
            told("held"),
            "90.00",
            "We are holding 360.00 EUR on your card; you are not charged yet. We are charging the "
            "cancellation fee of 90.00 EUR from the 360.00 EUR we hold on your card and releasing "
            f"the other 270.00 EUR. Your booking was cancelled after {AFTER}: the fee is 25% of the price.",
        ),
        (
            NotificationKind.MONEY,
            money_of(PaymentFacts("charged", "EUR", PRICE, Decimal("90.00"))).as_json(),
            "90.00",
            "We charged 90.00 EUR to your card. The 90.00 EUR charged is the cancellation fee; the "
            "other 270.00 EUR we were holding on your card is released. Your booking was cancelled "
            f"after {AFTER}: the fee is 25% of the price.",
        ),
        (  # the capture timed out: taken or not, all but the fee comes back, as a release or a refund
            NotificationKind.CANCELLED,
            told("charge_unknown"),
            "90.00",
            "We asked for the 360.00 EUR held on your card to be charged and do not know yet whether "
            "it was. We keep the cancellation fee of 90.00 EUR and are making sure the other 270.00 "
            "EUR comes back to your card. We do not know yet whether the 360.00 EUR was charged, and "
            "finding out may complete the charge: if it is charged, we refund the 270.00 EUR; if not, "
            "we charge only the fee and release the rest of the hold. Your booking was cancelled "
            f"after {AFTER}: the fee is 25% of the price.",
        ),
        (  # the capture of the fee alone timed out: at most the fee is taken, the rest released
            NotificationKind.CANCELLED,
            {**told("charge_unknown"), "charging": "90.00"},
            "90.00",
            "We asked for 90.00 EUR of the 360.00 EUR held on your card to be charged and do not know "
            "yet whether it was; the rest of the hold is not charged. The 90.00 EUR is the "
            "cancellation fee, all we charge: we are releasing the other 270.00 EUR we hold on your "
            f"card. Your booking was cancelled after {AFTER}: the fee is 25% of the price.",
        ),
        (  # the whole price as the fee
            NotificationKind.CANCELLED,
            told("charged", "360.00"),
            "360.00",
            "We charged 360.00 EUR to your card. We keep the 360.00 EUR you paid as the cancellation "
            "fee: there is nothing to refund.",  # a policy of 25% does not give 360.00: no why
        ),
        (  # support refunded 100.00 before the cancel: the rest beyond the fee is refunded too
            NotificationKind.CANCELLED,
            told("charged", "360.00", "100.00"),
            "90.00",
            "We charged 360.00 EUR and refunded 100.00 EUR of it to your card: you paid 260.00 EUR. "
            "We keep the cancellation fee of 90.00 EUR and are refunding the other 170.00 EUR to your "
            f"card. Your booking was cancelled after {AFTER}: the fee is 25% of the price.",
        ),
        (
            NotificationKind.CANCELLED,
            told("charged", "360.00", "100.00"),
            "0.00",
            "We charged 360.00 EUR and refunded 100.00 EUR of it to your card: you paid 260.00 EUR. "
            "We are refunding the 260.00 EUR you paid to your card, in full.",
        ),
    ],
    ids=[
        "cancelled-refunding",
        "refunded-less-fee",
        "refunded-in-full",
        "hold",
        "fee-from-hold",
        "charge-unknown",
        "fee-charge-unknown",
        "all-kept",
        "support-refunded-part-first",
        "support-refunded-part-first-free",
    ],
)
def test_the_mail_says_the_fee_kept_the_refund_and_the_cut_off(db, kind, money, fee, words):
    text, html = mail_of(kind, money, fee=fee)

    assert words in text
    assert words in html


@pytest.mark.parametrize(
    ("money", "words"),
    [
        (
            told("held"),
            "We are holding 360.00 EUR on your card; you are not charged yet. We are charging the "
            "360.00 EUR we hold on your card: it is all the cancellation fee.",
        ),
        (
            told("charge_unknown"),
            "We asked for the 360.00 EUR held on your card to be charged and do not know yet whether "
            "it was. The 360.00 EUR is all the cancellation fee: nothing comes back to your card.",
        ),
        (
            told("charged", "360.00"),
            "We charged 360.00 EUR to your card. We keep the 360.00 EUR you paid as the cancellation "
            "fee: there is nothing to refund.",
        ),
    ],
    ids=["held", "charge-unknown", "charged"],
)
def test_a_fee_of_the_whole_price_releases_or_refunds_nothing_and_says_no_zero_part(db, money, words):
    # the fee is the whole price: nothing is left of the hold to release, nor of the charge to refund
    text, html = mail_of(NotificationKind.CANCELLED, money, fee="360.00", **ALL_OF_IT)

    for mail in (text, html):
        assert words in " ".join(mail.split())
        assert "0.00 EUR" not in mail.replace("360.00 EUR", "")


def test_a_cancel_before_the_partner_confirmed_says_only_what_happened_to_the_hold(db):
    # no fee was fixed (cancelling is free until the partner confirms): the money words say it all
    text, _ = mail_of(NotificationKind.MONEY, told("released"), fee=None)

    assert "We released the 360.00 EUR we were holding on your card: you were not charged.\n" in text
    assert "cancellation fee" not in text


def test_money_that_no_longer_follows_the_fee_alone_is_said_as_it_is(db):
    # support refunded the fee too: nothing is said to be kept
    text, _ = mail_of(NotificationKind.MONEY, told("charged", "360.00", "360.00"), fee="90.00")

    assert "We refunded the 360.00 EUR we charged to your card: you paid nothing.\n" in text
    assert "cancellation fee" not in text


def test_a_mail_staged_before_its_words_were_kept_is_worded_from_the_booking(db):
    booking = BookingFactory(
        offer=OfferFactory(**POLICY), status=S.CANCELLED, start_date=START, cancellation_fee=Decimal("90.00")
    )
    money = told("charged", "360.00")
    notification = NotificationFactory(
        booking=booking,
        kind=NotificationKind.CANCELLED,
        message=CustomerMessage.CANCELLED,
        money=money,
        money_words="",
    )

    assert (
        "We charged 360.00 EUR to your card. We keep the cancellation fee of 90.00 EUR and are refunding "
        f"the other 270.00 EUR to your card. Your booking was cancelled after {AFTER}"
    ) in compose(notification).body


def test_a_free_cancel_after_support_refunded_part_says_it_refunds_the_rest(db):
    # confirmed, then disrupted (the partner changed it): support refunded 100.00 of the 360.00
    # as a goodwill gesture, then the customer cancelled, for free (no fee fixed)
    text, html = mail_of(NotificationKind.CANCELLED, told("charged", "360.00", "100.00"), fee=None)

    for mail in (text, html):
        assert (
            "We charged 360.00 EUR and refunded 100.00 EUR of it to your card: you paid 260.00 EUR. "
            "We are refunding the 260.00 EUR you paid to your card, in full."
        ) in mail


def staged_mail(booking, facts: PaymentFacts) -> tuple[str, str]:
    """The mail the payment side's news stages for the booking as it is now (`customer_view.refresh`)."""
    refresh(booking, actor=Actor.WORKER, payment=facts)
    notification = Notification.objects.filter(booking=booking).latest("status_version")
    mail = compose(notification)
    return mail.body, mail.alternatives[0].content


def test_news_of_the_money_while_the_cancel_is_only_asked_says_nothing_of_a_refund(db):
    # given a confirmed booking whose capture was out to a slow provider when the customer
    # cancelled after the cut-off: the fee is fixed, the partner has not confirmed the cancel
    booking = BookingFactory(
        offer=OfferFactory(**POLICY),
        status=S.CANCEL_REQUESTED,
        start_date=START,
        cancellation_fee=Decimal("90.00"),
        confirmed_shown_at=datetime(2030, 1, 1, tzinfo=UTC),
        customer_money=told("held"),
    )

    # when the capture's answer comes: charged
    text, html = staged_mail(booking, PaymentFacts("charged", "EUR", PRICE, PRICE))

    # then the mail says what the page says: charged, nothing refunded, nothing cancelled yet
    page = money_words(booking, Money.from_json(booking.customer_money))
    assert page == "We charged 360.00 EUR to your card."
    for mail in (text, html):
        assert page in mail
        assert "refunding" not in mail
        assert "cancelled" not in mail


def test_a_money_mail_sent_after_the_booking_moved_on_says_what_was_true_at_its_change(db):
    # given a confirmed booking charged 360.00 EUR, its money mail staged and not sent yet
    booking = BookingFactory(
        offer=OfferFactory(**POLICY),
        status=S.CONFIRMED,
        start_date=START,
        confirmed_shown_at=datetime(2030, 1, 1, tzinfo=UTC),
        customer_money=told("held"),
    )
    refresh(booking, actor=Actor.WORKER, payment=PaymentFacts("charged", "EUR", PRICE, PRICE))
    notification = Notification.objects.get(booking=booking, kind=NotificationKind.MONEY)

    # when the customer cancels after the cut-off before it goes out (a backlog of mails)
    booking_request_cancel(booking_id=booking.pk, actor="customer")
    notification.refresh_from_db()
    mail = compose(notification)

    # then it says the charge, as the page did then: no refund the cancel has not made
    assert "We charged 360.00 EUR to your card.\n" in mail.body
    assert "refunding" not in mail.body


# --- with the real provider, partner, worker and SMTP sink ---------------------------------------
def body(mail: EmailMessage, subtype: str) -> str:
    return mail.get_body((subtype,)).get_content()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_customer_s_cancel_after_the_cut_off_is_mailed_once_as_cancelled_and_refunded_less_the_fee(
    paying, request
):
    """QA: "We are refunding..." in the cancelled mail, then "We refunded..." a moment later: the
    refund runs in the worker's thread right after the partner's cancel commits. The cancelled
    mail waits NOTIFICATION_SETTLE_S and tells the refund; the refund's own mail is included."""
    sink = request.getfixturevalue("mail_sink")
    # given a confirmed booking charged 360.00 EUR, whose free cancellation ended 60 days before
    # its start (it starts in 40): a quarter is kept
    offer = paying.h.partner.offers.get()
    type(offer).objects.filter(pk=offer.pk).update(**POLICY)
    booking = paying.book()
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    before = set(Notification.objects.filter(booking=booking).values_list("pk", flat=True))

    # when the customer cancels it
    booking_request_cancel(booking_id=booking.pk, actor="customer")

    # then they get no mail for their own cancel, and one once the partner cancelled it, that says
    # the provider refunded all but the fee: the refund's own mail is told in it
    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "partly_refunded")
    after = Notification.objects.filter(booking=booking).exclude(pk__in=before).order_by("status_version")
    wait_until(
        lambda: list(after.all().values_list("state", flat=True)) == ["sent", "included"],
        what="the mail after the cancel to be sent, the refund's included",
    )
    assert list(after.values_list("kind", flat=True)) == [NotificationKind.CANCELLED, NotificationKind.MONEY]
    cut_off = datetime.combine(booking.start_date, time.min, tzinfo=UTC) - timedelta(days=60)
    why = (
        f"Your booking was cancelled after free cancellation ended on {cut_off.day} {cut_off:%b %Y}, "
        "00:00 UTC (1440 hours before the start): the fee is 25% of the price."
    )
    confirmed, cancelled = sink.messages()
    assert (confirmed["Subject"], cancelled["Subject"]) == (
        f"Your booking {booking.reference} is confirmed",
        f"Your booking {booking.reference} is cancelled",
    )
    assert cancelled["X-Booking-Included-Versions"] == str(after.last().status_version)
    for subtype in ("plain", "html"):
        assert (
            "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR. "
            f"The 90.00 EUR you paid is the cancellation fee we keep. {why}"
        ) in body(cancelled, subtype)
        assert "refunding" not in body(cancelled, subtype)
