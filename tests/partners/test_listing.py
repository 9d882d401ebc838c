"""Change listing walk: which entries are news for the one door."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from partners.connectors.base import ReservationSnapshot
from partners.models import ReservationStatus as R
from partners.services.listing import _is_reread

T = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def entry(status: str, modified: datetime | None) -> ReservationSnapshot:
    return ReservationSnapshot(
        partner_ref="550001", client_reference="BK-AAAAAA", status=status, modified_at=modified
    )


@pytest.mark.parametrize(
    ("held", "listed", "reread"),
    [
        (None, entry(R.CONFIRMED, T), False),  # never seen: news (maybe an orphan)
        ((R.CONFIRMED, T), entry(R.CONFIRMED, T), True),  # the overlap again
        ((R.CONFIRMED, None), entry(R.CONFIRMED, T), True),  # learned from a create response
        ((R.CONFIRMED, T), entry(R.CONFIRMED, T - timedelta(seconds=5)), True),
        ((R.PENDING, T), entry(R.CONFIRMED, T), False),  # a new status is news
        ((R.CONFIRMED, T), entry(R.CANCELLED, T + timedelta(seconds=1)), False),
        ((R.CONFIRMED, T), entry(R.CONFIRMED, T + timedelta(seconds=1)), False),  # touched later
        ((R.CANCELLED, T), entry(R.CONFIRMED, T - timedelta(seconds=1)), False),  # stale: recorded as such
    ],
)
def test_only_entries_that_could_change_something_are_fed_to_the_one_door(held, listed, reread):
    assert _is_reread(held, listed) is reread
