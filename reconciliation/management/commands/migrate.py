"""Django's `migrate`, bounded in how long it waits for a lock on PostgreSQL.

A release migrates while the site runs ("A release", README). A statement that changes a table
takes a lock that waits behind every transaction already using the table, and every query of the
table that comes after it waits behind it: one long transaction would stall the site's bookings
for as long as it lasts. With `lock_timeout` (MIGRATE_LOCK_TIMEOUT_MS), the migration fails
instead (rolled back; an index built concurrently, `config.migration_operations`, is left
invalid and built again by the next run), and is run again: the site never waits longer.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import OperationalError, connections

# PostgreSQL's lock_not_available: the statement gave up waiting for its lock (lock_timeout).
LOCK_NOT_AVAILABLE = "55P03"


class Command(DjangoMigrate):
    help = (
        f"{DjangoMigrate.help} On PostgreSQL, a statement waits at most MIGRATE_LOCK_TIMEOUT_MS "
        "for a lock, then the migration fails (rolled back) and can be run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        bounded = connection.vendor == "postgresql" and settings.MIGRATE_LOCK_TIMEOUT_MS > 0
        if not bounded:
            return super().handle(*args, **options)
        with connection.cursor() as cursor:
            # SET, not SET LOCAL: migrations commit one by one, each in transactions of its own.
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false)", [f"{settings.MIGRATE_LOCK_TIMEOUT_MS}ms"]
            )
        try:
            return super().handle(*args, **options)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            raise CommandError(
                f"A migration waited more than {settings.MIGRATE_LOCK_TIMEOUT_MS} ms for a table's lock "
                f"({exc}); it did not complete (rolled back, or an index built concurrently left "
                "invalid, which the next run builds again) and the migrations before it stay applied. "
                "Another transaction held the table: run migrate again (MIGRATE_LOCK_TIMEOUT_MS=0 waits "
                "for ever)."
            ) from exc
        finally:
            # The connection outlives the command where it is called in a process (the tests'
            # database set-up): its other work waits for locks as it always did.
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
