"""The actors' plumbing: per-partner queues, explicit retry limits, and what happens when an
actor's retries run out (the booking is handed to reconciliation, never dropped)."""

from __future__ import annotations

import time

import dramatiq
import pytest
from django.conf import settings
from django.utils import timezone
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage

from bookings.states import BookingState
from partners import messages, tasks
from partners.middleware import RetriesExhausted
from partners.queues import declare_partner_queues
from tests.helpers import queued_messages
from tests.partners.conftest import delayed_messages, timeline

S = BookingState
PARTNER_ACTORS = [
    tasks.submit_booking,
    tasks.sync_booking,
    tasks.cancel_booking,
    tasks.compensate_reservation,
    tasks.process_inbound_event,
    tasks.walk_change_listing,
]


def test_booking_work_goes_to_its_partners_own_queue(
    ref_partner, legacy_partner, make_booking, broker, clean_queues
):
    ref_queue, legacy_queue = clean_queues(ref_partner), clean_queues(legacy_partner)
    ref_booking = make_booking(ref_partner, S.REQUESTED)
    legacy_booking = make_booking(legacy_partner, S.REQUESTED)

    sent_from_ms = int(time.time() * 1000)
    messages.send_for_booking(messages.SUBMIT_BOOKING, ref_booking.pk)
    messages.send_for_booking(messages.SYNC_BOOKING, legacy_booking.pk, delay_s=2.5)
    sent_until_ms = int(time.time() * 1000)

    assert [(m.actor_name, m.args, m.queue_name) for m in queued_messages(broker, ref_queue)] == [
        ("submit_booking", (str(ref_booking.pk),), ref_queue)
    ]
    assert queued_messages(broker, legacy_queue) == []
    (delayed,) = delayed_messages(broker, legacy_queue)
    assert (delayed.actor_name, delayed.args, delayed.queue_name) == (
        "sync_booking",
        (str(legacy_booking.pk),),
        f"{legacy_queue}.DQ",
    )
    assert sent_from_ms + 2500 <= delayed.options["eta"] <= sent_until_ms + 2500


def test_work_for_a_booking_that_does_not_exist_is_not_sent(ref_partner, broker, clean_queues, caplog):
    queue = clean_queues(ref_partner)

    messages.send_for_booking(messages.SUBMIT_BOOKING, "00000000-0000-0000-0000-000000000000")

    assert queued_messages(broker, queue) == []
    assert "no booking to queue work for" in caplog.text


def test_workers_declare_both_queues_of_every_partner(ref_partner, legacy_partner, broker):
    both = {*ref_partner.queue_names, *legacy_partner.queue_names}

    names = declare_partner_queues(broker)

    assert ref_partner.queue_names == (f"partner-{ref_partner.code}", f"audit-{ref_partner.code}")
    assert both <= set(names)
    assert both <= broker.get_declared_queues()


def test_a_booted_worker_consumes_every_partners_audit_queue(ref_partner, legacy_partner, worker):
    """The sweeper's audit reads have a queue of their own (so that they never wait behind the
    partner's submissions): a worker must serve it as it serves the partner's own, declared by
    `PartnerQueuesMiddleware` when the worker boots, with its delay queue (a read's retries).
    Declared before `start` returns (before the worker says it is ready), not by a thread later:
    work queued for a partner from the first moment is served."""
    wanted = {
        name
        for partner in (ref_partner, legacy_partner)
        for q in partner.queue_names
        for name in (q, f"{q}.DQ")
    }

    assert wanted <= set(worker.consumers)


def test_an_audit_read_goes_to_the_audit_queue_and_other_work_to_the_partners_own(
    ref_partner, make_booking, broker, clean_queues
):
    queue = clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.REQUESTED)

    messages.send_audit_sync(booking.pk, ref_partner)
    messages.send_for_booking(messages.SUBMIT_BOOKING, booking.pk)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)

    assert [(m.actor_name, m.args) for m in queued_messages(broker, ref_partner.audit_queue_name)] == [
        ("sync_booking", (str(booking.pk),))
    ]
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("submit_booking", (str(booking.pk),)),
        ("sync_booking", (str(booking.pk),)),
    ]


@pytest.mark.parametrize("came_from", ["audit", "partner"])
def test_the_read_a_read_asks_for_stays_on_the_queue_it_came_from(
    came_from, ref_partner, make_booking, broker, clean_queues, monkeypatch
):
    """The second read of a reservation the partner answered 404 for (or a failed read's retry)
    is asked for by the read itself: an audit's must not fall back behind the partner's
    submissions, and a partner-queue read's stays where it was."""
    partner_queue = clean_queues(ref_partner)
    broker.flush(ref_partner.audit_queue_name)
    booking = make_booking(ref_partner, S.CONFIRMED)
    queue = ref_partner.audit_queue_name if came_from == "audit" else partner_queue
    monkeypatch.setattr(tasks, "booking_sync", lambda booking_id: messages.FollowUp(sync_after_s=30))
    message = tasks.sync_booking.message(str(booking.pk)).copy(queue_name=queue)
    token = CurrentMessage._MESSAGE.set(message)
    try:
        tasks.sync_booking(str(booking.pk))
    finally:
        CurrentMessage._MESSAGE.reset(token)

    (delayed,) = delayed_messages(broker, queue)
    assert (delayed.actor_name, delayed.args) == ("sync_booking", (str(booking.pk),))
    other = partner_queue if came_from == "audit" else ref_partner.audit_queue_name
    assert delayed_messages(broker, other) == []


@pytest.mark.parametrize("actor", PARTNER_ACTORS, ids=lambda a: a.actor_name)
def test_every_actor_has_explicit_bounded_retries_and_a_time_limit(actor):
    assert actor.options["max_retries"] == settings.PARTNER_ACTOR_MAX_RETRIES
    assert actor.options["max_backoff"] == 60_000
    assert actor.options["time_limit"] == settings.PARTNER_ACTOR_TIME_LIMIT_MS


def test_retries_exhausted_hands_the_booking_to_reconciliation(ref_partner, make_booking, broker):
    booking = make_booking(ref_partner, S.SUBMITTING, next_check_at=None)
    message = MessageProxy(tasks.sync_booking.message(str(booking.pk)))
    message.fail()  # what the Retries middleware does when the last retry failed
    handed_over_from = timezone.now()

    RetriesExhausted().after_process_message(broker, message, exception=RuntimeError("database down"))

    booking.refresh_from_db()
    assert handed_over_from <= booking.next_check_at <= timezone.now()  # due now: the next sweep takes it
    assert booking.status == S.SUBMITTING
    assert timeline(booking) == ["worker.retries_exhausted"]
    event = booking.events.get()
    assert (event.actor, event.actor_label) == ("worker", "sync_booking")
    assert "database down" in event.data["error"]


def test_a_booking_whose_worker_keeps_giving_up_goes_to_support_instead_of_round_after_round(
    ref_partner, make_booking, broker, settings
):
    # Given a booking whose sync keeps failing through every retry (a failure retrying cannot cure)
    settings.PARTNER_ACTOR_GIVE_UPS_MAX = 3
    booking = make_booking(ref_partner, S.UNKNOWN, next_check_at=None)
    handover = RetriesExhausted()

    # When its retries run out for the third time
    for attempt in range(3):
        message = MessageProxy(tasks.sync_booking.message(str(booking.pk)))
        message.fail()
        handover.after_process_message(broker, message, exception=RuntimeError(f"poison {attempt}"))

    # Then the sweeper got it back twice, and support has it the third time, with the last error
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "worker_gave_up")
    assert "poison 2" in booking.attention_detail
    assert timeline(booking) == [
        "worker.retries_exhausted",
        "worker.retries_exhausted",
        "worker.retries_exhausted",
        "booking.needs_attention",
    ]


def test_a_failure_that_will_be_retried_is_not_handed_over(ref_partner, make_booking, broker):
    booking = make_booking(ref_partner, S.SUBMITTING, next_check_at=None)
    message = MessageProxy(tasks.sync_booking.message(str(booking.pk)))  # not failed: retries remain

    RetriesExhausted().after_process_message(broker, message, exception=RuntimeError("blip"))

    booking.refresh_from_db()
    assert (booking.next_check_at, timeline(booking)) == (None, [])


def test_the_handover_middleware_runs_after_retries_decided(broker):
    names = [type(m).__name__ for m in broker.middleware]
    assert names.index("RetriesExhausted") < names.index("Retries")  # after_* hooks run reversed
    assert isinstance(broker, dramatiq.brokers.redis.RedisBroker)


def test_every_actor_of_ours_bounds_its_retries_and_its_time(broker):
    # Dramatiq's default is 20 retries over about 30 days: each actor says how many, and how long.
    import bookings.tasks
    import reconciliation.tasks

    actors = {
        actor.actor_name: (actor.options.get("max_retries"), actor.options.get("time_limit"))
        for module in (bookings.tasks, tasks, reconciliation.tasks)
        for actor in vars(module).values()
        if isinstance(actor, dramatiq.Actor)
    }

    assert sorted(actors) == [
        "cancel_booking",
        "compensate_reservation",
        "process_inbound_event",
        "send_notification",
        "submit_booking",
        "sweep_bookings",
        "sync_booking",
        "walk_change_listing",
    ]
    assert {
        name: (retries, limit)
        for name, (retries, limit) in actors.items()
        if retries is None or limit is None
    } == {}
    assert max(retries for retries, _ in actors.values()) == max(
        settings.PARTNER_ACTOR_MAX_RETRIES, settings.NOTIFICATION_MAX_ATTEMPTS
    )
