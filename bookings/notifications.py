"""Notifications: a numbered change of what a customer is shown that they did not cause
themselves, owed to them by mail, at most once (docs/design.md, "Notifications").

`customer_view` writes the row (the outbox) in the change's own transaction and hands it to
`queue_after_commit`; the actor (`bookings/tasks.py`) calls `notification_send`, one attempt:

- claim: one conditional UPDATE turns a `queued` row into `sending` and counts the attempt; it
  commits before the mail server is called, so a second message for the row finds it taken;
- send: text and HTML from `templates/email/booking_<kind>.*`, with a Message-ID of the
  notification's own and headers naming the booking and the version it announces;
- finish: `sent` once the server accepted it. A refusal, or a server that could not be reached,
  proves nothing was accepted: back to `queued` for a retry after a growing pause, `failed`
  after NOTIFICATION_MAX_ATTEMPTS. A conversation broken off once the message may have been
  handed over ends `delivery_unknown`, never sent again: a second copy is what the customer must
  never get.

The sweeper queues again a `queued` row nobody tried for NOTIFICATION_REQUEUE_AFTER_S (its
message lost with Redis) and settles a `sending` row older than NOTIFICATION_CLAIM_TIMEOUT_S (its
worker died mid-send) as `delivery_unknown`.
"""

from __future__ import annotations

import logging
import random
import smtplib
from contextlib import suppress
from datetime import datetime
from email.utils import parseaddr
from typing import NamedTuple

import dramatiq
import redis
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import F, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from bookings.models import Actor, Notification, NotificationKind, NotificationState

logger = logging.getLogger(__name__)

SEND_NOTIFICATION = "send_notification"
NOTIFICATIONS_QUEUE = "notifications"  # mail waits behind no partner's backlog, and slows none

State = NotificationState

SUBJECTS = {
    NotificationKind.CONFIRMED: "Your booking {reference} is confirmed",
    NotificationKind.NOT_CONFIRMED: "Your booking {reference} could not be confirmed",
    NotificationKind.CANCELLED: "Your booking {reference} is cancelled",
    NotificationKind.DISRUPTED: "A problem with your booking {reference}",
    NotificationKind.TAKING_LONGER: "Your booking {reference} is taking longer than usual",
    NotificationKind.MONEY: "Your payment for booking {reference}",
}


class NotAccepted(Exception):
    """The mail server refused the message, or could not be reached: nothing was accepted."""


class OutcomeUnknown(Exception):
    """The conversation broke off after the message may have been handed over."""


# --- queueing ---------------------------------------------------------------------------------
def queue(notification_id: int, *, options: dict | None = None) -> None:
    """Send the notification's message to its actor, by name (the core never imports actors);
    `options` travel with the message (the sweeper's claim on it)."""
    message = dramatiq.Message(
        queue_name=NOTIFICATIONS_QUEUE,
        actor_name=SEND_NOTIFICATION,
        args=(notification_id,),
        kwargs={},
        options=dict(options or {}),
    )
    dramatiq.get_broker().enqueue(message)


def queue_after_commit(notification: Notification) -> None:
    """Queue a notification written in the open transaction once that commits. A broker error
    is logged and swallowed: the row is safe, and the sweeper queues it again."""
    notification_id = notification.pk

    def queue_or_leave_to_sweeper() -> None:
        try:
            queue(notification_id)
        except redis.RedisError:
            logger.warning(
                "notification not queued (broker unavailable); the sweeper will queue it",
                extra={"notification_id": notification_id},
            )

    transaction.on_commit(queue_or_leave_to_sweeper)


# --- sending ----------------------------------------------------------------------------------
def notification_send(*, notification_id: int) -> float | None:
    """One attempt at sending a notification, outside any transaction. Returns the pause before
    the next attempt when this one was not accepted and tries remain, else None."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("a notification's claim must commit before the mail server is called")
    notification = Notification.objects.select_related("booking__customer", "booking__offer").get(
        pk=notification_id
    )
    if notification.state != State.QUEUED:
        return None  # sent, being sent or ended: another message for it got here first
    email = compose(notification)  # before the claim: a template error leaves the row queued
    if not _claim(notification_id):
        return None
    if not email.to:
        _finish(notification_id, state=State.FAILED, error="the customer has no email address")
        return None
    try:
        _deliver(email)
    except NotAccepted as exc:
        return _not_accepted(notification_id, error=str(exc))
    except OutcomeUnknown as exc:
        _finish(notification_id, state=State.DELIVERY_UNKNOWN, error=str(exc))
        logger.warning(
            "notification may or may not have been delivered; it is not sent again",
            extra={"notification_id": notification_id, "error": str(exc)},
        )
        return None
    _finish(notification_id, state=State.SENT, sent_at=timezone.now())
    logger.info(
        "notification sent",
        extra={"notification_id": notification_id, "booking": notification.booking.reference},
    )
    return None


def compose(notification: Notification) -> EmailMultiAlternatives:
    """The mail of a notification: what happened (the words the customer was shown at that
    version), what happens next, and a link to the booking's page."""
    booking = notification.booking
    subject = SUBJECTS[notification.kind].format(reference=booking.reference)
    context = {
        "subject": subject,
        "booking": booking,
        "customer": booking.customer,
        "message": notification.message_text,
        "message_code": notification.message,
        # What the customer was told about their money with this change (empty: no payment).
        "money": _money_told(notification),
        "booking_url": settings.SITE_URL.rstrip("/") + reverse("web:booking", args=[booking.reference]),
    }
    template = f"email/booking_{notification.kind}"
    email = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{template}.txt", context),
        to=[booking.customer.email] if booking.customer.email else [],
        headers={
            "Message-ID": message_id(notification),
            "X-Booking-Reference": booking.reference,
            "X-Booking-Status-Version": str(notification.status_version),
            "X-Notification-Kind": notification.kind,
        },
    )
    email.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    return email


def _money_told(notification: Notification):
    # customer_view writes the notifications (it imports this module): its words are read here
    # when a mail is rendered.
    from bookings.customer_view import Money

    return Money.from_json(notification.money)


def message_id(notification: Notification) -> str:
    """The same on every attempt: a copy that did get through is recognisably the same mail."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<notification-{notification.pk}@{domain}>"


def _claim(notification_id: int) -> bool:
    """Take a queued notification for this attempt (committed at once: no transaction is open)."""
    return (
        Notification.objects.filter(pk=notification_id, state=State.QUEUED).update(
            state=State.SENDING, claimed_at=timezone.now(), attempts=F("attempts") + 1
        )
        == 1
    )


def _deliver(email: EmailMultiAlternatives) -> None:
    """Hand the mail to the server, telling a certain refusal from an unknown outcome."""
    connection = get_connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError) as exc:
        raise NotAccepted(f"mail server unreachable: {exc!r}") from exc
    try:
        connection.send_messages([email])
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        raise NotAccepted(f"mail server refused it: {exc!r}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise OutcomeUnknown(f"mail server conversation broke off: {exc!r}") from exc
    finally:
        with suppress(smtplib.SMTPException, OSError):  # accepted or not, the answer is in
            connection.close()


def _finish(notification_id: int, **fields: object) -> None:
    Notification.objects.filter(pk=notification_id, state=State.SENDING).update(**fields)


def _not_accepted(notification_id: int, *, error: str) -> float | None:
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=notification_id)
        if notification.state != State.SENDING:
            return None
        gives_up = notification.attempts >= settings.NOTIFICATION_MAX_ATTEMPTS
        notification.state = State.FAILED if gives_up else State.QUEUED
        notification.error = error
        notification.save(update_fields=["state", "error"])
    logger.warning(
        "notification not accepted" + ("; giving up" if gives_up else "; retrying"),
        extra={"notification_id": notification_id, "attempts": notification.attempts, "error": error},
    )
    return None if gives_up else _pause(notification.attempts)


def _pause(attempts: int) -> float:
    """Doubling from NOTIFICATION_RETRY_BASE_S up to NOTIFICATION_RETRY_MAX_S, with a little
    jitter so that mail refused together is not retried together."""
    base = settings.NOTIFICATION_RETRY_BASE_S * 2 ** (attempts - 1)
    return min(settings.NOTIFICATION_RETRY_MAX_S, base) * random.uniform(1.0, 1.25)


# --- the sweeper's side -----------------------------------------------------------------------
def abandoned_settle(*, rows: QuerySet[Notification]) -> int:
    """End the given claimed-but-unfinished notifications as `delivery_unknown`: their worker
    stopped mid-send, so the mail may be out, and it is never sent again."""
    return rows.filter(state=State.SENDING).update(
        state=State.DELIVERY_UNKNOWN,
        error=(
            f"the attempt gave no outcome within {settings.NOTIFICATION_CLAIM_TIMEOUT_S} s "
            "(its worker stopped); it may have been delivered, so it is not sent again"
        ),
    )


# --- the support timeline ---------------------------------------------------------------------
class TimelineEntry(NamedTuple):
    at: datetime
    kind: str
    summary: str
    mark: str = ""
    actor: str = Actor.WORKER


def timeline_entries(notification: Notification) -> list[TimelineEntry]:
    """A notification on its booking's timeline: when it was owed, and how its latest attempt
    went (the row keeps the latest error, even once a later attempt got it through)."""
    what = f"{notification.get_kind_display()} email (version {notification.status_version})"
    owed = TimelineEntry(
        notification.created_at, "notification.queued", f"{what} owed to the customer", actor=Actor.SYSTEM
    )
    if notification.claimed_at is None:
        return [owed]
    tries = f"attempt {notification.attempts}"
    error = f": {notification.error[:200]}" if notification.error else ""
    at = notification.claimed_at
    match notification.state:
        case State.SENT:
            earlier = f" (an earlier attempt{error})" if error else ""
            latest = TimelineEntry(
                notification.sent_at, "notification.sent", f"{what} sent, {tries}{earlier}"
            )
        case State.SENDING:
            latest = TimelineEntry(at, "notification.sending", f"{what}: {tries} under way", "in_flight")
        case State.QUEUED:
            latest = TimelineEntry(
                at, "notification.failed", f"{what} not accepted, {tries}; retrying{error}", "failed"
            )
        case State.FAILED:
            latest = TimelineEntry(
                at, "notification.failed", f"{what} never sent, {tries}, given up{error}", "failed"
            )
        case _:
            latest = TimelineEntry(
                at,
                "notification.delivery_unknown",
                f"{what}: delivery unknown, {tries}; not sent again{error}",
                "unknown",
            )
    return [owed, latest]
