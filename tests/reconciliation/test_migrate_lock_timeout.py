"""`manage.py migrate` on PostgreSQL waits at most MIGRATE_LOCK_TIMEOUT_MS for a table's lock: a
schema change queued behind a long transaction fails (rolled back, to run again) instead of
holding every later query of the table behind it while the site runs."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="lock_timeout is PostgreSQL's; SQLite has one writer at a time",
    ),
]


def _hold_the_bookings_table(held: threading.Event, release: threading.Event) -> None:
    """A long transaction reading the bookings table, as a support report or a slow sweep would."""
    params = connection.get_connection_params()
    with psycopg.connect(**params) as other:
        other.execute("LOCK TABLE bookings_booking IN ACCESS SHARE MODE")
        held.set()
        release.wait(timeout=30)


def _has_column(table: str, column: str) -> bool:
    with connection.cursor() as cursor:
        return column in {c.name for c in connection.introspection.get_table_description(cursor, table)}


def test_a_migration_that_waits_too_long_for_a_lock_fails_rolled_back_and_later_work_is_unbounded(settings):
    settings.MIGRATE_LOCK_TIMEOUT_MS = 300
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_bookings_table, args=(held, release))
    holder.start()
    try:
        assert held.wait(timeout=10)

        # Taking bookings back before `attention_from` drops that column: a lock on the table.
        with pytest.raises(CommandError, match="waited more than 300 ms for a table's lock"):
            call_command("migrate", "bookings", "0021", verbosity=0)

        # Rolled back, not waiting behind the reader: the column is still there.
        assert _has_column("bookings_booking", "attention_from")
        with connection.cursor() as cursor:
            cursor.execute("SHOW lock_timeout")
            assert cursor.fetchone()[0] == "0"  # the connection's later work waits as before
    finally:
        release.set()
        holder.join()
        call_command("migrate", verbosity=0)  # whatever happened, the schema as the suite needs it
    assert _has_column("bookings_booking", "attention_from")
