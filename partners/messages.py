"""Sending work to the actors: by actor name, through the broker, on the right queue.

The services decide what must happen next and the actors (partners/tasks.py) call the services,
so the services and reconciliation never import the actors: they send here by name, and only
the actors' module imports the services. Work for a booking or a partner goes to that partner's
queue (`partners.queues`), so one slow partner cannot hold up the others; the sweeper's audit
reads go to the partner's audit queue, so they never wait behind its submissions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

import dramatiq
import redis
from django.db import transaction

from bookings.models import Booking
from config import claims
from config.redis_client import send_hint
from partners.models import Partner

logger = logging.getLogger(__name__)

SUBMIT_BOOKING = "submit_booking"
SYNC_BOOKING = "sync_booking"
CANCEL_BOOKING = "cancel_booking"
COMPENSATE_RESERVATION = "compensate_reservation"
WALK_CHANGE_LISTING = "walk_change_listing"
PROCESS_INBOUND_EVENT = "process_inbound_event"
WEBHOOKS_QUEUE = "webhooks"  # deliveries are applied apart from any partner's calls


@dataclass(frozen=True)
class FollowUp:
    """What a service asks to be queued once it has returned (after commit)."""

    submit_after_s: float | None = None
    sync_after_s: float | None = None
    compensate_after_s: float | None = None


def send(
    actor_name: str, *args: object, queue_name: str, delay_s: float | None = None, options: dict | None = None
) -> None:
    """`options` travel with the message (a claim the worker ends when it takes it up)."""
    message = dramatiq.Message(
        queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options=options or {}
    )
    dramatiq.get_broker().enqueue(message, delay=int(delay_s * 1000) if delay_s else None)


def send_for_partner(
    actor_name: str,
    partner: Partner,
    *args: object,
    delay_s: float | None = None,
    options: dict | None = None,
) -> None:
    send(actor_name, *args, queue_name=partner.queue_name, delay_s=delay_s, options=options)


@dataclass
class Hint:
    """A message sent after commit as a hint, and whether the broker took it: None until the
    caller's transaction commits, then True or False (what it says to a person who asked for it)."""

    sent: bool | None = None


def send_for_partner_on_commit(actor_name: str, partner: Partner, *args: object) -> Hint:
    """Queue after commit, as a hint: for work the caller's committed rows already mark due (a
    compensation decided and not verified, the lookup a settled booking's unresolved create owes),
    which the sweeper queues when Redis does not take it.
    A broker that does not answer then never fails the request (a support action) that committed."""
    hint = Hint()

    def send_or_leave_to_sweeper() -> None:
        try:
            send_hint(lambda: send_for_partner(actor_name, partner, *args))
        except Exception:  # the broker's errors, whichever: the rows say it is due
            hint.sent = False
            logger.warning(
                "work committed but not queued; the sweeper will queue it",
                exc_info=True,
                extra={"actor": actor_name, "partner": partner.code},
            )
            return
        hint.sent = True

    transaction.on_commit(send_or_leave_to_sweeper)
    return hint


def send_audit_sync(booking_id: UUID | str, partner: Partner) -> None:
    """Re-read a confirmed booking for the sweeper's audit, on the partner's audit queue. Only
    the audit: every other sync (a due booking's, a webhook's, support's) and every submission
    stays on the partner's queue."""
    send(SYNC_BOOKING, str(booking_id), queue_name=partner.audit_queue_name)


def step_claim(actor_name: str, booking_id: UUID | str) -> str:
    """The claim a booking's step (submit, sync, cancel) holds while its message waits."""
    return f"{actor_name}:{booking_id}"


def send_step(
    actor_name: str,
    booking_id: UUID | str,
    *,
    queue_name: str,
    delay_s: float | None = None,
    options: dict | None = None,
) -> None:
    """Queue a booking's step. It holds the step's claim until a worker takes it up
    (`config.claims`), so the sweeper adds no copy of a step whose message waits in a backlog;
    the sweeper's own copy passes the claim it took (`options`)."""
    if options is not None:
        send(actor_name, str(booking_id), queue_name=queue_name, delay_s=delay_s, options=options)
        return
    claims.send_holding(
        step_claim(actor_name, booking_id),
        lambda held: send(actor_name, str(booking_id), queue_name=queue_name, delay_s=delay_s, options=held),
    )


def send_for_booking(
    actor_name: str, booking_id: UUID | str, *, delay_s: float | None = None, options: dict | None = None
) -> None:
    """A booking's step on its partner's queue (`send_step`)."""
    code = Booking.objects.filter(pk=booking_id).values_list("partner__code", flat=True).first()
    if code is None:
        logger.warning("no booking to queue work for", extra={"booking_id": str(booking_id)})
        return
    send_step(
        actor_name, booking_id, queue_name=Partner(code=code).queue_name, delay_s=delay_s, options=options
    )


def send_follow_up(booking_id: UUID | str, follow_up: FollowUp, *, sync_queue: str | None = None) -> None:
    """Queue the submission or sync a booking's service asked for; the sync on `sync_queue` when
    given (a read's next read stays on the queue the read came from), else the partner's."""
    if follow_up.submit_after_s is not None:
        send_for_booking(SUBMIT_BOOKING, booking_id, delay_s=follow_up.submit_after_s)
    if follow_up.sync_after_s is None:
        return
    if sync_queue:
        send_step(SYNC_BOOKING, booking_id, queue_name=sync_queue, delay_s=follow_up.sync_after_s)
    else:
        send_for_booking(SYNC_BOOKING, booking_id, delay_s=follow_up.sync_after_s)


def inbound_claim(event_id: int) -> str:
    return f"inbound:{event_id}"


def send_inbound_event(event_id: int, *, hold: bool = True) -> None:
    """Queue a stored webhook delivery to be applied. It holds its claim until a worker takes it
    up, so the sweeper's window on a stale delivery is not taken while it waits; the sweeper's
    own copy, paced by that window, holds none (`hold=False`)."""
    if not hold:
        send(PROCESS_INBOUND_EVENT, event_id, queue_name=WEBHOOKS_QUEUE)
        return
    claims.send_holding(
        inbound_claim(event_id),
        lambda held: send(PROCESS_INBOUND_EVENT, event_id, queue_name=WEBHOOKS_QUEUE, options=held),
    )


def send_inbound_event_on_commit(event_id: int) -> None:
    """Queue a delivery once it is stored. Stored, it is safe to acknowledge: if the broker is
    down, the sweeper queues it once it is stale (RECONCILE_INBOUND_STALE_S)."""

    def send_or_leave_to_sweeper() -> None:
        try:
            send_hint(lambda: send_inbound_event(event_id))
        except redis.RedisError:
            logger.warning(
                "webhook stored but not queued (broker unavailable); the sweeper will queue it",
                extra={"inbound_event_id": event_id},
            )

    transaction.on_commit(send_or_leave_to_sweeper)
