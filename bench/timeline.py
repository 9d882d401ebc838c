"""Benchmark 5, timeline: queries and time to build a 1,000-row booking timeline
(`reconciliation.selectors.timeline.booking_timeline`) and to render the booking's admin page with it
(Django's test Client, logged in as a superuser, `GET /admin/bookings/booking/<id>/change/`).

The booking's story is a realistic mix written with `bulk_create`: timeline events (some of
which describe a partner attempt or observation, which then show inside that row), attempts,
observations and webhook deliveries of their own. The same is measured at a tenth of the size:
equal query counts mean the queries do not grow with the rows. Each timing is the median of
several runs after a warm-up. Target: constant queries, under 300 ms.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import common, fixtures, output, stats

NAME = "timeline"
TARGET_MS = 300.0


@dataclass(frozen=True)
class Config:
    rows: tuple[int, int]  # a small and the full timeline
    repeats: int
    profile: bool


FULL = Config(rows=(100, 1000), repeats=7, profile=True)
QUICK = Config(rows=(20, 100), repeats=2, profile=False)


def story(*, rows: int, customer: Any, offer: Any) -> Any:
    """A booking whose timeline has `rows` rows (a multiple of 10): 6/10 events (a sixth of them
    describing an attempt, a sixth an observation), 1/10 attempts, 1/10 observations and 2/10
    webhook deliveries with rows of their own."""
    import json

    from django.utils import timezone

    from bookings.models import Actor, Booking, BookingEvent
    from partners.models import (
        InboundEvent,
        InboundResult,
        InboundState,
        ObservationResult,
        Operation,
        Outcome,
        PartnerAttempt,
        PartnerObservation,
        PartnerReservation,
        ReservationStatus,
        Source,
    )

    unit = rows // 10
    start, end = fixtures.stay_dates()
    t0 = timezone.now() - timedelta(days=1)
    booking = Booking.objects.create(
        customer=customer,
        offer=offer,
        partner_id=offer.partner_id,
        start_date=start,
        end_date=end,
        guests=2,
        total_price="360.00",
        currency="EUR",
        deadline=t0 + timedelta(days=2),
    )
    reservation = PartnerReservation.objects.create(
        partner_id=offer.partner_id,
        partner_ref=f"R-{uuid.uuid4().hex[:10]}",
        booking=booking,
        client_reference=booking.reference,
        status=ReservationStatus.CONFIRMED,
        learned_from=Source.RESPONSE,
        version=1,
    )

    def at(index: int) -> Any:
        return t0 + timedelta(seconds=index)

    attempts = PartnerAttempt.objects.bulk_create(
        [
            PartnerAttempt(
                partner_id=offer.partner_id,
                booking=booking,
                reservation=reservation,
                operation=Operation.LOOKUP if i % 2 else Operation.CREATE,
                idempotency_key=booking.partner_key,
                started_at=at(10 * i),
                finished_at=at(10 * i + 1),
                outcome=Outcome.OK,
                http_status=200,
                latency_ms=40 + i % 50,
                partner_time=at(10 * i + 1) + timedelta(milliseconds=250),
                resolved_at=at(10 * i + 1),
                resolution="ok",
            )
            for i in range(2 * unit)
        ]
    )
    inbound = InboundEvent.objects.bulk_create(
        [
            InboundEvent(
                partner_id=offer.partner_id,
                event_id=f"evt_{uuid.uuid4().hex}",
                received_at=at(10 * i + 3),
                raw_body=json.dumps(
                    {"type": "reservation.updated", "data": {"id": reservation.partner_ref, "version": i}}
                ).encode(),
                headers={"webhook-id": f"msg_{i}", "webhook-timestamp": str(int(at(10 * i + 3).timestamp()))},
                partner_timestamp=at(10 * i + 3) - timedelta(milliseconds=120),
                signature_valid=True,
                state=InboundState.PROCESSED,
                result=InboundResult.DUPLICATE,
                processed_at=at(10 * i + 4),
                booking=booking,
                reservation=reservation,
            )
            for i in range(2 * unit)
        ]
    )
    observations = PartnerObservation.objects.bulk_create(
        [
            PartnerObservation(
                reservation=reservation,
                booking=booking,
                source=Source.LOOKUP,
                status=ReservationStatus.CONFIRMED,
                version=1,
                partner_modified_at=at(10 * i + 5),
                received_at=at(10 * i + 5),
                result=ObservationResult.DUPLICATE if i % 2 else ObservationResult.APPLIED,
                payload={"id": reservation.partner_ref, "status": "confirmed", "version": 1},
            )
            for i in range(2 * unit)
        ]
    )
    events = []
    for i in range(6 * unit):
        data: dict[str, Any] = {"step": i}
        kind = "booking.note"
        if i < unit:
            data["attempt_id"] = attempts[i].pk  # the first half of the attempts are described
            kind = "partner.attempt.ok"
        elif i < 2 * unit:
            data["observation_id"] = observations[i - unit].pk
            kind = "partner.observation.applied"
        events.append(
            BookingEvent(
                booking=booking,
                kind=kind,
                actor=Actor.WORKER,
                actor_label="bench",
                summary=f"step {i}",
                from_state="pending_partner",
                to_state="pending_partner",
                occurred_at=at(10 * i + 7),
                data=data,
            )
        )
    BookingEvent.objects.bulk_create(events)
    assert len(inbound) == 2 * unit
    return booking


def build_timeline(booking_id: Any, repeats: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bookings.models import Booking
    from reconciliation.selectors.timeline import booking_timeline

    timings = []
    rows = 0
    queries = 0
    for index in range(repeats + 1):
        booking = Booking.objects.select_related("partner").get(pk=booking_id)
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            rows = len(booking_timeline(booking))
            elapsed = time.perf_counter() - start
        queries = len(captured)
        if index:  # the first run warms caches up
            timings.append(elapsed * 1000)
    return {
        "rows": rows,
        "queries": queries,
        "ms": round(stats.median(timings), 1),
        "ms_max": round(max(timings), 1),
    }


def render_admin(client: Any, booking_id: Any, repeats: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = f"/admin/bookings/booking/{booking_id}/change/"
    timings = []
    status = 0
    queries = 0
    size = 0
    for index in range(repeats + 1):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - start
        status, queries, size = response.status_code, len(captured), len(response.content)
        if index:
            timings.append(elapsed * 1000)
    return {
        "url": url,
        "status": status,
        "queries": queries,
        "bytes": size,
        "ms": round(stats.median(timings), 1),
        "ms_max": round(max(timings), 1),
    }


def measure(config: Config, *, results_dir: Path | None = None) -> dict[str, Any]:
    """Every measurement on the configured database (the smoke test calls this too)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    _, offer = fixtures.bench_partner(base_url="http://127.0.0.1:9/unused", webhooks=False)
    ((customer, _token),) = fixtures.customers(1, prefix="timeline-customer")
    admin = get_user_model().objects.create_superuser("bench-admin", "bench-admin@example.com", "unused")
    client = Client()
    client.force_login(admin)
    sizes: dict[str, Any] = {}
    bookings = {}
    for rows in config.rows:
        booking = story(rows=rows, customer=customer, offer=offer)
        bookings[rows] = booking.pk
        sizes[str(rows)] = {
            "build": build_timeline(booking.pk, config.repeats),
            "admin_page": render_admin(client, booking.pk, config.repeats),
        }
    small, large = (sizes[str(rows)] for rows in config.rows)
    constant = {
        "build": small["build"]["queries"] == large["build"]["queries"],
        "admin_page": small["admin_page"]["queries"] == large["admin_page"]["queries"],
    }
    fast = {
        "build": large["build"]["ms"] < TARGET_MS,
        "admin_page": large["admin_page"]["ms"] < TARGET_MS and large["admin_page"]["status"] == 200,
    }
    profile = None
    if config.profile:
        _, profile = output.profiled(
            NAME,
            lambda: client.get(f"/admin/bookings/booking/{bookings[config.rows[1]]}/change/"),
            **({"results_dir": results_dir} if results_dir else {}),
        )
    return {
        "rows": list(config.rows),
        "repeats": config.repeats,
        "sizes": sizes,
        "queries_constant": constant,
        "under_target": fast,
        "target_ms": TARGET_MS,
        "target_met": all(constant.values()) and all(fast.values()),
        "profile": profile,
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    return common.run_measured(NAME, quick=quick, measure=lambda env: measure_frozen(config), report=report)


def measure_frozen(config: Config) -> dict[str, Any]:
    """`measure` as in a gunicorn worker, which freezes what start-up built (config/wsgi.py):
    otherwise every full collection here also scans this process's benchmark harness."""
    import gc

    gc.collect()
    gc.freeze()
    return measure(config)


def report(data: dict[str, Any], *, results_dir: Path | None = None, img_dir: Path | None = None) -> None:
    rows = []
    for size, row in data["sizes"].items():
        rows.append(
            [
                "booking_timeline()",
                size,
                row["build"]["rows"],
                row["build"]["queries"],
                row["build"]["ms"],
                "",
            ]
        )
        page = row["admin_page"]
        rows.append(
            ["admin change page", size, f"HTTP {page['status']}", page["queries"], page["ms"], page["bytes"]]
        )
    output.print_table(
        "Timeline: build and admin page (median of runs, PostgreSQL)",
        ["what", "rows", "result", "queries", "ms", "bytes"],
        rows,
    )
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Path | None = None) -> None:
    plt = output.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = list(data["sizes"])
    for offset, key, label in ((-0.2, "build", "booking_timeline()"), (0.2, "admin_page", "admin page")):
        values = [data["sizes"][s][key]["ms"] for s in sizes]
        bars = left.bar([i + offset for i in range(len(sizes))], values, 0.4, label=label)
        left.bar_label(bars, fmt="%.0f")
        values = [data["sizes"][s][key]["queries"] for s in sizes]
        bars = right.bar([i + offset for i in range(len(sizes))], values, 0.4, label=label)
        right.bar_label(bars)
    left.axhline(data["target_ms"], color="red", linestyle="--", label="target")
    for axis, ylabel in ((left, "ms (median)"), (right, "queries")):
        axis.set_xticks(range(len(sizes)), [f"{s} rows" for s in sizes])
        axis.set_ylabel(ylabel)
        axis.legend()
    left.set_title("Time")
    right.set_title("Queries")
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
