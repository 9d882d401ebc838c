"""A no-op Dramatiq actor: the broker and worker's own ceiling, beside the booking pipeline."""

from __future__ import annotations

import dramatiq

NOOP_QUEUE = "bench-noop"


@dramatiq.actor(queue_name=NOOP_QUEUE, max_retries=0, time_limit=60_000)
def noop(index: int) -> None:
    """Does nothing: the cost measured is Redis, the worker and the middleware."""
