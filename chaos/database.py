"""The run's database: which one, its migrations, and dropping its connections once.

By default the run uses the configured database (DATABASE_URL). `--own-database` creates a
fresh PostgreSQL database for the run beside it (dropped afterwards unless kept), so that runs
neither see each other's rows nor anybody else's.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections


class DatabaseNotSupported(RuntimeError):
    pass


def vendor() -> str:
    return connection.vendor


def check_supported(*, allow_sqlite: bool) -> None:
    if connection.vendor == "sqlite" and not allow_sqlite:
        raise DatabaseNotSupported(
            "The chaos run starts many processes that write at once (web, several workers, the "
            "scheduler); SQLite serialises them and the run would measure its locking, not our "
            "invariants. Set DATABASE_URL=postgres://... (e.g. postgres://postgres@127.0.0.1:5432/test), "
            "or pass --allow-sqlite to try anyway."
        )
    if connection.vendor not in ("sqlite", "postgresql"):
        raise DatabaseNotSupported(f"Unsupported database vendor {connection.vendor!r}.")


def configured_url() -> str:
    return str(settings.DATABASE_URL)


def create_own_database(name: str) -> str:
    """Create `name` on the configured server, point this process at it, return its URL."""
    if connection.vendor != "postgresql":
        raise DatabaseNotSupported("--own-database needs PostgreSQL.")
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    _switch_default(name)
    parts = urlsplit(configured_url())
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def drop_own_database(name: str, *, original: str) -> None:
    connections.close_all()
    _switch_default(original)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _switch_default(name: str) -> None:
    # The same move Django's test runner makes for its test database.
    connections["default"].close()
    settings.DATABASES["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name


def current_name() -> str:
    return str(connections["default"].settings_dict["NAME"])


def migrate() -> str:
    out = io.StringIO()
    call_command("migrate", interactive=False, verbosity=1, stdout=out)
    return out.getvalue()


def drop_connections(*, app_name_pattern: str) -> int:
    """Terminate the run's own server connections (PostgreSQL); return how many.

    Only backends whose application_name is one of this run's children are touched, so other
    people's sessions on a shared server survive.
    """
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name LIKE %s",
            [app_name_pattern],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0
