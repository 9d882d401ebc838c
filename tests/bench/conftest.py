"""A `BenchEnv` on this test's database and Redis: the benchmarks' own process starters (web,
webhooks, workers, sandbox, events, router) run their quick configurations in the smoke tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings

from bench import common, fixtures
from tests.streams import database_url


@dataclass
class OnTestDatabase(common.BenchEnv):
    """Processes as a benchmark starts them, with the test settings on this test's database and
    Redis namespace (which the test run owns: no database of its own, no lock, no quiet wait)."""

    def __enter__(self) -> OnTestDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def child_env_vars(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "VAR_DIR": str(settings.VAR_DIR),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }


def _forget_the_bench_partner(broker) -> None:
    """What the bench partner left in this run's Redis: its queues (the broker's `flush_all`
    empties only the queues this process declared, and the workers declare the partner's) and
    its breaker and concurrency count (keyed by its code, which every smoke test shares)."""
    from config.redis_client import redis_client
    from partners import guard
    from partners.models import Partner

    for queue in Partner(code=fixtures.PARTNER_CODE).queue_names:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.client.delete(f"{broker.namespace}:{name}", f"{broker.namespace}:{name}.msgs")
    client = redis_client()
    keys = list(client.scan_iter(f"{settings.PARTNER_GUARD_NAMESPACE}:{fixtures.PARTNER_CODE}:*"))
    if keys:
        client.delete(*keys)
    guard._breakers.pop(fixtures.PARTNER_CODE, None)


@pytest.fixture
def bench_env(transactional_db, broker) -> Iterator[OnTestDatabase]:
    """Every process started through it is stopped at the end of the test; the bench partner
    starts with nothing of an earlier test's."""
    _forget_the_bench_partner(broker)
    with OnTestDatabase("smoke") as env:
        yield env
    _forget_the_bench_partner(broker)
