"""A broker that does not answer (rather than refuses) does not hold the customer's booking.

The Redis of the test's own is stopped with SIGSTOP: connections hang instead of being refused,
as when the broker's host is cut off. The web process (gunicorn, as in the Procfile) commits the
booking and answers 202 without waiting on Redis for long: its Redis waits are short (1 s,
config/wsgi.py) and, after one went unanswered, its after-commit hints skip Redis for a few
seconds (config/redis_client.py). Before, each POST waited out the publish's and the enqueue's
socket timeouts (5 s and 10 s). Once Redis runs again (SIGCONT), the sweeper submits what was
accepted meanwhile and the partner confirms each booking once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings

from bookings.models import Booking
from bookings.states import BookingState
from config.embedded_redis import EmbeddedRedis
from partners.services.registry import OfferSpec, partner_upsert
from tests.config.test_outages import FAST, _book, _database_url
from tests.factories import TokenFactory, UserFactory
from tests.helpers import unique_code, wait_until
from tests.own_servers import ProjectProcesses, own_redis
from tests.partners.conftest import SANDBOX_KEY, WEBHOOK_SECRET
from tests.sandbox_process import PERFECT_FAULTS, SandboxProcess, free_port

S = BookingState
DURING = 3  # bookings sent while the broker does not answer
# Far below the 10 s after which the chaos run's clients give up, and below the request
# processes' one Redis wait (1 s) for every POST after the first (its hints then skip Redis).
FIRST_BOUND_S = 3.0
LATER_BOUND_S = 1.0 + settings.API_THROTTLE_REDIS_TIMEOUT_S


@pytest.fixture
def silent_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = own_redis(tmp_path / "redis-var")
    yield server
    os.kill(server.process.pid, signal.SIGCONT)  # a stopped server cannot be stopped
    server.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ProjectProcesses]:
    processes = ProjectProcesses(tmp_path, {})
    yield processes
    processes.stop_all()


def test_a_silent_broker_costs_the_booking_post_no_long_wait_and_the_sweeper_submits_later(
    transactional_db, silent_redis, stack, tmp_path
):
    web_port = free_port()
    code = unique_code("silent")
    sandbox = SandboxProcess(
        "reference",
        tmp_path / "reference.sqlite3",
        SANDBOX_KEY,
        [
            "--webhook-url",
            f"http://127.0.0.1:{web_port}/partners/{code}/webhooks/",
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
    ).start()
    try:
        sandbox.set_faults(**PERFECT_FAULTS)
        partner, _ = partner_upsert(
            code=code,
            adapter="reference",
            base_url=sandbox.base_url,
            api_key=SANDBOX_KEY,
            webhook_secret=WEBHOOK_SECRET,
            timeouts=(0.5, 2.0),
            offers=[OfferSpec.parse("hotel-7-dbl:90.00:EUR:4")],
        )
        offer = partner.offers.get()
        api = requests.Session()
        api.headers["Authorization"] = f"Token {TokenFactory(user=UserFactory()).key}"
        stack.env.update(DATABASE_URL=_database_url(), REDIS_URL=silent_redis.url, **FAST)
        stack.manage("worker", "rundramatiq", "--processes", "1", "--threads", "4")
        stack.manage("scheduler", "run_scheduler", "--interval", "0.5")
        base = stack.web(port=web_port)
        before = _book(api, base, offer.pk, "before")  # every connection of the web process made
        assert before.status_code == 202, before.text
        wait_until(
            lambda: Booking.objects.filter(reference=before.json()["reference"], status=S.CONFIRMED).exists(),
            what=f"the first booking to be confirmed (worker log: {stack.log('worker')})",
            timeout_s=30,
        )

        os.kill(silent_redis.process.pid, signal.SIGSTOP)
        answers, waits = [], []
        for n in range(DURING):
            started = time.monotonic()
            answers.append(_book(api, base, offer.pk, f"during-{n}"))
            waits.append(time.monotonic() - started)
        os.kill(silent_redis.process.pid, signal.SIGCONT)

        assert [a.status_code for a in answers] == [202] * DURING, [a.text for a in answers]
        assert waits[0] < FIRST_BOUND_S, waits
        assert max(waits[1:]) < LATER_BOUND_S, waits
        accepted = [a.json()["reference"] for a in answers]
        assert set(Booking.objects.filter(reference__in=accepted).values_list("status", flat=True)) == {
            S.REQUESTED
        }
        wait_until(
            lambda: Booking.objects.filter(reference__in=accepted, status=S.CONFIRMED).count() == DURING,
            what=f"the sweeper to submit what was accepted meanwhile ({stack.log('scheduler')})",
            timeout_s=60,
        )
        assert [[r["status"] for r in sandbox.truth(reference)] for reference in accepted] == [
            ["confirmed"]
        ] * DURING
    finally:
        sandbox.kill()
