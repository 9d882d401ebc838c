"""Benchmark 4, sweeper: one `sweep()` over 100,000 open bookings that are all due.

The bookings are written with `bulk_create`, their `next_check_at` spread over the last hour.
Measured: a dry run at two batch sizes (time, queries, queries per batch); the same with every
`next_check_at` equal (what the sweeper's own batch update leaves behind); a real sweep at the
default batch size (and, in the full run, again at the larger one), which pushes
`next_check_at` forward and queues the due bookings to Redis. The real sweep's on-commit work
in Redis (claims and enqueues), and the enqueues alone, are timed on their own. Queries per
batch come from the sweep's `progress` callback: the statements run between two callbacks
(BEGIN and COMMIT count). After each bulk write the table is vacuumed and analyzed, as autovacuum
would do. Targets: the same queries per batch at both batch sizes, and a sweep under 10 s.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from bench import common, fixtures, output

NAME = "sweeper"
TARGET_S = 10.0


@dataclass(frozen=True)
class Config:
    bookings: int
    batch_sizes: tuple[int, int]
    profile: bool


FULL = Config(bookings=100_000, batch_sizes=(1000, 5000), profile=True)
QUICK = Config(bookings=2_000, batch_sizes=(200, 500), profile=False)


def populate(count: int) -> None:
    """`count` due bookings of one partner (no sandbox: the sweep never calls a partner)."""
    from django.utils import timezone

    _, offer = fixtures.bench_partner(base_url="http://127.0.0.1:9/unused", webhooks=False)
    ((customer, _token),) = fixtures.customers(1, prefix="sweeper-customer")
    now = timezone.now()
    fixtures.bulk_bookings(
        count=count, customer=customer, offer=offer, due_from=now - timedelta(hours=1), due_until=now
    )
    refresh_statistics()


def refresh_statistics() -> None:
    """Vacuum and analyze the bookings table, as autovacuum would after such bulk writes (the bench
    server may run without it). Without statistics, PostgreSQL takes the 100,000 due rows for a
    few hundred and sorts them all again for every batch, instead of reading them in index order."""
    from django.db import connection

    from bookings.models import Booking

    table = connection.ops.quote_name(Booking._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table}" if connection.vendor == "postgresql" else f"ANALYZE {table}")


def tie_due_times() -> None:
    """Every open booking due at the very same instant (one statement; bench data only)."""
    from django.utils import timezone

    from bookings.models import Booking

    Booking.objects.open().update(next_check_at=timezone.now() - timedelta(minutes=5))
    refresh_statistics()


def reset_due_times() -> None:
    """Make every booking due again after a real sweep pushed them forward."""
    from django.db.models import F

    from bookings.models import Booking

    Booking.objects.open().update(next_check_at=F("created_at"))
    refresh_statistics()


def one_sweep(*, dry_run: bool, batch_size: int, label: str) -> dict[str, Any]:
    """Run one sweep: its time, queries, queries per batch, and for a real sweep the time spent
    in its on-commit work (claiming and queueing the messages in Redis)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reconciliation.services import sweeper as sweep_service
    from reconciliation.services.sweeper import sweep

    marks: list[int] = []
    redis_work = {"on_commit_s": 0.0, "enqueue_s": 0.0, "bookings": 0}
    queue_messages = sweep_service.queue_sweep_messages
    run_hooks = connection.run_and_clear_commit_hooks

    def timed_queue(batch: list[tuple]) -> None:
        start = time.perf_counter()
        queue_messages(batch)
        redis_work["enqueue_s"] += time.perf_counter() - start
        redis_work["bookings"] += len(batch)

    def timed_hooks() -> None:
        start = time.perf_counter()
        run_hooks()
        redis_work["on_commit_s"] += time.perf_counter() - start

    with (
        CaptureQueriesContext(connection) as queries,
        mock.patch.object(sweep_service, "queue_sweep_messages", timed_queue),
        mock.patch.object(connection, "run_and_clear_commit_hooks", timed_hooks),
    ):
        start = time.perf_counter()
        report = sweep(dry_run=dry_run, batch_size=batch_size, progress=lambda n: marks.append(len(queries)))
        elapsed = time.perf_counter() - start
    per_batch = [b - a for a, b in zip([0, *marks], marks, strict=False)]
    counts = Counter(per_batch)
    result = {
        "label": label,
        "mode": "dry_run" if dry_run else "real",
        "batch_size": batch_size,
        "seconds": round(elapsed, 3),
        "due_total": report.as_dict()["due_total"],
        "batches": report.batches,
        "queries": len(queries),
        "queries_per_batch": counts.most_common(1)[0][0] if counts else 0,
        "queries_per_batch_values": sorted(counts),
        "queries_outside_batches": len(queries) - sum(per_batch),
        "slowest_query_ms": _slowest(queries.captured_queries),
    }
    if not dry_run:
        # On-commit work: the claims (one Lua call per batch) and the enqueues (one round trip each).
        result["on_commit_s"] = round(redis_work["on_commit_s"], 3)
        result["enqueue_s"] = round(redis_work["enqueue_s"], 3)
        result["bookings_queued"] = redis_work["bookings"]
        result["enqueue_bookings_per_s"] = (
            round(redis_work["bookings"] / redis_work["enqueue_s"]) if redis_work["enqueue_s"] else None
        )
        result["db_s"] = round(elapsed - redis_work["on_commit_s"], 3)
    return result


def _slowest(captured: list[dict[str, str]]) -> float:
    return max((float(query["time"]) * 1000 for query in captured), default=0.0)


def measure(
    config: Config,
    *,
    messages_queued: Any = None,
    reset_redis: Any = None,
    results_dir: Path | None = None,
) -> dict[str, Any]:
    """Every run of the benchmark on the configured database (the smoke test calls this too).

    `reset_redis` empties Redis before the profiled sweep, so that it queues as much as the
    timed one (the sweeper remembers what it queued)."""
    with common.timed() as setup:
        populate(config.bookings)
    small, large = config.batch_sizes
    runs = [
        one_sweep(dry_run=True, batch_size=small, label=f"dry run, batch {small}"),
        one_sweep(dry_run=True, batch_size=large, label=f"dry run, batch {large}"),
    ]
    runs.append(one_sweep(dry_run=False, batch_size=small, label=f"real, batch {small}"))
    queued = messages_queued() if messages_queued else None
    runs.append(one_sweep(dry_run=False, batch_size=small, label="real again (nothing due)"))
    tie_due_times()
    runs.append(one_sweep(dry_run=True, batch_size=small, label=f"dry run, batch {small}, equal due times"))
    if reset_redis:  # the real sweep at the larger batch size, from the same start
        reset_due_times()
        reset_redis()
        runs.append(one_sweep(dry_run=False, batch_size=large, label=f"real, batch {large}"))
    profile = None
    if config.profile:
        reset_due_times()
        if reset_redis:
            reset_redis()
        _, profile = output.profiled(
            NAME,
            lambda: one_sweep(dry_run=False, batch_size=small, label="profiled"),
            **({"results_dir": results_dir} if results_dir else {}),
        )
    by_batch = {str(run["batch_size"]): run["queries_per_batch"] for run in runs[:2]}
    constant = len(set(by_batch.values())) == 1 and all(
        len(run["queries_per_batch_values"]) == 1 for run in runs[:3]
    )
    real = runs[2]
    return {
        "bookings": config.bookings,
        "setup_s": round(setup["s"], 1),
        "runs": runs,
        "queries_per_batch_by_batch_size": by_batch,
        "queries_per_batch_constant": constant,
        "messages_in_redis_after_real_sweep": queued,
        "target_s": TARGET_S,
        "under_target_s": {run["label"]: run["seconds"] < TARGET_S for run in runs},
        "target_met": constant and all(run["seconds"] < TARGET_S for run in runs[:3]),
        "real_sweep_bottleneck": "redis (on commit)" if real["on_commit_s"] > real["db_s"] else "database",
        "profile": profile,
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    return common.run_measured(
        NAME,
        quick=quick,
        measure=lambda env: measure(
            config, messages_queued=common.messages_queued, reset_redis=env.flush_redis
        ),
        report=report,
    )


def report(data: dict[str, Any], *, results_dir: Path | None = None, img_dir: Path | None = None) -> None:
    rows = [
        [
            run["label"],
            run["due_total"],
            run["batches"],
            run["seconds"],
            run["queries"],
            run["queries_per_batch"],
            run["queries_outside_batches"],
            run.get("on_commit_s", ""),
            run.get("enqueue_s", ""),
            run["seconds"] < data["target_s"],
        ]
        for run in data["runs"]
    ]
    output.print_table(
        f"Sweeper: one sweep over {data['bookings']:,} due bookings (PostgreSQL)",
        [
            "run",
            "due",
            "batches",
            "seconds",
            "queries",
            "queries/batch",
            "other queries",
            "on-commit s",
            "of which enqueue s",
            "< 10 s",
        ],
        rows,
    )
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Path | None = None) -> None:
    plt = output.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    runs = data["runs"]
    labels = [run["label"].replace(", ", "\n") for run in runs]
    db = [run.get("db_s", run["seconds"]) for run in runs]
    redis_work = [run.get("on_commit_s", 0.0) for run in runs]
    left.bar(labels, db, label="database and Python")
    left.bar(labels, redis_work, bottom=db, label="on commit: claims and enqueues in Redis")
    left.axhline(data["target_s"], color="red", linestyle="--", label="target")
    left.set_ylabel("seconds")
    left.set_title(f"One sweep over {data['bookings']:,} due bookings")
    left.tick_params(axis="x", labelsize=7)
    left.legend()
    bars = right.bar(labels, [run["queries_per_batch"] for run in runs], color="tab:purple")
    right.bar_label(bars)
    right.set_ylabel("queries per batch")
    right.set_title("Queries per batch")
    right.tick_params(axis="x", labelsize=7)
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
