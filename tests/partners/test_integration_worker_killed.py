"""A worker killed with SIGKILL at any point loses no booking and duplicates no reservation
(invariant 3): the database alone says what is due, and the next sync resolves it.

- during the call: a real `manage.py rundramatiq --processes 1 --threads 1` subprocess on the
  test database and the same Redis, killed while the partner is still answering;
- before the call, and after the call but before its outcome was recorded: the same database
  state produced in-process (the attempt committed, the call not made / its answer lost).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bookings.states import BookingState
from partners import messages
from partners.connectors import connector_for
from partners.models import Operation, Outcome, PartnerAttempt
from partners.services.calls import attempt_call
from partners.services.submission import _claim, create_request
from tests.helpers import wait_until
from tests.partners.conftest import (
    IS_POSTGRES,
    ROOT,
    assert_at_rest,
    book,
    status_of,
    timeline,
    transitions,
    wait_for_status,
)

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
CREATE_CALL = {"reference": "POST /v1/reservations", "legacy": "POST /api/bookings"}


def database_url_of_this_test() -> str:
    """The URL of the database this test runs on (pytest-django's test database)."""
    db = connection.settings_dict
    if IS_POSTGRES:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{Path(db['NAME']).resolve()}"


def start_worker_process(queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url_of_this_test(),
        "REDIS_URL": settings.REDIS_URL,
        "VAR_DIR": str(settings.VAR_DIR),
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "rundramatiq",
                "--processes",
                "1",
                "--threads",
                "1",
                "--queues",
                queue,
                "--skip-checks",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches the forked worker
        )


def died_a_while_ago(attempt: PartnerAttempt) -> None:
    """As if the worker had died longer ago than any call can take (the sync need not wait)."""
    PartnerAttempt.objects.filter(pk=attempt.pk).update(started_at=timezone.now() - timedelta(minutes=1))


def creates(booking) -> list[str]:
    return list(
        PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE)
        .order_by("id")
        .values_list("outcome", flat=True)
    )


@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_worker_killed_with_sigkill_during_the_call(harness, partner_worker, profile, tmp_path):
    if not IS_POSTGRES and connection.settings_dict["NAME"].startswith(("file:memorydb", ":memory:")):
        pytest.skip("a worker subprocess needs a file or server test database, not an in-memory one")
    h = harness(profile)
    # the partner takes 0.8 s, then commits: the kill lands mid-call (its webhook comes much later,
    # so that what resolves the booking here is our own lookup)
    h.faults(latency_ms=[800, 800], webhook_delay_s=[30, 30])
    log = tmp_path / "worker.log"
    worker = start_worker_process(h.partner.queue_name, log)
    try:
        booking = book(h)
        # the attempt is committed before the call, and the partner has the request
        wait_until(
            lambda: (
                PartnerAttempt.objects.filter(booking=booking, outcome=Outcome.IN_FLIGHT).exists()
                and h.sandbox.stats()["calls"].get(CREATE_CALL[profile]) == 1
            ),
            timeout_s=30,
            what=f"the worker process to be in the call (log: {log})",
        )
        os.killpg(worker.pid, signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)

    # what the kill left: a submitting booking fenced by its in-flight attempt; the partner
    # finishes the call anyway
    assert status_of(booking) == S.SUBMITTING
    assert creates(booking) == [Outcome.IN_FLIGHT]
    wait_until(lambda: h.truth(booking), what="the partner to commit")
    assert PartnerAttempt.objects.fencing().filter(booking=booking).exists()

    # recovery, as the sweeper starts it: a sync (which waits out the in-flight budget, then
    # looks), and the killed worker's message redelivered (which must do nothing)
    worker = partner_worker(h.partner)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)
    wait_for_status(booking, S.CONFIRMED, timeout_s=20)
    messages.send_for_booking(messages.SUBMIT_BOOKING, booking.pk)  # the killed worker's message, again
    key = f"{h.broker.namespace}:{h.partner.queue_name}"
    wait_until(lambda: h.broker.client.llen(key) == 0, what="the redelivered message to be taken")
    worker.join()

    assert_at_rest(h, booking, S.CONFIRMED)
    assert len(h.truth(booking)) == 1  # never a second create
    assert creates(booking) == [Outcome.AMBIGUOUS]  # the dead call's attempt; nothing new
    attempt = PartnerAttempt.objects.get(booking=booking, operation=Operation.CREATE)
    assert attempt.resolution == "partner_holds_reservation"
    assert attempt.error == "no outcome recorded: the worker stopped during the call"
    assert transitions(booking) == [
        ("", "requested"),
        ("requested", "submitting"),
        ("submitting", "confirmed"),
    ]
    search = "partner.attempt.ok"  # lookup (reference) or listing (legacy)
    assert timeline(booking) == [
        "booking.requested",
        "booking.submitting",
        "partner.attempt.abandoned",
        search,
        "partner.observation.applied",
        "booking.confirmed",
        "sync.completed",
    ]


@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_worker_killed_after_committing_the_attempt_before_the_call(harness, partner_worker, profile):
    h = harness(profile)
    booking = h.booking(status=S.REQUESTED)
    claimed = _claim(booking.pk)  # the attempt is committed ... and the worker dies here
    assert isinstance(claimed, tuple)
    died_a_while_ago(claimed[1])

    partner_worker(h.partner)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)

    wait_for_status(booking, S.CONFIRMED, timeout_s=20)
    assert_at_rest(h, booking, S.CONFIRMED)
    first, second = PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE).order_by("id")
    assert (first.outcome, first.resolution) == (Outcome.AMBIGUOUS, "partner_holds_nothing")
    assert second.outcome == Outcome.OK
    assert len(h.truth(booking)) == 1
    assert ("submitting", "requested") in transitions(booking)  # released only once proven empty
    sync = booking.events.get(kind="sync.completed", data__holds_nothing=True)
    assert sync.summary == "Partner holds nothing for this booking"


@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_worker_killed_after_the_call_before_recording_its_outcome(harness, partner_worker, profile):
    h = harness(profile)
    h.faults(webhook_delay_s=[30, 30])  # resolved by our lookup, not by the partner's webhook
    booking = h.booking(status=S.REQUESTED)
    booking_row, attempt = _claim(booking.pk)
    connector = connector_for(h.partner)
    request = create_request(booking_row)
    answer = attempt_call(attempt, lambda: connector.create(request, idempotency_key=booking_row.partner_key))
    assert answer.outcome == Outcome.OK  # the partner made it ... and the worker dies here
    died_a_while_ago(attempt)

    partner_worker(h.partner)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)

    wait_for_status(booking, S.CONFIRMED, timeout_s=20)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert creates(booking) == [Outcome.AMBIGUOUS]  # found, not created again
    assert len(h.truth(booking)) == 1
