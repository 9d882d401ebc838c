"""What the customer is told about their money, fed by the payment: on the booking's page, in the
mails (each change's mail says the money as it stood then), and a mail of its own when the money
is the only news (charged, refunded, released)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from bookings import customer_view
from bookings.cancelling import cancel_money
from bookings.customer_money import Money, PaymentFacts, money_of
from bookings.models import Actor, Booking, BookingEvent, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import lock_booking
from bookings.states import BookingState, CustomerMessage, CustomerMoney
from payments.models import OperationKind, OperationState, Payment, PaymentOperation, PaymentStatus
from payments.services.observations import open_operation_of, payment_facts
from tests.factories import BookingFactory
from tests.helpers import wait_until
from tests.payments.conftest import book_through_api, money_code

S = BookingState
PRICE = Decimal("360.00")


def told(state: str, charged: str = "0", refunded: str = "0") -> dict:
    facts = PaymentFacts(state, "EUR", PRICE, Decimal(charged), Decimal(refunded))
    return money_of(facts).as_json()


def test_the_booking_page_says_what_happened_to_the_money(db):
    booking = BookingFactory(status=S.CANCELLED, customer_money=told("charged", "360.00", "270.00"))
    client = Client()
    client.force_login(booking.customer)

    page = client.get(f"/bookings/{booking.reference}/").content.decode()

    assert "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR." in page


def test_a_booking_without_a_payment_says_nothing_of_money(db):
    booking = BookingFactory(status=S.CONFIRMED)
    client = Client()
    client.force_login(booking.customer)

    page = client.get(f"/bookings/{booking.reference}/").content.decode()

    assert "status-panel__money" not in page and "charged" not in page


def test_a_mail_says_the_money_as_it_stood_with_its_change(db):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=told("held"))
    notification = Notification.objects.create(
        booking=booking,
        status_version=2,
        kind=NotificationKind.CONFIRMED,
        message="confirmed",
        money=told("held"),
    )

    mail = compose(notification)

    words = "We are holding 360.00 EUR on your card; you are not charged yet."
    assert words in mail.body and words in mail.alternatives[0][0]


@pytest.mark.parametrize(
    ("then", "now", "mailed"),
    [
        (told("held"), PaymentFacts("charged", "EUR", PRICE, PRICE), True),
        (told("charged", "360"), PaymentFacts("charged", "EUR", PRICE, PRICE, PRICE), True),  # refunded
        (told("held"), PaymentFacts("released", "EUR", PRICE), True),
        (told("authorizing"), PaymentFacts("held", "EUR", PRICE), False),  # not yet news of money
    ],
)
def test_money_that_is_the_only_news_is_mailed_once(
    db, django_capture_on_commit_callbacks, then, now, mailed
):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=then)

    with django_capture_on_commit_callbacks():
        customer_view.refresh(lock_booking(booking.pk), actor=Actor.WORKER, payment=now)

    kinds = list(Notification.objects.filter(booking=booking).values_list("kind", flat=True))
    assert kinds == (["money"] if mailed else [])
    if mailed:
        mail = compose(Notification.objects.get(booking=booking))
        assert mail.subject == f"Your payment for booking {booking.reference}"
        assert money_of(now).text in mail.body


REFUND_FAILED = (
    "A refund to your card could not be made. We still owe you "
    "360.00 EUR; our support team will be in touch to give it back to you."
)


def test_a_refund_the_card_refused_is_told_mailed_once_and_then_told_made(
    db, django_capture_on_commit_callbacks
):
    booking = BookingFactory(
        status=S.CANCELLED, customer_money=told("charged", "360", "360"), submission_count=1
    )
    refused = PaymentFacts("charged", "EUR", PRICE, PRICE, Decimal("0.00"), refund_failed=PRICE)
    client = Client()
    client.force_login(booking.customer)

    with django_capture_on_commit_callbacks():
        for _ in range(2):  # the same word twice: told, and mailed, once
            customer_view.refresh(lock_booking(booking.pk), actor=Actor.WORKER, payment=refused)
    page = client.get(f"/bookings/{booking.reference}/").content.decode()

    [mailed] = Notification.objects.filter(booking=booking)
    assert (mailed.kind, mailed.money["code"], mailed.money["refund_failed"]) == (
        "money",
        "refund_failed",
        "360.00",
    )
    mail = compose(mailed)
    for text in (mail.body, mail.alternatives[0][0]):
        flat = " ".join(text.split())
        assert REFUND_FAILED in flat
        assert (
            "our support team will be in touch with you about the refund to your card that could not be made"
            in flat
        )
        assert "can take a few days" not in flat  # no refund is on its way
    assert REFUND_FAILED in page
    assert "Our support team will be in touch about the refund to your card that could not be made" in page
    assert "There is nothing else to do." not in page

    # support's refund gives it back: told as refunded, in one mail more
    again = PaymentFacts("charged", "EUR", PRICE, PRICE, PRICE)
    with django_capture_on_commit_callbacks():
        customer_view.refresh(lock_booking(booking.pk), actor=Actor.WORKER, payment=again)
    codes = (
        Notification.objects.filter(booking=booking)
        .order_by("status_version")
        .values_list("money__code", flat=True)
    )
    assert list(codes) == ["refund_failed", "refunded"]
    assert "refund_failed" not in Booking.objects.get(pk=booking.pk).customer_money


def test_money_news_the_customer_caused_is_not_mailed(db, django_capture_on_commit_callbacks):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=told("held"))

    with django_capture_on_commit_callbacks():
        customer_view.refresh(
            lock_booking(booking.pk),
            actor=Actor.CUSTOMER,
            payment=PaymentFacts("charged", "EUR", PRICE, PRICE),
        )

    assert not Notification.objects.filter(booking=booking).exists()


# --- a decline is told by who refused: the card's bank, or the provider refusing our request ----
def test_a_payment_method_the_provider_refuses_ends_the_booking_without_a_bank_decline():
    refused = customer_view.derive(
        S.FAILED, customer_view.Facts(money=money_of(PaymentFacts("refused", "EUR", PRICE)))
    )
    declined = customer_view.derive(
        S.FAILED, customer_view.Facts(money=money_of(PaymentFacts("declined", "EUR", PRICE)))
    )

    assert (refused.status, refused.message, refused.money.code) == (
        "failed",
        CustomerMessage.PAYMENT_METHOD_REFUSED,
        CustomerMoney.METHOD_REFUSED,
    )
    assert "bank declined" not in refused.money.text and "declined" not in refused.message.label
    assert (declined.message, declined.money.code) == (
        CustomerMessage.PAYMENT_DECLINED,
        CustomerMoney.DECLINED,
    )


@pytest.mark.parametrize(
    ("decline_code", "fact"),
    [("card_declined", "declined"), ("insufficient_funds", "declined"), ("not_authorized", "needs_action")],
)
def test_an_authorization_answered_neither_held_nor_declined_is_not_told_as_the_banks(db, decline_code, fact):
    # The provider's intent awaited an action we never ask the customer for (the bank's own
    # authentication): no bank declined anything.
    booking = BookingFactory(status=S.FAILED)
    payment = Payment.objects.create(
        booking=booking,
        amount=PRICE,
        currency="EUR",
        payment_method="pm_card_visa",
        status=PaymentStatus.DECLINED,
        decline_code=decline_code,
    )

    assert payment_facts(payment).state == fact
    if fact == "needs_action":  # its bank may have asked for a step: "your bank was not asked" is not said
        assert money_of(payment_facts(payment)).text == (
            "Your payment of 360.00 EUR needed a further step from you that we could not ask for, so it "
            "was not made: you were not charged."
        )


# --- a capture whose outcome is not known is told as neither held nor charged ---------------------
@pytest.mark.parametrize(
    ("kind", "state", "tries", "in_doubt", "fact"),
    [
        (OperationKind.CAPTURE, OperationState.OPEN, 1, 1, "charge_unknown"),  # timed out: in doubt
        # its first call is out: a slow provider may be charging now (a cancel meanwhile must not
        # promise to release the rest)
        (OperationKind.CAPTURE, OperationState.OPEN, 0, 1, "charge_unknown"),
        (OperationKind.CAPTURE, OperationState.OPEN, 2, 0, "held"),  # support's, only ever 429s
        (OperationKind.CAPTURE, OperationState.NOT_MADE, 1, 0, "held"),  # a 429: provably nothing
        (OperationKind.VOID, OperationState.OPEN, 1, 1, "held"),  # released or not, never charged
    ],
)
def test_a_hold_is_told_charged_or_not_only_when_known(db, kind, state, tries, in_doubt, fact):
    booking = BookingFactory(status=S.CONFIRMED)
    payment = Payment.objects.create(
        booking=booking,
        amount=PRICE,
        currency="EUR",
        payment_method="pm_card_visa",
        status=PaymentStatus.AUTHORIZED,
    )
    operation = PaymentOperation.objects.create(
        payment=payment,
        kind=kind,
        seq=1,
        idempotency_key=f"{payment.pk}:{kind}:1",
        state=state,
        tries=tries,
        calls_in_doubt=in_doubt,
    )

    assert payment_facts(payment, open_operation=open_operation_of(payment)).state == fact
    assert payment_facts(payment, open_operation=operation).state == fact


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_unknown_payment_method_is_told_as_unusable_not_as_declined_by_the_bank(paying, api_client):
    # the provider answers 400 resource_missing: it does not know the payment method
    offer = paying.h.partner.offers.get()
    reference = book_through_api(api_client, offer, payment_method="pm_card_nope").json()["reference"]

    booking = Booking.objects.get(reference=reference)
    wait_until(lambda: money_code(booking) == "method_refused", what="the refusal", timeout_s=20)
    shown = api_client.get(f"/api/v1/bookings/{reference}").json()
    assert (shown["status"], shown["message_code"]) == ("failed", "payment_method_refused")
    assert shown["message"] == (
        "Your payment method could not be used, so we did not send your booking to the partner. "
        "Nothing is booked."
    )
    words = (
        "Your payment method could not be used for 360.00 EUR, so your bank was not asked: "
        "you were not charged."
    )
    assert shown["money"]["message"] == words
    [notification] = Notification.objects.filter(booking=booking)
    mail = compose(notification)
    for text in (mail.body, mail.alternatives[0].content):
        assert words in text and "declined" not in text


# --- a hold the provider placed in review is told so, not as a plain hold ------------------------
IN_REVIEW_WORDS = (
    "We are holding 360.00 EUR on your card, and our payment provider has placed the payment in "
    "review; you are not charged yet."
)


def in_review_payment(booking, **fields) -> Payment:
    return Payment.objects.create(
        booking=booking,
        amount=PRICE,
        currency="EUR",
        payment_method="pm_card_riskLevelElevated",
        status=PaymentStatus.AUTHORIZED,
        in_review=True,
        **fields,
    )


def test_a_hold_the_provider_placed_in_review_is_told_to_the_customer(db):
    payment = in_review_payment(BookingFactory(status=S.PENDING_PARTNER))

    facts = payment_facts(payment)

    assert facts.state == "held_in_review"
    money = money_of(facts)
    assert (money.code, money.text) == (CustomerMoney.HELD_IN_REVIEW, IN_REVIEW_WORDS)


def test_a_mail_sent_while_the_hold_is_in_review_says_so(db):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=told("held_in_review"))
    notification = Notification.objects.create(
        booking=booking,
        status_version=3,
        kind=NotificationKind.CONFIRMED,
        message="confirmed",
        money=told("held_in_review"),
    )

    mail = compose(notification)

    assert IN_REVIEW_WORDS in mail.body and IN_REVIEW_WORDS in mail.alternatives[0][0]


def test_a_hold_in_review_is_a_hold_to_the_cancel_and_to_whoever_follows_the_booking(db):
    booking = BookingFactory(status=S.PENDING_PARTNER, customer_money=told("held_in_review"))

    told_cancel = cancel_money(booking, at=timezone.now())

    assert told_cancel.text == (
        "Once the cancellation is done, we release the 360.00 EUR we are holding on your card: "
        "you will not be charged."
    )
    booking.customer_status, booking.customer_message = "cancelled", CustomerMessage.CANCELLED
    assert customer_view.awaited(booking) == customer_view.Awaited.PAYMENT  # the hold is undecided


@pytest.mark.parametrize(
    ("asked", "charging", "words"),
    [
        (  # a cancel's fee from the hold: no more than it can be taken
            Decimal("90.00"),
            {"charging": "90.00"},
            "We asked for 90.00 EUR of the 360.00 EUR held on your card to be charged and do not know "
            "yet whether it was; the rest of the hold is not charged.",
        ),
        (  # the confirmation's capture of the price: the whole hold
            PRICE,
            {},
            "We asked for the 360.00 EUR held on your card to be charged and do not know yet whether it was.",
        ),
        (  # no amount given to the capture: the whole hold
            None,
            {},
            "We asked for the 360.00 EUR held on your card to be charged and do not know yet whether it was.",
        ),
    ],
    ids=["fee", "price", "no-amount"],
)
def test_a_capture_in_doubt_is_told_with_what_it_asked_to_charge(db, asked, charging, words):
    booking = BookingFactory(status=S.CANCELLED)
    payment = Payment.objects.create(
        booking=booking,
        amount=PRICE,
        currency="EUR",
        payment_method="pm_card_visa",
        status=PaymentStatus.AUTHORIZED,
    )
    operation = PaymentOperation.objects.create(
        payment=payment,
        kind=OperationKind.CAPTURE,
        seq=1,
        idempotency_key=f"{payment.pk}:capture:1",
        amount=asked,
        state=OperationState.OPEN,
        tries=1,
        calls_in_doubt=1,
    )

    facts = payment_facts(payment, open_operation=operation)
    money = money_of(facts)

    assert facts.charging == (PRICE if asked is None else asked)
    assert money.text == words
    # kept only of part of the hold: the whole hold's charge is kept as it always was
    assert {k: v for k, v in money.as_json().items() if k == "charging"} == charging
    assert Money.from_json(money.as_json()) == money  # kept with the view and its mails as it was said


def test_a_charge_unknown_kept_before_what_it_asked_for_was_is_still_told_of_the_whole_hold():
    kept = {"code": "charge_unknown", "currency": "EUR", "amount": "360.00", "charged": "0", "refunded": "0"}

    money = Money.from_json(kept)

    assert money.charge_asked == PRICE
    assert money.text.startswith("We asked for the 360.00 EUR held on your card to be charged")
    assert "charging" not in told("held") and "charging" not in told("charged", "360.00")


def test_a_capture_in_doubt_of_a_hold_in_review_is_told_unknown_not_in_review(db):
    payment = in_review_payment(BookingFactory(status=S.CONFIRMED))
    operation = PaymentOperation.objects.create(
        payment=payment,
        kind=OperationKind.CAPTURE,
        seq=1,
        idempotency_key=f"{payment.pk}:capture:1",
        state=OperationState.OPEN,
        tries=1,
        calls_in_doubt=1,
    )

    assert payment_facts(payment, open_operation=operation).state == "charge_unknown"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_card_placed_in_review_is_told_so_on_the_page_and_in_the_api_and_support_still_sees_it(
    paying, api_client
):
    # the partner takes a few seconds to confirm: the hold in review is what the customer sees
    paying.h.faults(async_confirm_delay_s=4)
    offer = paying.h.partner.offers.get()

    reference = book_through_api(api_client, offer, payment_method="pm_card_riskLevelElevated").json()[
        "reference"
    ]

    booking = Booking.objects.get(reference=reference)
    wait_until(lambda: money_code(booking) == "held_in_review", what="the hold in review", timeout_s=20)
    shown = api_client.get(f"/api/v1/bookings/{reference}").json()
    assert shown["status"] == "pending"
    assert shown["money"] == {
        "code": "held_in_review",
        "message": IN_REVIEW_WORDS,
        "currency": "EUR",
        "amount": "360.00",
        "charging": None,
        "charged": "0.00",
        "refunded": "0.00",
        "refund_failed": "0.00",
        "refunded_outside": "0.00",
        "lapses_at": None,
    }
    web = Client()
    web.force_login(booking.customer)
    page = web.get(f"/bookings/{reference}/").content.decode()
    assert 'data-money-code="held_in_review"' in page and IN_REVIEW_WORDS in page
    # support's view is as it was: the payment flagged, and the timeline row for support
    assert Payment.objects.get(booking=booking).in_review
    assert BookingEvent.objects.filter(booking=booking, kind="payment.in_review").exists()

    # and once the partner confirms, the capture is told as any other
    wait_until(lambda: money_code(booking) == "charged", what="the charge", timeout_s=20)
    assert api_client.get(f"/api/v1/bookings/{reference}").json()["money"]["message"] == (
        "We charged 360.00 EUR to your card."
    )
