"""Notifications (bookings/notifications.py): at most one email per change the customer did not
cause, sent by a real Dramatiq worker to a real SMTP server (the project's sink, or a scripted
aiosmtpd server that refuses or hangs up), retried with backoff when refused, re-queued by the
sweeper when its message is lost or its worker died before handing it over, and never sent again
once its outcome is unknown."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from html import unescape

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend
from django.db import transaction
from django.template import TemplateSyntaxError
from django.test import Client
from django.utils import timezone

from bookings import notifications
from bookings.cancelling import money_words
from bookings.customer_money import PaymentFacts, money_of, money_shown
from bookings.models import Actor, Booking, Notification, NotificationKind, NotificationState
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState, CustomerMessage, CustomerMoney
from bookings.tasks import send_notification
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services.sweeper import booking_due_run, sweep
from tests.factories import BookingFactory, NotificationFactory, PartnerFactory
from tests.helpers import lose_messages, unique_code, wait_until
from tests.partners.conftest import book, wait_for_status
from tests.payments.conftest import wait_for_money
from tests.reconciliation.conftest import queued
from tests.sandbox_process import free_port

S = BookingState
State = NotificationState
pytestmark = pytest.mark.integration


# --- helpers ------------------------------------------------------------------------------------
def owe_mail(booking: Booking) -> Notification:
    """The partner's side finishes a cancellation the customer asked for: a change they did not
    cause on the page, so a mail is owed (its message queued after commit)."""
    with transaction.atomic():
        apply_transition(lock_booking(booking.pk), "mark_cancelled", actor=Actor.WORKER)
    return Notification.objects.get(booking=booking)


def cancelling_booking() -> Booking:
    return BookingFactory(offer__partner=PartnerFactory(code=unique_code("mail")), status=S.CANCEL_REQUESTED)


def lose_queued_messages(broker) -> None:
    """What a Redis restart does to the messages waiting on the notifications queue (and to the
    claims they held)."""
    lose_messages(broker, notifications.NOTIFICATIONS_QUEUE)


def die_after_claim(notification: Notification, *, handed_over: bool) -> None:
    """An attempt whose worker was SIGKILLed after its claim, and after marking its handover if
    `handed_over`: the steps `notification_send` takes up to there, and no more, with the claim
    made longer than NOTIFICATION_CLAIM_TIMEOUT_S ago."""
    notification.refresh_from_db()
    attempt = notifications._claim(notification)
    assert attempt == notification.attempts + 1
    if handed_over:
        assert notifications._mark_handed_over(notification.pk, attempt)
    claimed_at = timezone.now() - timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_S + 1)
    Notification.objects.filter(pk=notification.pk).update(
        created_at=claimed_at - timedelta(seconds=1), claimed_at=claimed_at
    )


def timeline_entry(booking: Booking, kind: str):
    (row,) = [row for row in booking_timeline(booking) if row.kind == kind]
    return row


def state_of(notification: Notification) -> str:
    return Notification.objects.values_list("state", flat=True).get(pk=notification.pk)


def wait_for_state(notification: Notification, state: str, timeout_s: float = 15.0) -> Notification:
    wait_until(
        lambda: state_of(notification) == state,
        what=f"notification {notification.pk} to be {state} (now {state_of(notification)})",
        timeout_s=timeout_s,
    )
    notification.refresh_from_db()
    return notification


def notification_rows(booking: Booking) -> list[tuple[str, str]]:
    """The booking's notification rows on the support timeline, as (kind, mark)."""
    return [(row.kind, row.mark) for row in booking_timeline(booking) if row.source == "notification"]


def body(mail: EmailMessage, subtype: str) -> str:
    return mail.get_body((subtype,)).get_content()


@dataclass
class ScriptedSmtp:
    """A real SMTP server (aiosmtpd, on a thread) that answers each message in turn as scripted:
    `refuse` (451, try later), `drop` (hang up once the whole message is in, before answering),
    and accepts every message past the script."""

    script: list[str]
    received: list[tuple[float, str, EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            outcome = self.script.pop(0) if self.script else "accept"
            mail = message_from_bytes(envelope.original_content, policy=default_policy)
            self.received.append((time.monotonic(), outcome, mail))
        if outcome == "refuse":
            return "451 4.3.0 Try again later"
        if outcome == "drop":
            server.transport.close()
            await asyncio.sleep(0)
        return "250 Message accepted for delivery"

    def outcomes(self) -> list[str]:
        with self.lock:
            return [outcome for _, outcome, _ in self.received]


@pytest.fixture
def scripted_smtp(settings) -> Iterator[Callable[..., ScriptedSmtp]]:
    """`scripted_smtp("refuse", "refuse")`: start a ScriptedSmtp server and send mail to it."""
    controllers: list[Controller] = []

    def start(*script: str) -> ScriptedSmtp:
        server = ScriptedSmtp(list(script))
        port = free_port()
        controller = Controller(server, hostname="127.0.0.1", port=port, server_hostname="scripted.localhost")
        controller.start()
        controllers.append(controller)
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        return server

    yield start
    for controller in controllers:
        controller.stop()


# --- the mail itself ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "message", "subject"),
    [
        (NotificationKind.CONFIRMED, CustomerMessage.CONFIRMED, "Your booking {} is confirmed"),
        (NotificationKind.NOT_CONFIRMED, CustomerMessage.DECLINED, "Your booking {} could not be confirmed"),
        (NotificationKind.CANCELLED, CustomerMessage.CANCELLED, "Your booking {} is cancelled"),
        (
            NotificationKind.DISRUPTED,
            CustomerMessage.DISRUPTED_PARTNER_LOST,
            "A problem with your booking {}",
        ),
        (NotificationKind.DISRUPTED, CustomerMessage.DISRUPTED_ENDED, "A problem with your booking {}"),
        (
            NotificationKind.TAKING_LONGER,
            CustomerMessage.TAKING_LONGER,
            "Your booking {} is taking longer than usual",
        ),
    ],
)
def test_each_mail_says_what_happened_what_happens_next_and_links_the_booking(
    db, settings, kind, message, subject
):
    settings.SITE_URL = "https://bookings.example/"
    notification = NotificationFactory(kind=kind, message=message)
    booking = notification.booking

    mail = notifications.compose(notification)

    html = mail.alternatives[0].content
    assert mail.subject == subject.format(booking.reference)
    assert mail.to == [booking.customer.email]
    assert mail.extra_headers == {
        "Message-ID": f"<notification-{notification.pk}@localhost>",
        "X-Booking-Reference": booking.reference,
        "X-Booking-Status-Version": str(notification.status_version),
        "X-Notification-Kind": kind,
    }
    link = f"https://bookings.example/bookings/{booking.reference}/"
    for text in (mail.body, html):
        assert message.label.split(".")[0] in text  # the words the customer was shown
        assert "What happens next" in text
        assert link in text
        assert booking.reference in text
        assert not {"charge", "refund", "payment", "paid"} & set(text.lower().replace(".", " ").split())


def as_read(html_part: str) -> str:
    """A mail's HTML part as its reader reads it: tags dropped, entities decoded."""
    return unescape(re.sub(r"<[^>]+>", " ", html_part))


@pytest.mark.parametrize(
    ("price_unit", "end", "said"),
    [
        ("day", date(2027, 4, 2), "1 April 2027 (1 day)"),
        ("day", date(2027, 4, 4), "1 to 3 April 2027 (3 days)"),
        ("night", date(2027, 4, 3), "1 April 2027 to 3 April 2027 (2 nights)"),
    ],
)
def test_the_mail_tells_a_day_offers_dates_as_its_days_and_a_rooms_to_the_day_you_leave(
    db, price_unit, end, said
):
    """Tester: a one-day tour on 1 April was mailed as "1 April 2027 to 2 April 2027"."""
    notification = NotificationFactory(
        booking__offer__price_unit=price_unit,
        booking__start_date=date(2027, 4, 1),
        booking__end_date=end,
        kind=NotificationKind.CONFIRMED,
        message=CustomerMessage.CONFIRMED,
    )

    mail = notifications.compose(notification)

    for text in (mail.body, as_read(mail.alternatives[0].content)):
        flat = " ".join(text.split())
        assert f"{notification.booking.offer}, {said}, 2 guests." in flat


def test_every_money_code_has_a_line_for_what_happens_next():
    assert set(notifications.MONEY_NEXT) == set(CustomerMoney)


def test_the_mail_of_a_capture_says_the_charge_shows_on_the_statement_not_a_refund(db):
    """Reviewer: the money mail of a capture after a confirmation said "A refund or a released hold
    can take a few days to show on your card's statement"."""
    money = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"))).as_json()
    notification = NotificationFactory(
        booking__customer_money=money,
        kind=NotificationKind.MONEY,
        message=CustomerMessage.CONFIRMED,
        money=money,
    )

    mail = notifications.compose(notification)

    for text in (mail.body, as_read(mail.alternatives[0].content)):
        flat = " ".join(text.split())
        assert "We charged 360.00 EUR to your card." in flat
        assert (
            "What happens next Nothing on your side: the charge shows on your card's statement once "
            "your bank has processed it." in flat
        )
        assert "refund" not in flat.lower() and "released" not in flat.lower()


def test_the_mail_of_a_fee_captured_from_the_hold_says_the_rest_was_released(db):
    """Reviewer: the money mail of a cancel's fee captured from the hold, the rest released,
    named only the charge: the customer sees the hold's rest on their statement for days."""
    money = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("72.00"))).as_json()
    notification = NotificationFactory(
        booking__customer_money=money,
        kind=NotificationKind.MONEY,
        message=CustomerMessage.CANCELLED,
        money=money,
    )

    mail = notifications.compose(notification)

    for text in (mail.body, as_read(mail.alternatives[0].content)):
        flat = " ".join(text.split())
        assert "We charged 72.00 EUR to your card." in flat
        assert (
            "What happens next Nothing on your side: the charge shows on your card's statement once "
            "your bank has processed it. We released the other 288.00 EUR we held on your card: it "
            "can take a few days to leave your card's statement." in flat
        )


def test_the_mail_of_a_yen_booking_tells_whole_yen(db):
    """Reviewer: a yen booking's mail said "We charged 3750.00 JPY" and "the other 11250.00 JPY":
    the yen has no decimals."""
    money = money_of(PaymentFacts("charged", "JPY", Decimal("15000.00"), Decimal("3750.00"))).as_json()
    notification = NotificationFactory(
        booking__customer_money=money,
        booking__currency="JPY",
        booking__total_price=Decimal("15000.00"),
        kind=NotificationKind.MONEY,
        message=CustomerMessage.CANCELLED,
        money=money,
    )

    mail = notifications.compose(notification)

    for text in (mail.body, as_read(mail.alternatives[0].content)):
        flat = " ".join(text.split())
        assert "We charged 3750 JPY to your card." in flat
        assert "We released the other 11250 JPY we held on your card" in flat
        assert ".00 JPY" not in flat


@pytest.mark.parametrize(
    ("facts", "line"),
    [
        (PaymentFacts("charged", "EUR", Decimal("360"), Decimal("360"), Decimal("360")), "A refund can take"),
        (PaymentFacts("released", "EUR", Decimal("360")), "A released hold can take a few days"),
        (PaymentFacts("lapsed", "EUR", Decimal("360")), "An ended hold can take a few days"),
        (PaymentFacts("declined", "EUR", Decimal("360")), "nothing was taken from your card"),
        (PaymentFacts("not_charged", "EUR", Decimal("360")), "nothing was taken from your card"),
    ],
)
def test_each_money_mail_says_what_happens_next_for_its_money(db, facts, line):
    money = money_of(facts).as_json()
    notification = NotificationFactory(
        booking__customer_money=money,
        kind=NotificationKind.MONEY,
        message=CustomerMessage.CONFIRMED,
        money=money,
    )

    mail = notifications.compose(notification)

    for text in (mail.body, as_read(mail.alternatives[0].content)):
        flat = " ".join(text.split())
        assert f"What happens next {notifications.MONEY_NEXT[money['code']]}" in flat
        assert line in flat


def test_a_customer_without_an_address_is_not_mailed_and_support_sees_why(transactional_db):
    notification = NotificationFactory(booking__customer__email="")

    assert notifications.notification_send(notification_id=notification.pk) is None

    notification.refresh_from_db()
    assert (notification.state, notification.error) == (State.FAILED, "the customer has no email address")
    assert notification_rows(notification.booking) == [
        ("notification.queued", ""),
        ("notification.failed", "failed"),
    ]


# --- with the real partner, worker and SMTP sink ----------------------------------------------
def test_a_confirmation_by_the_partner_sends_exactly_one_email(harness, partner_worker, mail_sink, settings):
    settings.SITE_URL = "https://bookings.example"
    h = harness("reference")
    booking = book(h)
    partner_worker(h.partner)

    wait_for_status(booking, S.CONFIRMED)
    notification = wait_for_state(Notification.objects.get(booking=booking), State.SENT)

    booking.refresh_from_db()
    assert (notification.kind, notification.status_version, notification.attempts) == (
        NotificationKind.CONFIRMED,
        booking.status_version,
        1,
    )
    (mail,) = mail_sink.messages()
    assert mail["To"] == booking.customer.email
    assert mail["Subject"] == f"Your booking {booking.reference} is confirmed"
    assert mail["Message-ID"] == f"<notification-{notification.pk}@localhost>"
    assert (mail["X-Booking-Reference"], mail["X-Booking-Status-Version"]) == (
        booking.reference,
        str(booking.status_version),
    )
    assert "Your booking is confirmed." in body(mail, "plain")
    assert f"https://bookings.example/bookings/{booking.reference}/" in body(mail, "html")
    assert notification_rows(booking) == [("notification.queued", ""), ("notification.sent", "")]
    assert Notification.objects.filter(booking=booking).count() == 1


def test_the_customers_own_cancel_mails_nothing_for_cancelling_and_once_for_cancelled(
    harness, partner_worker, mail_sink
):
    h = harness("reference")
    booking = book(h)
    partner_worker(h.partner)
    wait_for_status(booking, S.CONFIRMED)
    confirmed = wait_for_state(Notification.objects.get(booking=booking), State.SENT)
    page = Client()
    page.force_login(booking.customer)

    # the customer cancels on the booking's page: they see `cancelling` there, and get no mail
    response = page.post(f"/bookings/{booking.reference}/cancel/")

    assert response.status_code == 302
    wait_for_status(booking, S.CANCELLED)
    cancelled = wait_for_state(Notification.objects.exclude(pk=confirmed.pk).get(booking=booking), State.SENT)
    booking.refresh_from_db()
    # then: confirmed (v), cancelling (v + 1: theirs, no mail), cancelled (v + 2: the partner's)
    assert [(n.status_version, n.kind) for n in (confirmed, cancelled)] == [
        (booking.status_version - 2, NotificationKind.CONFIRMED),
        (booking.status_version, NotificationKind.CANCELLED),
    ]
    assert Notification.objects.filter(booking=booking).count() == 2
    assert [m["Subject"] for m in mail_sink.messages()] == [
        f"Your booking {booking.reference} is confirmed",
        f"Your booking {booking.reference} is cancelled",
    ]


def test_the_slow_message_is_mailed_once_however_often_the_sweeper_looks(
    harness, partner_worker, mail_sink, settings
):
    # given a partner that confirms after a while, and a booking that waits past CUSTOMER_SLOW_AFTER
    settings.CUSTOMER_SLOW_AFTER = timedelta(seconds=1)
    h = harness("reference")
    h.faults(async_confirm_delay_s=6)
    booking = book(h)
    partner_worker(h.partner)
    wait_for_status(booking, S.PENDING_PARTNER)
    wait_until(
        lambda: timezone.now() - booking.created_at >= settings.CUSTOMER_SLOW_AFTER,
        what="the booking to be waiting longer than CUSTOMER_SLOW_AFTER",
    )

    # when the sweeper finds it due, and looks at it again on later sweeps
    Booking.objects.filter(pk=booking.pk).update(next_check_at=timezone.now())
    sweep(partner=h.partner)
    slow = wait_for_state(
        wait_until(
            lambda: Notification.objects.filter(booking=booking).first(), what="the slow notification"
        ),
        State.SENT,
    )
    booking_due_run(booking.pk)
    booking_due_run(booking.pk)

    # then it was told once, and then once that it is confirmed
    wait_for_status(booking, S.CONFIRMED)
    confirmed = wait_for_state(Notification.objects.exclude(pk=slow.pk).get(booking=booking), State.SENT)
    assert (slow.kind, confirmed.kind) == (NotificationKind.TAKING_LONGER, NotificationKind.CONFIRMED)
    assert [m["Subject"] for m in mail_sink.messages()] == [
        f"Your booking {booking.reference} is taking longer than usual",
        f"Your booking {booking.reference} is confirmed",
    ]


# --- at most once ---------------------------------------------------------------------------------
def test_two_messages_for_one_notification_send_one_email(broker, partner_worker, mail_sink):
    booking = cancelling_booking()
    notification = owe_mail(booking)  # its message is queued on commit
    notifications.queue(notification.pk)  # and a second one (a sweep, a redelivery)

    worker = partner_worker(threads=4)  # both run at once
    wait_for_state(notification, State.SENT)
    worker.join()
    send_notification(notification.pk)  # and the actor once more, directly

    notification.refresh_from_db()
    assert notification.attempts == 1
    (mail,) = mail_sink.messages()
    assert mail["Message-ID"] == f"<notification-{notification.pk}@localhost>"


def test_a_lost_message_is_queued_again_by_the_sweeper_and_sent_once(broker, partner_worker, mail_sink):
    booking = cancelling_booking()
    notification = owe_mail(booking)
    lose_queued_messages(broker)
    Notification.objects.filter(pk=notification.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    partner_worker()

    first = sweep(partner=booking.partner)
    wait_for_state(notification, State.SENT)
    second = sweep(partner=booking.partner)

    assert (first.notifications_requeued, second.notifications_requeued) == (1, 0)
    assert [m["Subject"] for m in mail_sink.messages()] == [f"Your booking {booking.reference} is cancelled"]


def test_a_refused_mail_is_retried_with_growing_pauses_until_accepted(
    broker, partner_worker, scripted_smtp, settings
):
    settings.NOTIFICATION_RETRY_BASE_S = 0.4
    server = scripted_smtp("refuse", "refuse")
    booking = cancelling_booking()
    partner_worker()

    notification = wait_for_state(owe_mail(booking), State.SENT)

    assert server.outcomes() == ["refuse", "refuse", "accept"]
    (first, _, _), (second, _, _), (third, _, accepted) = server.received
    # pauses from NOTIFICATION_RETRY_BASE_S, doubling
    assert second - first >= 0.4
    assert third - second >= 0.8
    assert accepted["Message-ID"] == f"<notification-{notification.pk}@localhost>"
    assert (notification.attempts, notification.sent_at is not None) == (3, True)
    assert "451" in notification.error  # the last refusal stays for support to read
    [sent] = [row for row in booking_timeline(booking) if row.kind == "notification.sent"]
    assert "attempt 3" in sent.summary and "451" in sent.summary


def test_a_mail_refused_on_every_attempt_is_given_up_as_failed(
    broker, partner_worker, scripted_smtp, settings
):
    settings.NOTIFICATION_RETRY_BASE_S = 0.05
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    server = scripted_smtp("refuse", "refuse", "refuse", "refuse")
    booking = cancelling_booking()
    partner_worker()

    notification = wait_for_state(owe_mail(booking), State.FAILED)
    report = sweep(partner=booking.partner)

    assert server.outcomes() == ["refuse", "refuse", "refuse"]
    assert (notification.attempts, report.notifications_requeued) == (3, 0)
    assert notification_rows(booking) == [("notification.queued", ""), ("notification.failed", "failed")]


def test_a_connection_dropped_once_the_mail_was_handed_over_is_delivery_unknown_never_resent(
    broker, partner_worker, scripted_smtp
):
    server = scripted_smtp("drop")
    booking = cancelling_booking()
    worker = partner_worker()

    notification = wait_for_state(owe_mail(booking), State.DELIVERY_UNKNOWN)
    notifications.queue(notification.pk)  # a sweep or a redelivery
    worker.join()
    send_notification(notification.pk)

    assert server.outcomes() == ["drop"]
    assert notification.attempts == 1
    assert "broke off" in notification.error
    assert notification_rows(booking) == [
        ("notification.queued", ""),
        ("notification.delivery_unknown", "unknown"),
    ]


def test_a_send_whose_worker_died_after_handing_it_over_is_settled_as_delivery_unknown_never_resent(
    broker, partner_worker, mail_sink
):
    # given a notification whose attempt marked its handover, and whose worker then died
    booking = cancelling_booking()
    notification = owe_mail(booking)
    lose_queued_messages(broker)
    die_after_claim(notification, handed_over=True)
    worker = partner_worker()

    # when the sweeper looks (a dry run first: it changes nothing)
    preview = sweep(partner=booking.partner, dry_run=True)
    assert (preview.notifications_delivery_unknown, state_of(notification)) == (1, State.SENDING)
    first = sweep(partner=booking.partner)
    second = sweep(partner=booking.partner)

    # then it is settled as delivery unknown, once, and no message for it sends anything
    assert (first.notifications_delivery_unknown, second.notifications_delivery_unknown) == (1, 0)
    assert (first.notifications_put_back, first.notifications_requeued, second.notifications_requeued) == (
        0,
        0,
        0,
    )
    notifications.queue(notification.pk)  # its message delivered late after all
    worker.join()
    send_notification(notification.pk)
    notification.refresh_from_db()
    assert (notification.state, notification.attempts) == (State.DELIVERY_UNKNOWN, 1)
    assert "after handing it to the mail server" in notification.error
    assert mail_sink.messages() == []
    assert notification_rows(booking) == [
        ("notification.queued", ""),
        ("notification.delivery_unknown", "unknown"),
    ]
    unknown = timeline_entry(booking, "notification.delivery_unknown")
    assert (unknown.at, "may have been delivered" in unknown.summary) == (notification.handed_over_at, True)


def test_a_send_whose_worker_died_before_handing_it_over_is_put_back_and_sent_once(
    broker, partner_worker, mail_sink
):
    # given a notification claimed by an attempt whose worker died before it handed anything over
    booking = cancelling_booking()
    notification = owe_mail(booking)
    lose_queued_messages(broker)
    die_after_claim(notification, handed_over=False)

    # when the sweeper looks (a dry run first: it changes nothing), then a worker serves the queue
    preview = sweep(partner=booking.partner, dry_run=True)
    assert (preview.notifications_put_back, state_of(notification)) == (1, State.SENDING)
    first = sweep(partner=booking.partner)
    assert state_of(notification) == State.QUEUED
    worker = partner_worker()
    notification = wait_for_state(notification, State.SENT)
    second = sweep(partner=booking.partner)
    notifications.queue(notification.pk)  # and a late copy of its message
    worker.join()
    send_notification(notification.pk)

    # then it was put back and queued again by that one sweep, and sent once, by a second attempt
    assert (
        first.notifications_put_back,
        first.notifications_requeued,
        first.notifications_delivery_unknown,
    ) == (
        1,
        1,
        0,
    )
    assert (second.notifications_put_back, second.notifications_requeued) == (0, 0)
    notification.refresh_from_db()
    assert (notification.state, notification.attempts) == (State.SENT, 2)
    (mail,) = mail_sink.messages()
    assert (mail["Subject"], mail["Message-ID"]) == (
        f"Your booking {booking.reference} is cancelled",
        f"<notification-{notification.pk}@localhost>",
    )
    assert notification_rows(booking) == [("notification.queued", ""), ("notification.sent", "")]
    sent = timeline_entry(booking, "notification.sent")
    assert "attempt 2" in sent.summary and notifications.STOPPED_BEFORE_HANDOVER in sent.summary


def test_sends_whose_workers_die_before_handing_it_over_are_given_up_after_the_last_attempt(
    broker, partner_worker, mail_sink, settings
):
    settings.NOTIFICATION_MAX_ATTEMPTS = 2
    booking = cancelling_booking()
    notification = owe_mail(booking)
    lose_queued_messages(broker)

    # the first attempt's worker dies before the handover: put back, the timeline says so
    die_after_claim(notification, handed_over=False)
    first = sweep(partner=booking.partner)  # puts it back, and queues a copy nobody serves yet
    assert notification_rows(booking) == [("notification.queued", ""), ("notification.put_back", "failed")]
    assert "put back for another try" in timeline_entry(booking, "notification.put_back").summary
    # and so does the second's, which was the last
    die_after_claim(notification, handed_over=False)
    second = sweep(partner=booking.partner)
    partner_worker().join()  # the copy the first sweep queued finds it given up

    assert [(r.notifications_put_back, r.notifications_given_up) for r in (first, second)] == [(1, 0), (0, 1)]
    notification.refresh_from_db()
    assert (notification.state, notification.attempts) == (State.FAILED, 2)
    assert notification.error.startswith(notifications.STOPPED_BEFORE_HANDOVER)
    assert mail_sink.messages() == []
    assert notification_rows(booking) == [("notification.queued", ""), ("notification.failed", "failed")]
    assert "given up" in timeline_entry(booking, "notification.failed").summary


def test_an_attempt_whose_claim_was_taken_back_before_its_handover_sends_nothing(
    broker, partner_worker, mail_sink, monkeypatch
):
    # given an attempt that stalls with its connection open, past NOTIFICATION_CLAIM_TIMEOUT_S,
    # and the sweeper, meanwhile, puts its row back
    booking = cancelling_booking()
    notification = owe_mail(booking)
    lose_queued_messages(broker)
    mark = notifications._mark_handed_over
    sweeps = []

    def stalled_past_the_claim_timeout(notification_id: int, attempt: int, *included) -> bool:
        claimed_at = timezone.now() - timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_S + 1)
        Notification.objects.filter(pk=notification_id).update(claimed_at=claimed_at)
        sweeps.append(sweep(partner=booking.partner))
        return mark(notification_id, attempt, *included)

    monkeypatch.setattr(notifications, "_mark_handed_over", stalled_past_the_claim_timeout)

    # when the attempt goes on to mark its handover
    assert notifications.notification_send(notification_id=notification.pk) is None

    # then it sent nothing; the row is the next attempt's, which sends it once
    assert ([r.notifications_put_back for r in sweeps], state_of(notification)) == ([1], State.QUEUED)
    assert mail_sink.messages() == []
    monkeypatch.undo()
    partner_worker()
    notification = wait_for_state(notification, State.SENT)
    assert notification.attempts == 2
    assert [m["Subject"] for m in mail_sink.messages()] == [f"Your booking {booking.reference} is cancelled"]


# --- in the order of the booking's changes ----------------------------------------------------------
def slow_to_hand_over(monkeypatch, kind: str, *, seconds: float) -> None:
    """The mail server's link takes `seconds` over each mail of `kind` (at the SMTP edge: the
    attempt has claimed the row and marked its handover, and the message is on its way)."""
    send = EmailBackend.send_messages

    def slowly(backend: EmailBackend, messages) -> int:
        if any(m.extra_headers.get("X-Notification-Kind") == kind for m in messages):
            time.sleep(seconds)
        return send(backend, messages)

    monkeypatch.setattr(EmailBackend, "send_messages", slowly)


# What a slow provider takes over each call: the capture's change comes once the confirmation's
# mail, composed at once (no settle), is on its way; under PAYMENTS_READ_TIMEOUT_S.
SLOW_PROVIDER_MS = [700, 700]


def test_a_booking_s_mails_reach_the_inbox_in_the_order_of_its_changes(
    paying, mail_sink, monkeypatch, settings
):
    """QA: a paying booking's money mail ("Your payment": charged) reached the inbox before its
    confirmation: the partner's confirmation and the capture were a moment apart, and two worker
    threads sent their mails. Here the confirmation's takes a second and a half to hand over, and
    is composed before the capture is answered (no settle, a slow provider): two mails."""
    settings.NOTIFICATION_SETTLE_S = 0
    paying.provider.set_faults(latency_ms=SLOW_PROVIDER_MS)
    slow_to_hand_over(monkeypatch, NotificationKind.CONFIRMED, seconds=1.5)

    # when the partner confirms a paying booking and the capture follows
    booking = paying.book()
    wait_for_status(booking, S.CONFIRMED)
    owed = Notification.objects.filter(booking=booking).order_by("status_version")
    wait_until(
        lambda: (
            list(owed.values_list("kind", "state"))
            == [(NotificationKind.CONFIRMED, State.SENT), (NotificationKind.MONEY, State.SENT)]
        ),
        what="the confirmation and the money mail to be sent",
    )

    # then the inbox has them in that order: the money mail was not even claimed before the
    # confirmation was sent
    confirmed, money = owed
    assert [(m["X-Notification-Kind"], m["X-Booking-Status-Version"]) for m in mail_sink.messages()] == [
        (NotificationKind.CONFIRMED, str(confirmed.status_version)),
        (NotificationKind.MONEY, str(money.status_version)),
    ]
    assert money.claimed_at >= confirmed.sent_at
    assert (confirmed.attempts, money.attempts) == (1, 1)


def test_a_paying_booking_confirmed_and_captured_gets_one_mail_saying_it_was_charged(paying, mail_sink):
    """QA: "Your booking BK-... is confirmed" said "We are holding 360.00 EUR on your card ... not
    charged yet", and "Your payment for booking BK-..." said "We charged 360.00 EUR" 20 ms later:
    the capture runs in the worker's thread right after the confirmation commits. The
    confirmation's mail waits NOTIFICATION_SETTLE_S and tells the charge; the money mail is
    included in it."""
    # when the partner confirms a paying booking and the capture follows at once
    booking = paying.book()
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    owed = Notification.objects.filter(booking=booking).order_by("status_version")
    wait_until(
        lambda: (
            list(owed.values_list("kind", "state"))
            == [(NotificationKind.CONFIRMED, State.SENT), (NotificationKind.MONEY, State.INCLUDED)]
        ),
        what="the confirmation to be sent with the money mail included",
    )

    # then the inbox has one mail, the confirmation, in the money words the booking's page shows
    confirmed, money = owed
    booking.refresh_from_db()
    page = money_words(booking, money_shown(booking))
    assert page.startswith("We charged 360.00 EUR to your card.")
    (mail,) = mail_sink.messages()
    assert mail["Subject"] == f"Your booking {booking.reference} is confirmed"
    assert (mail["X-Booking-Status-Version"], mail["X-Booking-Included-Versions"]) == (
        str(confirmed.status_version),
        str(money.status_version),
    )
    for subtype in ("plain", "html"):
        text = " ".join(as_read(body(mail, subtype)).split())
        assert page in text
        assert "holding" not in text
    # never claimed on its own; support sees it told in the confirmation
    assert (money.attempts, money.claimed_at) == (0, None)
    assert sorted(notification_rows(booking)) == [
        ("notification.included", ""),
        ("notification.queued", ""),
        ("notification.queued", ""),
        ("notification.sent", ""),
    ]


def test_a_money_change_after_the_status_mail_was_sent_is_mailed_on_its_own(paying, mail_sink, settings):
    # given a confirmation's mail that waits for nothing, and a capture answered 0.7 s later
    settings.NOTIFICATION_SETTLE_S = 0
    paying.provider.set_faults(latency_ms=SLOW_PROVIDER_MS)

    # when the partner confirms a paying booking
    booking = paying.book()
    wait_for_status(booking, S.CONFIRMED)
    owed = Notification.objects.filter(booking=booking).order_by("status_version")
    confirmed = wait_for_state(wait_until(owed.first, what="the confirmation's mail"), State.SENT)
    wait_for_money(booking, "charged")

    # then the charge that came after it is mailed on its own, after it: two mails, as before
    money = wait_for_state(owed.last(), State.SENT)
    assert money.kind == NotificationKind.MONEY
    assert money.claimed_at >= confirmed.sent_at
    mails = mail_sink.messages()
    assert [m["Subject"] for m in mails] == [
        f"Your booking {booking.reference} is confirmed",
        f"Your payment for booking {booking.reference}",
    ]
    assert "We are holding 360.00 EUR on your card" in body(mails[0], "plain")
    assert "We charged 360.00 EUR to your card." in body(mails[1], "plain")
    assert [m["X-Booking-Included-Versions"] for m in mails] == [None, None]


def confirmed_then_charged(*, made_ago: timedelta) -> tuple[Notification, Notification]:
    """A paying booking's confirmation (v4) and, a moment later, its capture (v5: "Your payment",
    charged), both owed since `made_ago`, their messages not queued anywhere."""
    booking = BookingFactory(
        status=S.CONFIRMED, status_version=5, offer__partner=PartnerFactory(code=unique_code("order"))
    )
    made = timezone.now() - made_ago
    confirmed = NotificationFactory(booking=booking, status_version=4, created_at=made)
    charged = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"))).as_json()
    money = NotificationFactory(
        booking=booking,
        status_version=5,
        kind=NotificationKind.MONEY,
        money=charged,
        created_at=made + timedelta(milliseconds=100),
    )
    return confirmed, money


def kinds_and_versions(mail_sink) -> list[tuple[str, str]]:
    return [(m["X-Notification-Kind"], m["X-Booking-Status-Version"]) for m in mail_sink.messages()]


def test_a_later_mail_waits_for_an_earlier_one_however_long_that_one_waits_in_the_queue(
    broker, partner_worker, mail_sink
):
    """QA: under a worker backlog "Your payment for booking ... (charged)" reached the inbox two
    minutes before "Your booking ... is confirmed". The confirmation's message was still in the
    queue when the money mail's came up, minutes after the confirmation was made, and a wait
    bounded by the earlier mail's age gave the order up."""
    # given a booking's confirmation and capture owed minutes ago, their messages still in the
    # backlog, the capture's ahead of the confirmation's
    confirmed, money = confirmed_then_charged(made_ago=timedelta(minutes=3))
    notifications.queue(money.pk)
    notifications.queue(confirmed.pk)

    # when a worker takes them up in that order (one thread: the queue's own order)
    partner_worker(threads=1)
    wait_for_state(confirmed, State.SENT)
    money = wait_for_state(money, State.INCLUDED)

    # then the capture's mail waited, and went in the confirmation, the one mail, sent by one
    # attempt: it was never claimed on its own
    confirmed.refresh_from_db()
    assert kinds_and_versions(mail_sink) == [(NotificationKind.CONFIRMED, "4")]
    assert mail_sink.messages()[0]["X-Booking-Included-Versions"] == "5"
    assert (confirmed.attempts, money.attempts, money.claimed_at) == (1, 0, None)
    # and nothing is left asking again for either of them
    wait_until(
        lambda: not queued(broker, notifications.NOTIFICATIONS_QUEUE), what="the notifications queue to drain"
    )


def test_a_later_mail_whose_earlier_one_s_message_was_lost_follows_it_once_the_sweeper_queues_it(
    broker, partner_worker, mail_sink
):
    # given a booking's confirmation and capture owed minutes ago, the confirmation's message lost
    # with Redis: only the capture's is queued
    confirmed, money = confirmed_then_charged(made_ago=timedelta(minutes=3))
    notifications.queue(money.pk)

    # when a worker takes that one up, it sends nothing: the confirmation is still owed
    worker = partner_worker(threads=1)
    worker.join()
    assert (state_of(confirmed), state_of(money), mail_sink.messages()) == (State.QUEUED, State.QUEUED, [])
    assert not queued(broker, notifications.NOTIFICATIONS_QUEUE)  # nor asks again by itself

    # and the sweeper queues the confirmation again, and only it: the capture's mail goes in it
    report = sweep(partner=confirmed.booking.partner)
    assert report.notifications_requeued == 1
    wait_for_state(confirmed, State.SENT)
    money = wait_for_state(money, State.INCLUDED)
    assert kinds_and_versions(mail_sink) == [(NotificationKind.CONFIRMED, "4")]
    # and the included mail is finished: a later sweep queues nothing, lost or not
    Notification.objects.filter(pk=money.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert (money.attempts, sweep(partner=confirmed.booking.partner).notifications_requeued) == (0, 0)


def test_a_run_past_its_time_leaves_the_mail_that_waited_to_a_message_of_its_own(broker, transactional_db):
    """The attempt that ends a mail sends the next one in the same run only while the run is
    younger than EMAIL_TIMEOUT: the actor's time limit is for a mail, not a chain of them."""
    confirmed, money = confirmed_then_charged(made_ago=timedelta(minutes=3))
    Notification.objects.filter(pk=confirmed.pk).update(state=State.SENT, sent_at=timezone.now())

    notifications._send_waiting(confirmed, started=time.monotonic() - settings.EMAIL_TIMEOUT)

    assert state_of(money) == State.QUEUED
    assert [m.args[0] for m in queued(broker, notifications.NOTIFICATIONS_QUEUE)] == [money.pk]


def test_a_status_mail_still_settling_is_not_sent_early_by_the_end_of_an_earlier_one(
    broker, transactional_db
):
    """QA (the cancel's refund under load): the attempt that ended the confirmation's mail sent the
    cancel's at once, 0.9 s after it was owed, before the refund its settle waited for."""
    # given a booking's confirmation just sent, and its cancel's mail owed a moment ago
    confirmed, _ = confirmed_then_charged(made_ago=timedelta(minutes=3))
    Notification.objects.filter(pk=confirmed.pk).update(state=State.SENT, sent_at=timezone.now())
    Notification.objects.filter(booking=confirmed.booking, status_version=5).delete()
    cancelled = NotificationFactory(
        booking=confirmed.booking,
        status_version=5,
        kind=NotificationKind.CANCELLED,
        message=CustomerMessage.CANCELLED,
    )

    # when the attempt that ended the confirmation looks for the mails that waited for it
    notifications._send_waiting(confirmed, started=time.monotonic())

    # then the cancel's is left to a message for when it has settled, not sent now
    assert (state_of(cancelled), cancelled.attempts) == (State.QUEUED, 0)
    [message] = queued(broker, notifications.NOTIFICATIONS_QUEUE)
    assert message.args[0] == cancelled.pk
    assert 0 < message.options["eta"] / 1000 - time.time() <= settings.NOTIFICATION_SETTLE_S


def test_a_later_mail_goes_once_the_earlier_one_is_given_up(broker, partner_worker, scripted_smtp, settings):
    """The bound: a mail the server refuses on every attempt holds the later ones back until it is
    given up (`failed`, after NOTIFICATION_MAX_ATTEMPTS), and no longer: it is never sent after
    them."""
    settings.NOTIFICATION_RETRY_BASE_S = 0.05
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    server = scripted_smtp("refuse", "refuse", "refuse")
    confirmed, money = confirmed_then_charged(made_ago=timedelta(minutes=3))
    notifications.queue(money.pk)
    notifications.queue(confirmed.pk)

    partner_worker(threads=1)  # the queue's own order: the capture's message first
    money = wait_for_state(money, State.SENT)

    assert [(outcome, mail["X-Notification-Kind"]) for _, outcome, mail in server.received] == [
        ("refuse", NotificationKind.CONFIRMED),
        ("refuse", NotificationKind.CONFIRMED),
        ("refuse", NotificationKind.CONFIRMED),
        ("accept", NotificationKind.MONEY),
    ]
    assert (state_of(confirmed), money.attempts) == (State.FAILED, 1)


def test_a_mail_that_cannot_be_composed_is_given_up_and_holds_the_later_ones_no_longer(
    broker, partner_worker, mail_sink, settings, monkeypatch
):
    """A template error was left `queued` for good (uncounted, queued again by every sweep past
    NOTIFICATION_REQUEUE_AFTER_S): in order, it would hold the booking's later mails for ever.
    It is counted as an attempt the server did not accept, and given up after the last."""
    settings.NOTIFICATION_RETRY_BASE_S = 0.05
    settings.NOTIFICATION_MAX_ATTEMPTS = 2
    render = notifications.render_to_string

    def broken_confirmation(template: str, context: dict) -> str:
        if "booking_confirmed" in template:
            raise TemplateSyntaxError("a broken template")
        return render(template, context)

    monkeypatch.setattr(notifications, "render_to_string", broken_confirmation)
    confirmed, money = confirmed_then_charged(made_ago=timedelta(minutes=3))
    notifications.queue(money.pk)
    notifications.queue(confirmed.pk)

    partner_worker(threads=1)
    money = wait_for_state(money, State.SENT)

    confirmed.refresh_from_db()
    assert (confirmed.state, confirmed.attempts) == (State.FAILED, 2)
    assert confirmed.error.startswith("the mail could not be composed: TemplateSyntaxError")
    assert kinds_and_versions(mail_sink) == [(NotificationKind.MONEY, "5")]
    assert "given up" in timeline_entry(confirmed.booking, "notification.failed").summary


@pytest.mark.parametrize("handed_over", [False, True], ids=["put_back", "delivery_unknown"])
def test_an_earlier_mail_whose_worker_died_holds_a_later_one_until_the_sweeper_settles_it(
    broker, partner_worker, mail_sink, handed_over
):
    # given a booking's earlier mail claimed by an attempt whose worker died, before or after it
    # handed the mail over (`sending` until the sweeper settles it, NOTIFICATION_CLAIM_TIMEOUT_S
    # after the claim), and a later change's mail owed since
    booking = cancelling_booking()
    earlier = NotificationFactory(booking=booking)
    with transaction.atomic():  # the partner's side finishes the cancellation: its message queued on commit
        apply_transition(lock_booking(booking.pk), "mark_cancelled", actor=Actor.WORKER)
    later = Notification.objects.exclude(pk=earlier.pk).get(booking=booking)
    die_after_claim(earlier, handed_over=handed_over)
    earlier.refresh_from_db()
    Notification.objects.filter(pk=later.pk).update(created_at=earlier.claimed_at + timedelta(seconds=1))

    # when a worker takes the later mail's message up, it sends nothing and asks nothing again
    worker = partner_worker()
    worker.join()
    assert (state_of(later), mail_sink.messages(), queued(broker, notifications.NOTIFICATIONS_QUEUE)) == (
        State.QUEUED,
        [],
        [],
    )

    # and once the sweeper settles the earlier one, the later goes, after it
    report = sweep(partner=booking.partner)
    later = wait_for_state(later, State.SENT)
    earlier.refresh_from_db()
    cancelled = f"Your booking {booking.reference} is cancelled"
    if handed_over:  # it may have been delivered: never sent again, and the sweep queues the later
        assert (report.notifications_delivery_unknown, report.notifications_requeued) == (1, 1)
        assert earlier.state == State.DELIVERY_UNKNOWN
        assert [m["Subject"] for m in mail_sink.messages()] == [cancelled]
    else:  # put back: the sweep queues it, and it sends the later one when it is done
        assert (report.notifications_put_back, report.notifications_requeued) == (1, 1)
        assert (earlier.state, earlier.attempts) == (State.SENT, 2)
        assert later.claimed_at >= earlier.sent_at
        assert [m["Subject"] for m in mail_sink.messages()] == [
            f"Your booking {booking.reference} is confirmed",
            cancelled,
        ]
    assert later.attempts == 1
