"""Indexes added while the site runs are built CONCURRENTLY on PostgreSQL
(`config.migration_operations.AddIndexLive`): the table's writes go on while they build, and a
build that failed (left invalid) is built again by the next migrate."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="CONCURRENTLY is PostgreSQL's; SQLite builds an index as usual",
    ),
]


def _index_valid(name: str) -> bool | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_index.indisvalid FROM pg_index JOIN pg_class ON pg_class.oid = pg_index.indexrelid "
            "WHERE pg_class.relname = %s",
            [name],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


@pytest.mark.parametrize(
    ("app", "migration"),
    [("payments", "0013"), ("payments", "0015"), ("partners", "0012")],
)
def test_the_releases_indexes_are_built_concurrently(app, migration):
    out = io.StringIO()
    call_command("sqlmigrate", app, migration, stdout=out)

    assert "CREATE INDEX CONCURRENTLY" in out.getvalue()
    assert "BEGIN;" not in out.getvalue()  # outside a transaction, as CONCURRENTLY must be


def test_an_index_a_failed_build_left_invalid_is_built_again():
    try:
        call_command("migrate", "payments", "0014", verbosity=0)
        assert _index_valid("payment_event_body_kept") is None
        # What a concurrent build cut off leaves behind: the index, marked invalid.
        with connection.cursor() as cursor:
            cursor.execute("CREATE INDEX payment_event_body_kept ON payments_paymentevent (received_at)")
            cursor.execute(
                "UPDATE pg_index SET indisvalid = false "
                "WHERE indexrelid = 'payment_event_body_kept'::regclass"
            )
        assert _index_valid("payment_event_body_kept") is False

        call_command("migrate", "payments", "0015", verbosity=0)

        assert _index_valid("payment_event_body_kept") is True
    finally:
        call_command("migrate", verbosity=0)
