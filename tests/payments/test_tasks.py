"""The payment actors: each bounds its retries and its time (Dramatiq's defaults are 20 retries
over a month), on the payments queue."""

from __future__ import annotations

import dramatiq
from django.conf import settings

from payments import tasks


def test_every_payment_actor_bounds_its_retries_and_its_time():
    actors = {
        actor.actor_name: (
            actor.queue_name,
            actor.options.get("max_retries"),
            actor.options.get("time_limit"),
        )
        for actor in vars(tasks).values()
        if isinstance(actor, dramatiq.Actor)
    }

    limits = (settings.PAYMENTS_ACTOR_MAX_RETRIES, settings.PAYMENTS_ACTOR_TIME_LIMIT_MS)
    assert actors == {
        "payment_run": ("payments", *limits),
        "process_payment_event": ("payments", *limits),
    }
    # a run's calls, each within its timeouts, fit in its time limit many times over
    worst_call_ms = (settings.PAYMENTS_CONNECT_TIMEOUT_S + settings.PAYMENTS_READ_TIMEOUT_S) * 1000
    assert 8 * worst_call_ms < settings.PAYMENTS_ACTOR_TIME_LIMIT_MS
