"""Notifications: a numbered change of what a customer is shown that they did not cause
themselves, owed to them by mail, at most once (docs/design.md, "Notifications").

`customer_view` writes the row (the outbox) in the change's own transaction and hands it to
`queue_after_commit`; the actor (`bookings/tasks.py`) calls `notification_send`, one attempt:

- order: a booking's mails go in the order of its changes. The row's own read also asks whether
  an earlier notification of its booking (a lower `status_version`) is unfinished (`queued` or
  `sending`), however long it has waited; if so, nothing is claimed and nothing is queued again:
  the attempt that ends the earlier one (`sent`, or given up: `failed`, `delivery_unknown`) sends
  the mails that waited for it. Without it the money mail of a capture could reach the inbox
  before the confirmation, sent a moment earlier by another thread or still in a backlog. Every
  unfinished mail ends within its NOTIFICATION_MAX_ATTEMPTS (a refusal is counted, as is a mail
  that cannot be composed, and a claim whose worker died is settled by the sweeper), so none
  holds a later one for ever. The question is part of the read (an EXISTS on the unique index of
  booking and version); the look for the mails that waited is one SELECT on that index once a
  mail ended, after that end is committed (a mail owed meanwhile found it unfinished);
- claim: one conditional UPDATE turns a `queued` row into `sending` and counts the attempt; it
  commits before the mail server is called, so a second message for the row finds it taken. The
  attempt's number names the claim in every later write, so an attempt whose claim was taken back
  (below) changes nothing of the one that owns the row now;
- hand over: once the connection to the mail server is open, one more conditional UPDATE sets
  `handed_over_at`, committed immediately before the message is sent. Until it, the attempt has
  certainly sent nothing; from it on, the outcome may be unknown. It is one UPDATE more per mail,
  on purpose: that line can only be drawn by a write that is durable before the first byte of the
  message leaves, and a mail is several SMTP round trips anyway. Without it a worker that died
  while connecting was indistinguishable from one that died while the server took the message,
  and both customers went unmailed (28 of 30 such rows in a 10,000-booking chaos run had sent
  nothing). If the claim was taken back meanwhile, the mark finds no row and nothing is sent;
- send: text and HTML from `templates/email/booking_<kind>.*` (composed once claimed: a template
  error is counted as an attempt that was not accepted), with a Message-ID of the notification's
  own and headers naming the booking and the version it announces;
- include: a status mail (any kind but `money`) tells the money as it is when it is composed: the
  mails of the money alone that follow it, with no other mail between, still owed (each waits
  for it), are told in it (`to_include`; their versions in `X-Booking-Included-Versions`), in
  the words of the latest, and never sent on their own. The handover's mark makes them
  `included`, in the same commit: from there on they end as the status mail does (sent, or
  delivery unknown). A refusal proves the customer was told nothing: they are `queued` again,
  composed into its next attempt, or sent after it once it is given up. The status mail of a
  move whose money step runs right after it (a confirmation's capture, a cancel's refund or
  release) is queued NOTIFICATION_SETTLE_S late (`customer_view._settles`), so that the step's
  change usually exists by then: "confirmed" says "charged", not "holding" with "charged" a
  moment later (nor is it sent sooner by the attempt that ends an earlier mail: `_next_waiting`).
  A money change that comes after the status mail was composed is mailed on its own, after it;
- finish: `sent` once the server accepted it. A refusal, or a server that could not be reached,
  proves nothing was accepted: back to `queued` for a retry after a growing pause, `failed`
  after NOTIFICATION_MAX_ATTEMPTS. A conversation broken off once the message may have been
  handed over ends `delivery_unknown`, never sent again: a second copy is what the customer must
  never get.

The sweeper queues again a `queued` row nobody tried for NOTIFICATION_REQUEUE_AFTER_S (its message
lost with Redis; an `included` row is finished, never queued again), unless an earlier mail of its
booking is unfinished: only the earliest unfinished mail of a booking is queued again, and the
rest follow it. If a worker stopped once the earlier mail ended, before sending the later one, the
later one is now the earliest, and queued so. A `sending` row claimed longer than
NOTIFICATION_CLAIM_TIMEOUT_S ago (its worker died) it puts back to `queued` if the attempt never
marked its handover, the attempt counted (`failed` once NOTIFICATION_MAX_ATTEMPTS are spent), and
settles as `delivery_unknown` if it did. The put-back and the mark are conditional UPDATEs of the
same row: exactly one of them happens, so a late worker never sends a row that was put back.
"""

from __future__ import annotations

import logging
import random
import smtplib
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import NamedTuple

import dramatiq
import redis
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from bookings.cancelling import after_cancel
from bookings.customer_money import Money
from bookings.models import (
    UNFINISHED_NOTIFICATION_STATES,
    Actor,
    Notification,
    NotificationKind,
    NotificationState,
)
from bookings.pricing import amount_text, stay_dates_of
from bookings.states import CustomerMoney
from config import claims, site_url
from config.redis_client import send_hint

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
    NotificationKind.CANCEL_NOT_DONE: "Your booking {reference} is not cancelled yet",
    NotificationKind.MONEY: "Your payment for booking {reference}",
}


# What happens next, in a mail of the money alone (`booking_money.*`), for each money code: every
# code has its line (tests hold the list to `CustomerMoney`), true of that code whatever led to it.
# No statement descriptor is set at the provider: what the statement shows is the bank's to word.
_PAGE_SHOWS = "Nothing on your side for now: your booking's page shows what becomes of the payment."
_REFUND_TAKES_DAYS = "Nothing on your side. A refund can take a few days to show on your card's statement."
_NOTHING_TAKEN = "Nothing on your side: nothing was taken from your card."
MONEY_NEXT = {
    # Still open at the provider (alone in a mail only by exception): its outcome is mailed.
    CustomerMoney.AUTHORIZING: _PAGE_SHOWS,
    CustomerMoney.HELD: _PAGE_SHOWS,
    CustomerMoney.HELD_IN_REVIEW: _PAGE_SHOWS,
    CustomerMoney.CHARGE_UNKNOWN: _PAGE_SHOWS,
    # The capture after a confirmation (or of a cancel's fee): the hold became the charge.
    CustomerMoney.CHARGED: "Nothing on your side: the charge shows on your card's statement once your "
    "bank has processed it.",
    CustomerMoney.PARTLY_REFUNDED: _REFUND_TAKES_DAYS,
    CustomerMoney.REFUNDED: _REFUND_TAKES_DAYS,
    CustomerMoney.REFUND_FAILED: "Nothing on your side for now: our support team will be in touch with "
    "you about the refund to your card that could not be made.",
    CustomerMoney.REFUNDED_OUTSIDE: "Nothing on your side: we owe you nothing more for this refund.",
    CustomerMoney.RELEASED: "Nothing on your side. A released hold can take a few days to leave your "
    "card's statement.",
    CustomerMoney.LAPSED: "Nothing on your side. An ended hold can take a few days to leave your card's "
    "statement.",
    CustomerMoney.RELEASE_REFUSED: "Nothing on your side: you will not be charged. The hold can take a "
    "few days to leave your card's statement once it ends.",
    CustomerMoney.DECLINED: _NOTHING_TAKEN,
    CustomerMoney.METHOD_REFUSED: _NOTHING_TAKEN,
    CustomerMoney.NEEDS_ACTION: _NOTHING_TAKEN,
    CustomerMoney.NOT_CHARGED: _NOTHING_TAKEN,
}


def money_next(money: Money | None) -> str:
    """What happens next to the money told (`MONEY_NEXT`), and, when a capture took less than
    the hold (a cancel's fee), that the rest was released: the customer sees the hold and the
    charge on their statement, and the capture's own mail is the one that can say so."""
    if money is None:
        return ""
    line = MONEY_NEXT.get(money.code, "")
    if money.code == CustomerMoney.CHARGED and money.charged < money.amount:
        rest = amount_text(money.amount - money.charged, money.currency)
        line += (
            f" We released the other {rest} we held on your card: it can take a few days to leave "
            "your card's statement."
        )
    return line


class NotAccepted(Exception):
    """The mail server refused the message, or could not be reached: nothing was accepted."""


class OutcomeUnknown(Exception):
    """The conversation broke off after the message may have been handed over."""


class ClaimTakenBack(Exception):
    """The attempt's claim was taken back before it handed anything over (the sweeper put the
    row back after NOTIFICATION_CLAIM_TIMEOUT_S): the row is another attempt's to send now."""


# --- queueing ---------------------------------------------------------------------------------
def claim_name(notification_id: int) -> str:
    """The claim a notification's message holds while it waits (`config.claims`)."""
    return f"notification:{notification_id}"


def queue(notification_id: int, *, options: dict | None = None, delay_s: float | None = None) -> None:
    """Send the notification's message to its actor, by name (the core never imports actors);
    `delay_s`: not before then. It holds the notification's claim until a worker takes it up,
    so the sweeper adds no copy while it waits in a backlog; the sweeper's own copy passes the
    claim it took (`options`)."""

    def enqueue(claim: dict) -> None:
        message = dramatiq.Message(
            queue_name=NOTIFICATIONS_QUEUE,
            actor_name=SEND_NOTIFICATION,
            args=(notification_id,),
            kwargs={},
            options=dict(claim),
        )
        dramatiq.get_broker().enqueue(message, delay=int(delay_s * 1000) if delay_s else None)

    if options is not None:
        enqueue(options)
    else:
        claims.send_holding(claim_name(notification_id), enqueue)


def queue_after_commit(notification: Notification, *, delay_s: float | None = None) -> None:
    """Queue a notification written in the open transaction once that commits (`delay_s`: not
    before then; a status mail settling, `customer_view._settles`). A broker error is logged and
    swallowed: the row is safe, and the sweeper queues it again."""
    notification_id = notification.pk
    transaction.on_commit(lambda: _queue_or_leave_to_sweeper(notification_id, delay_s=delay_s))


def _queue_or_leave_to_sweeper(notification_id: int, *, delay_s: float | None = None) -> None:
    try:  # a hint: while Redis has just failed to answer one, skipped at once, not waited on again
        send_hint(lambda: queue(notification_id, delay_s=delay_s))
    except redis.RedisError:
        logger.warning(
            "notification not queued (broker unavailable); the sweeper will queue it",
            extra={"notification_id": notification_id},
        )


# --- sending ----------------------------------------------------------------------------------
class Attempted(NamedTuple):
    """How one attempt left its row."""

    ended: bool = False  # it made the row `sent`, `failed` or `delivery_unknown`
    retry_after_s: float | None = None  # not accepted, and tries remain: the pause before the next


def notification_send(*, notification_id: int) -> float | None:
    """One attempt at sending a notification, outside any transaction. Returns the pause before
    the next attempt when this one was not accepted and tries remain, else None. While an earlier
    mail of its booking is unfinished it makes no attempt and queues nothing; an attempt that
    ends its row sends the booking's mails that were waiting for it (`_send_waiting`)."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("a notification's claim must commit before the mail server is called")
    started = time.monotonic()
    notification, attempted = _attempt(notification_id)
    if attempted.ended:
        _send_waiting(notification, started=started)
    return attempted.retry_after_s


def _attempt(notification_id: int) -> tuple[Notification, Attempted]:
    notification = (
        Notification.objects.select_related("booking__customer", "booking__offer")
        .annotate(after_earlier=earlier_unfinished())
        .get(pk=notification_id)
    )
    if notification.state != State.QUEUED:
        return notification, Attempted()  # sent, being sent or ended: another message got here first
    if notification.after_earlier:
        # Its booking's earlier mail goes first, however long it waits: the attempt that ends
        # that one sends this one. Nothing claimed, nothing queued.
        return notification, Attempted()
    attempt = _claim(notification)
    if attempt is None:
        return notification, Attempted()
    try:
        included = to_include(notification)
        email = compose(notification, included=included)
    except Exception as exc:  # a template or data error: counted, so the mail ends (`failed`)
        logger.exception("notification could not be composed", extra={"notification_id": notification_id})
        error = f"the mail could not be composed: {exc!r}"
        return notification, _not_accepted(notification_id, attempt, error=error)
    included_ids = [n.pk for n in included]
    if not email.to:
        ended = _finish(
            notification_id, attempt, state=State.FAILED, error="the customer has no email address"
        )
        return notification, Attempted(ended=ended)
    try:
        _deliver(email, hand_over=lambda: _mark_handed_over(notification_id, attempt, included_ids))
    except ClaimTakenBack:
        logger.warning(
            "notification not sent: its claim was taken back before it was handed over",
            extra={"notification_id": notification_id, "attempt": attempt},
        )
        return notification, Attempted()
    except NotAccepted as exc:
        return notification, _not_accepted(
            notification_id, attempt, error=str(exc), included_ids=included_ids
        )
    except OutcomeUnknown as exc:
        ended = _finish(notification_id, attempt, state=State.DELIVERY_UNKNOWN, error=str(exc))
        logger.warning(
            "notification may or may not have been delivered; it is not sent again",
            extra={"notification_id": notification_id, "error": str(exc)},
        )
        return notification, Attempted(ended=ended)
    ended = _finish(notification_id, attempt, state=State.SENT, sent_at=timezone.now())
    logger.info(
        "notification sent",
        extra={"notification_id": notification_id, "booking": notification.booking.reference},
    )
    return notification, Attempted(ended=ended)


def _send_waiting(notification: Notification, *, started: float) -> None:
    """Send the booking's mails that waited for `notification`, whose attempt just ended it: one
    after the other in this run while each ends, as long as the run is younger than
    EMAIL_TIMEOUT (the actor's time limit is for a mail's few round trips, not a chain of them);
    past that, by a message of its own. A mail that waited was never tried: its message found an
    earlier one unfinished and left it. One tried before keeps its own messages (a retry). A status
    mail still settling (`_next_waiting`) is queued for when it has settled."""
    while (waiting := _next_waiting(notification)) is not None:
        waiting_id, settling_s = waiting
        if settling_s > 0 or time.monotonic() - started >= settings.EMAIL_TIMEOUT:
            _queue_or_leave_to_sweeper(waiting_id, delay_s=settling_s or None)
            return
        try:
            notification, attempted = _attempt(waiting_id)
        except Exception:  # that mail's error, not the ended one's: its own message tries again
            logger.exception("notification not sent in its turn", extra={"notification_id": waiting_id})
            _queue_or_leave_to_sweeper(waiting_id)
            return
        if attempted.retry_after_s is not None:
            _queue_or_leave_to_sweeper(waiting_id, delay_s=attempted.retry_after_s)
        if not attempted.ended:
            return


def _next_waiting(notification: Notification) -> tuple[int, float] | None:
    """The booking's first unfinished mail after `notification`, if it waited for it (`queued`,
    never tried), and for how long it still settles: a status mail younger than
    NOTIFICATION_SETTLE_S may be one queued that late for the money step after it
    (`customer_view._settles`), and is not sent before its time because an earlier one ended."""
    following = (
        Notification.objects.filter(
            booking_id=notification.booking_id,
            status_version__gt=notification.status_version,
            state__in=UNFINISHED_NOTIFICATION_STATES,
        )
        .order_by("status_version")
        .values_list("pk", "state", "attempts", "kind", "created_at")
        .first()
    )
    if following is None:
        return None
    pk, state, attempts, kind, created_at = following
    if (state, attempts) != (State.QUEUED, 0):
        return None
    if kind == NotificationKind.MONEY:
        return pk, 0.0
    settled_at = created_at + timedelta(seconds=settings.NOTIFICATION_SETTLE_S)
    return pk, max((settled_at - timezone.now()).total_seconds(), 0.0)


def earlier_unfinished() -> Exists:
    """Whether an earlier notification of the same booking (a lower `status_version`: an earlier
    change) is still queued or being sent, however long ago it was made or claimed: a mail goes
    only once every earlier one is sent or given up (`failed`, `delivery_unknown`). The sweeper
    asks it too: a mail waiting its turn is not lost, the earlier one's attempt sends it."""
    return Exists(
        Notification.objects.filter(
            booking_id=OuterRef("booking_id"),
            status_version__lt=OuterRef("status_version"),
            state__in=UNFINISHED_NOTIFICATION_STATES,
        )
    )


def to_include(notification: Notification) -> list[Notification]:
    """The mails of the money alone (`money`) that a status mail tells with its own: those of its
    booking that follow it, with no other mail between, still owed (`queued`, never tried: each
    waits for this one). Read once this one is claimed, so what it tells is the money as it is
    when it is composed; a money mail owed after that goes on its own, after it."""
    if notification.kind == NotificationKind.MONEY:
        return []
    included = []
    following = Notification.objects.filter(
        booking_id=notification.booking_id, status_version__gt=notification.status_version
    ).order_by("status_version")
    for row in following:
        if (row.kind, row.state, row.attempts) != (NotificationKind.MONEY, State.QUEUED, 0):
            break
        row.booking = notification.booking
        included.append(row)
    return included


# The header that names the versions a status mail tells beside its own (`to_include`).
INCLUDED_VERSIONS_HEADER = "X-Booking-Included-Versions"


def compose(
    notification: Notification, *, included: list[Notification] | None = None
) -> EmailMultiAlternatives:
    """The mail of a notification: what happened (the words the customer was shown at that
    version), what happens next, and a link to the booking's page. A status mail tells the money
    as the latest of the money mails it includes (`included`, by default `to_include`) told it:
    the words the booking's page showed at that change; its headers name those versions too."""
    booking = notification.booking
    included = to_include(notification) if included is None else included
    # Whose money the mail tells: the latest change it announces (empty: no payment).
    told = included[-1] if included else notification
    subject = SUBJECTS[notification.kind].format(reference=booking.reference)
    context = {
        "subject": subject,
        "booking": booking,
        "customer": booking.customer,
        "message": notification.message_text,
        # As the pages tell them: a day offer by its days, a night offer to the day you leave.
        "dates": stay_dates_of(booking),
        "message_code": notification.message,
        "money": _money_told(told),
        "money_words": _money_words(told),
        "money_next": money_next(_money_told(told)),
        "booking_url": site_url.absolute(reverse("web:booking", args=[booking.reference])),
    }
    template = f"email/booking_{notification.kind}"
    headers = {
        "Message-ID": message_id(notification),
        "X-Booking-Reference": booking.reference,
        "X-Booking-Status-Version": str(notification.status_version),
        "X-Notification-Kind": notification.kind,
    }
    if included:
        headers[INCLUDED_VERSIONS_HEADER] = ",".join(str(n.status_version) for n in included)
    email = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{template}.txt", context),
        to=[booking.customer.email] if booking.customer.email else [],
        headers=headers,
    )
    email.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    return email


def _money_told(notification: Notification) -> Money | None:
    return Money.from_json(notification.money)


# The mails that said, beside the money, what a cancel does with it, before their words were kept.
_SAID_AFTER_CANCEL = frozenset({NotificationKind.CANCELLED, NotificationKind.MONEY})


def _money_words(notification: Notification) -> str:
    """The money's words as the customer was shown them at the change (kept with it). A mail
    staged before they were kept (bookings/0019) is worded from the booking as it is now, as it
    was then: for the outbox of an upgrade only, removable once no such mail is left unsent."""
    if notification.money_words or not notification.money:
        return notification.money_words
    money = Money.from_json(notification.money)
    assert money is not None
    more = after_cancel(notification.booking, money) if notification.kind in _SAID_AFTER_CANCEL else ""
    return f"{money.text} {more}" if more else money.text


def message_id(notification: Notification) -> str:
    """The same on every attempt: a copy that did get through is recognisably the same mail."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<notification-{notification.pk}@{domain}>"


def _claim(notification: Notification) -> int | None:
    """Take a queued notification, as read, for this attempt (committed at once: no transaction
    is open). Returns the attempt's number, or None if another attempt got there first."""
    attempt = notification.attempts + 1
    taken = Notification.objects.filter(
        pk=notification.pk, state=State.QUEUED, attempts=notification.attempts
    ).update(state=State.SENDING, claimed_at=timezone.now(), handed_over_at=None, attempts=attempt)
    return attempt if taken == 1 else None


def _this_attempt(notification_id: int, attempt: int) -> QuerySet[Notification]:
    """The row while this attempt's claim stands: once the sweeper put it back, a later claim
    counts a higher attempt, so nothing this one writes touches that one's row."""
    return Notification.objects.filter(pk=notification_id, state=State.SENDING, attempts=attempt)


def _mark_handed_over(notification_id: int, attempt: int, included_ids: Sequence[int] = ()) -> bool:
    """Commit that this attempt now hands the message over, and that the mails it includes are
    told in it (`included`: from here on they end as it does, never sent on their own); False if
    its claim was taken back. Each of those waited for this one, so nothing else took them."""
    with transaction.atomic():
        if _this_attempt(notification_id, attempt).update(handed_over_at=timezone.now()) != 1:
            return False
        if not included_ids:
            return True
        taken = Notification.objects.filter(pk__in=included_ids, state=State.QUEUED, attempts=0).update(
            state=State.INCLUDED
        )
        if taken != len(included_ids):  # raised: the handover's mark is rolled back with it
            raise NotAccepted("a mail it includes was taken meanwhile: composed again on the next attempt")
    return True


def _deliver(email: EmailMultiAlternatives, *, hand_over: Callable[[], bool]) -> None:
    """Hand the mail to the server, telling a certain refusal from an unknown outcome.
    `hand_over` marks the moment on the row, once the connection is open and just before the
    message is sent; if it says the claim is gone, nothing is sent."""
    connection = get_connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError) as exc:
        raise NotAccepted(f"mail server unreachable: {exc!r}") from exc
    try:
        # A database error here propagates: the row stays unmarked, so it is known unsent.
        if not hand_over():
            raise ClaimTakenBack
        connection.send_messages([email])
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        raise NotAccepted(f"mail server refused it: {exc!r}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise OutcomeUnknown(f"mail server conversation broke off: {exc!r}") from exc
    finally:
        with suppress(smtplib.SMTPException, OSError):  # accepted or not, the answer is in
            connection.close()


def _finish(notification_id: int, attempt: int, **fields: object) -> bool:
    """End this attempt as `fields` say; False if its claim was taken back meanwhile."""
    return _this_attempt(notification_id, attempt).update(**fields) == 1


def _not_accepted(
    notification_id: int, attempt: int, *, error: str, included_ids: Sequence[int] = ()
) -> Attempted:
    """Nothing was accepted: the mails it included are owed again (`queued`), after it if it is
    retried, on their own if it is given up."""
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=notification_id)
        if (notification.state, notification.attempts) != (State.SENDING, attempt):
            return Attempted()
        gives_up = notification.attempts >= settings.NOTIFICATION_MAX_ATTEMPTS
        notification.state = State.FAILED if gives_up else State.QUEUED
        notification.error = error
        notification.save(update_fields=["state", "error"])
        if included_ids:
            Notification.objects.filter(pk__in=included_ids, state=State.INCLUDED).update(state=State.QUEUED)
    logger.warning(
        "notification not accepted" + ("; giving up" if gives_up else "; retrying"),
        extra={"notification_id": notification_id, "attempts": notification.attempts, "error": error},
    )
    return Attempted(ended=True) if gives_up else Attempted(retry_after_s=_pause(notification.attempts))


def _pause(attempts: int) -> float:
    """Doubling from NOTIFICATION_RETRY_BASE_S up to NOTIFICATION_RETRY_MAX_S, with a little
    jitter so that mail refused together is not retried together."""
    base = settings.NOTIFICATION_RETRY_BASE_S * 2 ** (attempts - 1)
    return min(settings.NOTIFICATION_RETRY_MAX_S, base) * random.uniform(1.0, 1.25)


# --- the sweeper's side -----------------------------------------------------------------------
# The error of an attempt whose worker stopped before its handover: on a `queued` row, it tells
# the timeline the row was put back, not refused.
STOPPED_BEFORE_HANDOVER = "its worker stopped before handing it to the mail server"


class AbandonedSettled(NamedTuple):
    put_back: int  # nothing handed over: `queued` for another try
    given_up: int  # nothing handed over, and NOTIFICATION_MAX_ATTEMPTS spent: `failed`
    delivery_unknown: int  # handed over with no answer: never sent again


def abandoned_settle(
    *, rows: QuerySet[Notification], before: datetime, dry_run: bool = False
) -> AbandonedSettled:
    """Settle the attempts among `rows` claimed before `before` and never finished (their worker
    stopped). One that never marked its handover certainly sent nothing: put back, its attempt
    counted. One that did may have delivered the mail: `delivery_unknown`, never sent again.

    The rows are read first and the UPDATEs name them by id, with every condition on the row
    itself: a handover marked meanwhile is then seen, and keeps its row from being put back. (An
    UPDATE through the sweeper's join on a partner would be one through a subquery, whose reading
    PostgreSQL does not take again when a row changes under it.) A row claimed again meanwhile
    has a later `claimed_at`, and is left alone."""
    ids = list(rows.values_list("pk", flat=True))
    if not ids:
        return AbandonedSettled(0, 0, 0)
    abandoned = Notification.objects.filter(pk__in=ids).abandoned(before=before)
    unsent = abandoned.filter(handed_over_at__isnull=True)
    spent = Q(attempts__gte=settings.NOTIFICATION_MAX_ATTEMPTS)
    handed_over = abandoned.filter(handed_over_at__isnull=False)
    if dry_run:
        return AbandonedSettled(
            unsent.exclude(spent).count(), unsent.filter(spent).count(), handed_over.count()
        )
    within = f"(no outcome within {settings.NOTIFICATION_CLAIM_TIMEOUT_S} s)"
    given_up = unsent.filter(spent).update(state=State.FAILED, error=f"{STOPPED_BEFORE_HANDOVER} {within}")
    put_back = unsent.update(state=State.QUEUED, error=f"{STOPPED_BEFORE_HANDOVER} {within}")  # the rest
    delivery_unknown = handed_over.update(
        state=State.DELIVERY_UNKNOWN, error=f"its worker stopped after handing it to the mail server {within}"
    )
    return AbandonedSettled(put_back, given_up, delivery_unknown)


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
    if notification.state == State.INCLUDED:
        included = f"{what} told in the status email before it, not sent on its own"
        return [owed, TimelineEntry(notification.created_at, "notification.included", included)]
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
        case State.QUEUED if notification.error.startswith(STOPPED_BEFORE_HANDOVER):
            latest = TimelineEntry(
                at,
                "notification.put_back",
                f"{what} never handed over, {tries}; put back for another try{error}",
                "failed",
            )
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
                notification.handed_over_at or at,
                "notification.delivery_unknown",
                f"{what}: delivery unknown, {tries}; it may have been delivered, so not sent again{error}",
                "unknown",
            )
    return [owed, latest]
