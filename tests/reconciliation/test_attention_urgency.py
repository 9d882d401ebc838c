"""Business-time urgency: the needs-attention queue puts the nearest stay first (then the money at
stake, then the longest wait), flags the bookings whose stay starts within
ATTENTION_URGENT_HORIZON_H, and the queue, partner health's page and its command count them by
reason and by urgency."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.states import BookingState
from partners.models import OrphanCase
from reconciliation.selectors.attention import needs_attention_queue, needs_attention_summary
from reconciliation.selectors.partner_health import partner_health
from tests.factories import PartnerFactory, PartnerReservationFactory
from tests.helpers import unique_code
from tests.reconciliation.test_commands import run

S = BookingState
pytestmark = pytest.mark.django_db
NOW = datetime(2027, 5, 10, 12, 0, tzinfo=UTC)  # a Monday noon: 48 h reach Wednesday noon


@pytest.fixture
def waiting(make_booking):
    """`waiting(days_ahead, price, reason=..., waited_h=...)`: a booking needing attention whose
    stay starts `days_ahead` days after NOW's date."""

    def make(
        days_ahead: int, price: str, *, reason: str = "compensation_failed", waited_h: int = 1, **fields
    ):
        start = NOW.date() + timedelta(days=days_ahead)
        return make_booking(
            status=S.NEEDS_ATTENTION,
            attention_reason=reason,
            start_date=start,
            end_date=start + timedelta(days=2),
            total_price=Decimal(price),
            status_changed_at=NOW - timedelta(hours=waited_h),
            **fields,
        )

    return make


def test_the_nearest_stay_comes_first_then_the_money_then_the_wait(waiting):
    far_and_dear = waiting(60, "900.00", waited_h=48)
    near_cheap = waiting(1, "50.00", waited_h=30)
    near_dear = waiting(1, "500.00")
    near_cheap_newer = waiting(1, "50.00", waited_h=2)
    started = waiting(0, "80.00")

    queue = list(needs_attention_queue(now=NOW))

    assert queue == [started, near_dear, near_cheap, near_cheap_newer, far_and_dear]


def test_a_stay_within_the_horizon_is_urgent_and_the_horizon_is_a_setting(waiting, settings):
    wednesday, thursday = waiting(2, "100.00"), waiting(3, "100.00")

    assert {b.reference: b.urgent for b in needs_attention_queue(now=NOW)} == {
        wednesday.reference: True,  # starts Wednesday 00:00, within 48 h of Monday noon
        thursday.reference: False,
    }
    assert list(needs_attention_queue(now=NOW, urgent=True)) == [wednesday]
    assert list(needs_attention_queue(now=NOW, urgent=False)) == [thursday]

    settings.ATTENTION_URGENT_HORIZON_H = 24
    assert [b.urgent for b in needs_attention_queue(now=NOW)] == [False, False]
    settings.ATTENTION_URGENT_HORIZON_H = 72
    assert [b.urgent for b in needs_attention_queue(now=NOW)] == [True, True]


def test_the_summary_counts_by_reason_and_urgency_in_one_query(waiting, partner, django_assert_num_queries):
    waiting(1, "10.00", reason="compensation_failed")
    waiting(1, "10.00", reason="partner_cancelled_confirmed")
    waiting(9, "10.00", reason="partner_cancelled_confirmed")
    waiting(30, "10.00", reason="partner_cancelled_confirmed")

    with django_assert_num_queries(1):
        summary = needs_attention_summary(now=NOW)

    assert (summary.horizon_h, summary.overall.urgent, summary.overall.later) == (48, 2, 2)
    assert summary.overall.reasons == [
        ("partner_cancelled_confirmed", 1, 2, 3),
        ("compensation_failed", 1, 0, 1),
    ]
    assert {code: (c.urgent, c.later) for code, c in summary.partners.items()} == {partner.code: (2, 2)}


def test_the_page_orders_flags_and_counts(make_booking, support_client):
    today = timezone.now().date()

    def waiting_from_today(days_ahead: int, reason: str):
        start = today + timedelta(days=days_ahead)
        return make_booking(
            status=S.NEEDS_ATTENTION,
            attention_reason=reason,
            start_date=start,
            end_date=start + timedelta(days=2),
        )

    later = waiting_from_today(20, "partner_mismatch")
    urgent = waiting_from_today(1, "compensation_failed")

    page = support_client.get(reverse("admin:bookings_booking_needs_attention")).content.decode()

    queue = page[page.index('id="queue"') :]
    assert queue.index(urgent.reference) < queue.index(later.reference)
    assert f'<tr class="urgent" data-reference="{urgent.reference}">' in queue
    assert f'<tr data-reference="{later.reference}">' in queue
    by_urgency = page[page.index('id="by-urgency"') : page.index('id="by-reason"')]
    assert "<strong>1</strong>" in by_urgency and "later</a>: 1" in by_urgency
    by_reason = page[page.index('id="by-reason"') : page.index('id="by-partner"')]
    assert "compensation_failed</a>: 1 / 0" in by_reason and "partner_mismatch</a>: 0 / 1" in by_reason
    only_later = support_client.get(reverse("admin:bookings_booking_needs_attention"), {"urgency": "later"})
    assert urgent.reference not in only_later.content.decode()
    assert later.reference in only_later.content.decode()


def test_partner_health_counts_what_waits_for_support_by_reason_urgency_and_orphans(
    waiting, partner, offer, support_client
):
    waiting(1, "10.00", reason="compensation_failed")
    waiting(50, "10.00", reason="compensation_failed")
    waiting(50, "10.00", reason="partner_mismatch")
    quiet = PartnerFactory(code=unique_code("quiet"))
    orphan = PartnerReservationFactory(booking=None, partner=partner, client_reference="BK-NOBODY")
    OrphanCase.objects.create(
        reservation=orphan, opened_because="unknown_reference", automation="cancel_failed"
    )

    rows = {row.partner.code: row for row in partner_health(now=NOW)}

    assert rows[partner.code].attention.as_dict() == {
        "urgent": 1,
        "later": 2,
        "total": 3,
        "by_reason": {
            "compensation_failed": {"urgent": 1, "later": 1},
            "partner_mismatch": {"urgent": 0, "later": 1},
        },
    }
    assert rows[partner.code].orphans.as_dict() == {"open": 1, "flagged": 1}
    assert (rows[quiet.code].attention.total, rows[quiet.code].orphans.open) == (0, 0)

    data = json.loads(run("partner_health", "--json", "--partner", partner.code))["partners"][0]
    assert data["needs_attention"]["by_reason"]["partner_mismatch"] == {"urgent": 0, "later": 1}
    assert data["orphan_cases"] == {"open": 1, "flagged": 1}
    text = run("partner_health", "--partner", partner.code)
    assert "Waiting for support" in text and "compensation_failed 0/2, partner_mismatch 0/1" in text

    page = support_client.get(reverse("admin:partners_partner_health")).content.decode()
    row = page[page.index(f'data-partner="{partner.code}"') :]
    cell = row[row.index('class="mono support-load"') : row.index("</tr>")]
    assert "compensation_failed: " in cell and "(1)" in cell
