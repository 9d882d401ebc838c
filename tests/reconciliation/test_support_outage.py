"""Support actions, and the sweeper's own sends, while our Redis (the broker, the partner guard's
state, the shared cache) is down: no 500 after a commit, nothing lost, nothing untrue
(docs/design.md, invariant 3).

A Redis of the test's own stands behind the broker, our own keys and the shared cache; the test
stops it (connections refused, as the tester saw) and starts it again, never the machine's. The
requests run with real commits (`transactional_db`), so the after-commit sends run inside the
request as in production.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from config.embedded_redis import EmbeddedRedis, with_socket_timeouts
from config.logging import AtMostEvery, ContextFilter
from config.redis_client import redis_client
from partners.models import InboundState
from reconciliation.models import ActionToken
from reconciliation.services import support
from tests.factories import PartnerAttemptFactory, PartnerReservationFactory
from tests.own_servers import own_redis
from tests.reconciliation.conftest import actor_names, calls, queued
from tests.reconciliation.test_admin import _signed_inbound

S = BookingState
NOT_QUEUED = "not queued yet: our queue (Redis) is not answering"


@pytest.fixture
def our_redis(tmp_path: Path, broker, partner_queue, settings) -> Iterator[EmbeddedRedis]:
    """Our Redis, of the test's own: the broker's and our keys' clients and the cache use it."""
    server = own_redis(tmp_path / "redis-var")
    url = with_socket_timeouts(server.url, 1.0)
    clients = [broker.client, redis_client()]
    pools = [client.connection_pool for client in clients]
    for client in clients:
        client.connection_pool = redis.ConnectionPool.from_url(url)
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": url}}
    try:
        yield server
    finally:
        for client, pool in zip(clients, pools, strict=True):
            client.connection_pool.disconnect()
            client.connection_pool = pool
        server.stop()


@pytest.fixture
def redis_down(our_redis: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    our_redis.stop()
    yield our_redis


def _back(server: EmbeddedRedis, *clients: redis.Redis) -> None:
    """Redis answers again (empty, as after a crash); the pause of its skipped calls is over."""
    from config import redis_pause

    server.start()
    for client in clients:
        client.connection_pool.disconnect()
    redis_pause.forget()


def _sweep_later() -> None:
    """A sweep once the action's own hint had its chance (owed for more than an interval)."""
    from reconciliation.models import OwedMessage
    from reconciliation.services.sweeper import sweep

    OwedMessage.objects.update(owed_at=timezone.now() - timedelta(minutes=5))
    sweep()


def _action(booking, name: str) -> str:
    return reverse("admin:bookings_booking_support_action", args=[booking.pk, name])


def _token(response) -> str:
    return re.search(r'name="token" value="([0-9a-f]+)"', response.content.decode()).group(1)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_console_sync_with_redis_down_says_so_and_the_sweeper_sends_it_once_redis_is_back(
    transactional_db, make_booking, support_client, redis_down, broker, partner_queue
):
    booking = make_booking(status=S.CONFIRMED)
    page = support_client.get(_action(booking, "sync"))
    text = page.content.decode()
    assert "our Redis (the queue and the partner guard) is not answering" in text
    assert "Live lookup failed" not in text and "redis.sock" not in text  # not the partner's fault
    token = _token(page)

    first = support_client.post(_action(booking, "sync"), {"token": token, "note": ""}, follow=True)
    again = support_client.post(_action(booking, "sync"), {"token": token, "note": ""}, follow=True)

    assert (first.status_code, again.status_code) == (200, 200)
    assert any(f"Sync requested, {NOT_QUEUED}" in m for m in _messages(first)), _messages(first)
    said = " ".join(_messages(again))
    assert "Already done" not in said and "Already requested by" in said and NOT_QUEUED in said, said
    assert booking.events.filter(kind="support.sync_requested").count() == 1

    _back(redis_down, broker.client, redis_client())
    _sweep_later()

    assert actor_names(broker, partner_queue) == ["sync_booking"]
    _sweep_later()  # sent: never again
    assert actor_names(broker, partner_queue) == ["sync_booking"]
    settled = support_client.post(_action(booking, "sync"), {"token": token, "note": ""}, follow=True)
    assert any("Already done" in m for m in _messages(settled))


def test_console_retry_with_redis_down_says_so_and_the_submission_follows(
    transactional_db, make_booking, support_client, redis_down, broker, partner_queue
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    token = _token(support_client.get(_action(booking, "retry")))

    response = support_client.post(_action(booking, "retry"), {"token": token}, follow=True)

    assert response.status_code == 200
    assert any(f"Submission requested, {NOT_QUEUED}" in m for m in _messages(response))
    booking.refresh_from_db()
    assert booking.status == S.REQUESTED
    _back(redis_down, broker.client, redis_client())
    _sweep_later()
    assert "submit_booking" in actor_names(broker, partner_queue)


def test_console_compensate_with_redis_down_fails_the_booking_and_its_cancel_is_due(
    transactional_db, make_booking, ops_client, redis_down
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    live = PartnerReservationFactory(booking=booking, partner_ref="R-out-1", status="confirmed")
    token = _token(ops_client.get(_action(booking, "compensate")))

    response = ops_client.post(_action(booking, "compensate"), {"token": token}, follow=True)

    assert response.status_code == 200
    booking.refresh_from_db()
    live.refresh_from_db()
    assert booking.status == S.FAILED
    assert live.compensation_requested_at is not None  # the sweeper's owed compensations


def test_bulk_sync_with_redis_down_says_so(transactional_db, make_booking, support_client, redis_down):
    bookings = [make_booking(status=S.PENDING_PARTNER) for _ in range(2)]
    selection = {"action": "force_sync_selected", "_selected_action": [str(b.pk) for b in bookings]}
    token = _token(support_client.post(reverse("admin:bookings_booking_changelist"), selection))

    response = support_client.post(
        reverse("admin:bookings_booking_changelist"),
        {**selection, "confirm": "yes", "token": token},
        follow=True,
    )

    said = _messages(response)
    assert response.status_code == 200
    assert any(f"Sync requested for 2 booking(s), {NOT_QUEUED}" in m for m in said), said
    assert not any("Sync queued" in m for m in said)


def test_console_refund_with_redis_down_says_not_queued_and_the_sweeper_queues_its_run(
    transactional_db, ops_client, redis_down, broker
):
    from payments.models import PaymentOperation
    from reconciliation.services.sweeper import sweep
    from tests.reconciliation.paying import paying_booking

    payment = paying_booking()
    url = reverse("admin:bookings_booking_payment_action", args=[payment.booking_id, "refund_payment"])
    posted = {"token": support.new_token(), "amount": "45.50", "previewed": "45.50", "note": "goodwill"}

    first = ops_client.post(url, posted, follow=True)
    again = ops_client.post(url, posted, follow=True)

    assert (first.status_code, again.status_code) == (200, 200)
    [operation] = PaymentOperation.objects.filter(payment=payment)
    said = " ".join(_messages(first))
    assert f"Refund of 45.50 EUR requested (key {operation.idempotency_key}), {NOT_QUEUED}" in said, said
    assert "queued: a worker asks the provider" not in said
    said = " ".join(_messages(again))
    assert "Already done" not in said and "Already requested by" in said and NOT_QUEUED in said, said
    assert PaymentOperation.objects.filter(payment=payment).count() == 1
    _back(redis_down, broker.client, redis_client())
    # a sweep once the run's own hint had its grace: the payment is due
    type(payment).objects.filter(pk=payment.pk).update(next_check_at=timezone.now() - timedelta(minutes=5))
    sweep()
    assert calls(broker, "payments") == [("payment_run", [str(payment.booking_id)])]


def test_replay_with_redis_down_is_refused_before_anything_and_runs_once_it_is_back(
    transactional_db, partner, make_booking, ops_client, redis_down, broker
):
    booking = make_booking(status=S.PENDING_PARTNER)
    event = _signed_inbound(partner, booking.reference)
    url = reverse("admin:partners_inboundevent_changelist")
    selection = {"action": "replay_selected", "_selected_action": [str(event.pk)]}
    token = _token(ops_client.post(url, selection))

    refused = ops_client.post(url, {**selection, "confirm": "yes", "token": token}, follow=True)

    assert refused.status_code == 200
    assert any("not answering; nothing was done. Try again shortly." in m for m in _messages(refused))
    event.refresh_from_db()
    assert event.state == InboundState.FAILED and not ActionToken.objects.filter(token=token).exists()
    _back(redis_down, broker.client, redis_client())
    done = ops_client.post(url, {**selection, "confirm": "yes", "token": token}, follow=True)
    assert any("Replayed" in m for m in _messages(done)), _messages(done)


@pytest.mark.parametrize("now", [False, True])
def test_sync_command_with_redis_down_is_honest_words_not_a_traceback(
    transactional_db, make_booking, ops_user, redis_down, broker, partner_queue, now
):
    booking = make_booking(status=S.PENDING_PARTNER)
    out = io.StringIO()

    call_command(
        "sync_booking",
        booking.reference,
        "--yes",
        "--as",
        ops_user.username,
        *(["--now"] if now else []),
        stdout=out,
        stderr=io.StringIO(),
    )

    text = " ".join(out.getvalue().split())
    assert ("the partner was not asked now" if now else f"Sync requested, {NOT_QUEUED}") in text, text
    _back(redis_down, broker.client, redis_client())
    _sweep_later()
    assert calls(broker, partner_queue) == [("sync_booking", [str(booking.pk)])]


def test_retry_and_reconcile_commands_with_redis_down_say_so_in_a_line(
    transactional_db, make_booking, ops_user, redis_down
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    out = io.StringIO()

    call_command(
        "retry_booking",
        booking.reference,
        "--yes",
        "--as",
        ops_user.username,
        stdout=out,
        stderr=io.StringIO(),
    )
    assert f"Submission requested, {NOT_QUEUED}" in " ".join(out.getvalue().split())
    with pytest.raises(
        CommandError, match=r"Our queue \(Redis\) is not answering; nothing was swept"
    ) as refused:
        call_command("reconcile", stdout=io.StringIO())
    assert refused.value.code == "service_unavailable"  # --json: an outage, as the API's 503
    assert refused.value.returncode == 75  # EX_TEMPFAIL: a cron job tries again


# --- the sweeper's own sends --------------------------------------------------------------------
def test_a_fenced_expiry_with_redis_down_expires_and_its_lookup_follows_once_redis_is_back(
    transactional_db, make_booking, redis_down, broker, partner_queue, caplog
):
    """The per-booking step a worker took up before Redis stopped: the expiry commits and the
    lookup its unknown create owes is not queued. A warning, not a failed step: a retry would find
    the booking expired and send nothing; the settled booking's fence is the sweeper's due work."""
    from reconciliation.tasks import sweep_bookings

    past = timezone.now() - timedelta(seconds=1)
    booking = make_booking(status=S.UNKNOWN, deadline=past, next_check_at=past)
    PartnerAttemptFactory(booking=booking, fence=True)

    with caplog.at_level(logging.WARNING):
        sweep_bookings.fn([str(booking.pk)])

    booking.refresh_from_db()
    assert booking.status == S.EXPIRED
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    _back(redis_down, broker.client, redis_client())
    _sweep_later()
    assert calls(broker, partner_queue) == [("sync_booking", [str(booking.pk)])]


def test_sweep_steps_with_redis_down_log_a_warning_each_and_are_queued_again_once_it_is_back(
    transactional_db, make_booking, redis_down, broker, partner_queue, monkeypatch, caplog
):
    """A worker takes up a sweep chunk as Redis stops: each step's queueing fails. It used to be a
    `level=error "sweep step failed"` with a traceback per booking, then Dramatiq's own error for
    the failed chunk: an alert for an outage handled by design. Now one warning line per booking,
    its traceback once a minute per process, and the chunk ends: a retry would need the same
    Redis, and the bookings stay due in the database (nothing is lost: the next sweep queues them)."""
    from reconciliation import tasks
    from reconciliation.services.sweeper import sweep

    monkeypatch.setattr(tasks, "_redis_tracebacks", AtMostEvery(60.0), raising=False)
    due = timezone.now() - timedelta(seconds=1)
    bookings = [make_booking(status=S.UNKNOWN, next_check_at=due) for _ in range(3)]

    caplog.handler.addFilter(ContextFilter())  # what the console handler does in LOGGING
    with caplog.at_level(logging.INFO):
        tasks.sweep_bookings.fn([str(b.pk) for b in bookings])  # no SweepStepsFailed

    lines = [r for r in caplog.records if r.name == "reconciliation.tasks"]
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        ("WARNING", "sweep step not queued: Redis unavailable; the sweeper queues it again")
    ] * 3
    assert [r.ctx["booking_id"] for r in lines] == [str(b.pk) for b in bookings]
    assert all(r.error.startswith(("ConnectionError: ", "RedisPaused: ")) for r in lines), [
        r.error for r in lines
    ]
    assert [bool(r.exc_info) for r in lines] == [True, False, False]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []

    _back(redis_down, broker.client, redis_client())
    Booking.objects.filter(pk__in=[b.pk for b in bookings]).update(next_check_at=due)
    sweep()
    (chunk,) = [m.args[0] for m in queued(broker, "reconciliation")]
    tasks.sweep_bookings.fn(chunk)
    assert sorted(calls(broker, partner_queue)) == sorted(("sync_booking", [str(b.pk)]) for b in bookings)


# --- orphan cancel -------------------------------------------------------------------------------
@pytest.fixture
def orphan_case(partner):
    """A live reservation no booking wants, left to support."""
    from django.db import transaction

    from bookings.models import Actor
    from partners.services.orphans import orphan_case_open

    reservation = PartnerReservationFactory(booking=None, partner=partner, partner_ref="R-stray-1")
    with transaction.atomic():
        return orphan_case_open(reservation, cancelling=False, actor=Actor.SYSTEM)


def _compensation_sent_later(broker, queue: str, reservation_id: int) -> None:
    """Redis is back: a sweep once the cancel decided has gone quiet queues it, once."""
    from partners.models import PartnerReservation

    PartnerReservation.objects.filter(pk=reservation_id).update(
        compensation_requested_at=timezone.now() - timedelta(minutes=5)
    )
    _sweep_later()
    assert calls(broker, queue) == [("compensate_reservation", [reservation_id])]


def test_console_orphan_cancel_with_redis_down_says_not_queued_and_the_sweeper_sends_it(
    transactional_db, orphan_case, ops_client, redis_down, broker, partner_queue
):
    url = reverse("admin:partners_orphancase_action", args=[orphan_case.pk, "orphan_cancel"])
    page = ops_client.get(url)
    assert "our Redis (the queue and the partner guard) is not answering" in page.content.decode()
    posted = {"token": _token(page), "note": "a stray hold", "booking": "", "expected_live": ""}

    first = ops_client.post(url, posted, follow=True)
    again = ops_client.post(url, posted, follow=True)

    assert (first.status_code, again.status_code) == (200, 200)
    assert any(f"Cancel requested, {NOT_QUEUED}" in m for m in _messages(first)), _messages(first)
    assert not any("Cancel queued" in m for m in _messages(first))
    said = " ".join(_messages(again))
    assert "Already done" not in said and "Already requested by" in said and NOT_QUEUED in said, said
    assert orphan_case.events.filter(kind="support.orphan_cancel_requested").count() == 1
    _back(redis_down, broker.client, redis_client())
    _compensation_sent_later(broker, partner_queue, orphan_case.reservation_id)
    settled = ops_client.post(url, posted, follow=True)
    assert any("Already done" in m for m in _messages(settled)), _messages(settled)


@pytest.mark.parametrize("as_json", [False, True])
def test_orphan_cancel_command_with_redis_down_says_not_queued_and_the_sweeper_sends_it(
    transactional_db, orphan_case, ops_user, redis_down, broker, partner_queue, as_json
):
    out = io.StringIO()

    call_command(
        "orphan_cancel",
        str(orphan_case.pk),
        "--yes",
        "--as",
        ops_user.username,
        *(["--json"] if as_json else []),
        stdout=out,
        stderr=io.StringIO(),
    )

    if as_json:
        result = json.loads(out.getvalue())["results"][0]["result"]
        assert (result["message"].startswith(f"Cancel requested, {NOT_QUEUED}"), result["queued"]) == (
            True,
            False,
        )
    else:
        text = " ".join(out.getvalue().split())
        assert "our Redis (the queue and the partner guard) is not answering" in text, text
        assert f"Cancel requested, {NOT_QUEUED}" in text and "Cancel queued" not in text, text
    _back(redis_down, broker.client, redis_client())
    _compensation_sent_later(broker, partner_queue, orphan_case.reservation_id)


def test_orphan_cancel_refused_by_a_full_redis_is_not_queued_though_redis_answers_a_ping(
    transactional_db, orphan_case, ops_user, our_redis, broker, partner_queue
):
    """Our Redis answers but refuses writes (its maxmemory reached): the cancel's own hint says
    whether it is on the queue, not a ping."""
    from reconciliation.services import support

    redis_client().config_set("maxmemory", "1")
    try:
        result = support.support_orphan_action_run(
            support.ORPHAN_CANCEL,
            case_id=orphan_case.pk,
            operator=support.Operator.for_user(ops_user),
            token=support.new_token(),
        )
        assert redis_client().ping()
    finally:
        redis_client().config_set("maxmemory", "0")

    assert result.message == f"Cancel requested, {support.NOT_QUEUED}"
    assert result.as_dict()["queued"] is False
    _compensation_sent_later(broker, partner_queue, orphan_case.reservation_id)
