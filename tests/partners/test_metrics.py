"""The partner side's figures in /metrics move with the real thing: a booking submitted by a real
worker to a sandbox partner, confirmed, its webhooks received by our live server; and a call the
breaker stops. Counters are process-wide and the sandbox partner's code lasts the session, so each
test compares the figures before and after.

The endpoint, its protection and the other figures: tests/config/test_metrics.py.
"""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from bookings.states import BookingState
from partners import guard
from partners.connectors import connector_for
from tests.helpers import wait_until
from tests.partners.conftest import book, wait_for_status

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def scrape() -> dict[tuple[str, frozenset], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def metrics_open(settings):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = True, ""


def test_a_booking_that_confirms_moves_its_figures(harness, partner_worker, metrics_open):
    h = harness("reference")
    partner_worker(h.partner)
    code = h.partner.code
    before = scrape()

    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    after = wait_until(
        lambda: (
            (a := scrape())
            and moved(before, a, "bookings_webhook_deliveries_total", partner=code, result="accepted")
            and a
        ),
        what="the partner's webhook to be received",
    )

    assert moved(before, after, "bookings_by_state", state=S.CONFIRMED) == 1
    assert moved(before, after, "bookings_by_state", state=S.REQUESTED) == 0
    # the worker's create at the partner: one call, ok, its latency in the histogram
    assert (
        moved(before, after, "bookings_partner_calls_total", partner=code, operation="create", outcome="ok")
        == 1
    )
    duration = "bookings_partner_call_duration_seconds"
    assert moved(before, after, f"{duration}_count", partner=code, operation="create") == 1
    assert moved(before, after, f"{duration}_bucket", partner=code, operation="create", le="+Inf") == 1
    assert moved(before, after, f"{duration}_bucket", partner=code, operation="create", le="10.0") == 1
    assert 0 < moved(before, after, f"{duration}_sum", partner=code, operation="create") < 10
    # the create's answer confirmed it: the partner's change applied from its response
    lag = "bookings_partner_change_lag_seconds"
    assert moved(before, after, f"{lag}_count", partner=code, source="response") == 1
    assert 0 <= moved(before, after, f"{lag}_sum", partner=code, source="response") < 10
    assert moved(before, after, "bookings_webhook_deliveries_total", partner=code, result="accepted") >= 1


def test_a_call_the_open_breaker_stops_is_counted_as_not_sent(harness, metrics_open):
    h = harness("reference")
    code = h.partner.code
    guard.breaker_for(h.partner).open()
    before = scrape()

    result = guard.guarded_call(h.partner, lambda: connector_for(h.partner).get("R-1"), operation="get")

    after = scrape()
    assert result.error_code == "circuit_open"
    assert (
        moved(
            before,
            after,
            "bookings_partner_calls_not_sent_total",
            partner=code,
            operation="get",
            reason="circuit_open",
        )
        == 1
    )
    assert (
        moved(before, after, "bookings_partner_call_duration_seconds_count", partner=code, operation="get")
        == 0
    )
    assert (
        after[("bookings_partner_breaker_state", frozenset({"partner": code, "state": "open"}.items()))] == 1
    )
    assert h.sandbox.stats()["calls"] == {}  # nothing reached the partner
