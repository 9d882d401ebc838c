"""`owed.mark_sent` inside a caller's transaction: a mark that fails leaves the transaction usable."""

from __future__ import annotations

import pytest
from django.db import connection, connections, transaction

from reconciliation.models import OwedMessage
from reconciliation.services.support import owed
from tests.factories import BookingFactory

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default"]),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a row lock that times out is PostgreSQL's"),
]


def test_a_mark_that_cannot_take_its_row_leaves_the_callers_transaction_usable():
    booking = BookingFactory()
    row = OwedMessage.objects.create(booking=booking, actor_name="sync_booking")
    # Another session holds the row, and this one waits for no lock: the UPDATE fails for real.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT 1 FROM reconciliation_owedmessage WHERE id = %s FOR UPDATE", [row.pk])
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '50ms'")
            owed.mark_sent(row.pk)
            # The caller's transaction goes on: without the savepoint this query raised
            # "current transaction is aborted".
            assert OwedMessage.objects.filter(pk=row.pk, sent_at__isnull=True).exists()
    finally:
        other.close()
    owed.mark_sent(row.pk)
    assert OwedMessage.objects.get(pk=row.pk).sent_at is not None
