"""A `BenchEnv` on this test's database and Redis: the benchmarks' own process starters (web,
webhooks, workers, sandbox, events, router) run their quick configurations in the smoke tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings

from bench import common
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


@pytest.fixture
def bench_env(transactional_db, broker) -> Iterator[OnTestDatabase]:
    """Every process started through it is stopped at the end of the test."""
    with OnTestDatabase("smoke") as env:
        yield env
