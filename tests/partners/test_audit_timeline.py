"""The audit's reads of a confirmed booking, on the support timeline: every read is stored
(invariant 8), and a run of reads that found nothing new reads as one row. Real sandbox partner,
real worker, real reads through `booking_sync`."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bookings.models import UNFINISHED_NOTIFICATION_STATES, Booking, BookingEvent, Notification
from bookings.states import BookingState
from partners.models import PartnerAttempt, PartnerObservation
from partners.services.sync import booking_sync
from reconciliation.selectors.timeline import SOURCE_CHECKS, booking_timeline
from reconciliation.selectors.timeline_display import stored_rows_link
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.partners.conftest import assert_at_rest, book, wait_for_status

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _timeline(booking: Booking) -> tuple[list, int]:
    booking = Booking.objects.select_related("partner").get(pk=booking.pk)
    with CaptureQueriesContext(connection) as queries:
        rows = booking_timeline(booking)
    return rows, len(queries)


def test_audit_reads_that_found_nothing_new_fold_into_one_row_and_stay_stored(harness, partner_worker):
    # Given a booking the partner confirmed, at rest
    h = harness("reference")
    h.faults(async_confirm_delay_s=0.2)
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    wait_until(
        lambda: not Notification.objects.filter(booking=booking, state__in=UNFINISHED_NOTIFICATION_STATES),
        what="the confirmation's mail",
    )
    before, queries_before = _timeline(booking)

    # When the audit reads it again and again, and the partner's copy never changes
    booking_sync(booking.pk)  # the first read after the news keeps its rows
    first_read = _timeline(booking)[0]
    for _ in range(2):
        booking_sync(booking.pk)
    short, queries_short = _timeline(booking)
    for _ in range(6):
        booking_sync(booking.pk)
    rows, queries = _timeline(booking)

    # Then every read is stored: its call, the partner's answer and the sync's end
    stored = BookingEvent.objects.filter(booking=booking)
    assert stored.filter(kind="sync.completed").count() >= 9
    assert PartnerAttempt.objects.filter(booking=booking, operation__in=["get", "lookup"]).count() >= 9
    assert PartnerObservation.objects.filter(booking=booking, source="lookup").count() >= 9
    # but the timeline shows the reads after the first as one row, however many there are
    assert len(first_read) == len(before) + 3, [r.kind for r in first_read[len(before) :]]
    folded = [r for r in rows if r.source == SOURCE_CHECKS]
    assert len(folded) == 1, [r.kind for r in rows]
    (checks,) = folded
    assert checks.summary.startswith("Checked at the partner 8 times, ")
    assert checks.summary.endswith(" UTC: unchanged")
    assert (checks.kind, checks.mark, checks.data["checks"]) == ("partner.checks.unchanged", "unchanged", 8)
    assert checks.data["events"] == 3 * 8 and checks.data["attempts"] == checks.data["observations"] == 8
    assert rows[: len(first_read)] == first_read  # nothing before the run moved or vanished
    assert rows[-1] == checks
    assert len(rows) == len(first_read) + 1 == len(short)
    # and the rows of the run are never loaded: the queries do not grow with it
    assert queries == queries_short == queries_before

    # and the console's booking page shows the one row, linking to the stored rows it stands for
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(f"/admin/bookings/booking/{booking.pk}/change/")
    assert page.status_code == 200
    assert page.content.decode().count("Checked at the partner 8 times, ") == 1
    listed = client.get(stored_rows_link(checks))
    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 3 * 8
    assert {e.kind for e in listed.context["cl"].result_list} == {
        "partner.attempt.ok",
        "partner.observation.duplicate",
        "sync.completed",
    }
