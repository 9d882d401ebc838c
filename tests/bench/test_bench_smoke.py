"""Smoke test of the benchmarks: the sweeper and timeline benchmarks in a small configuration,
on the test database, writing their JSON and plots to a temporary directory."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench import sweeper, timeline

pytestmark = pytest.mark.django_db(transaction=True)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SWEEPER_KEYS = {
    "benchmark",
    "started_at",
    "bookings",
    "setup_s",
    "runs",
    "queries_per_batch_by_batch_size",
    "queries_per_batch_constant",
    "messages_in_redis_after_real_sweep",
    "target_s",
    "under_target_s",
    "target_met",
    "real_sweep_bottleneck",
    "profile",
}
DRY_RUN_KEYS = {
    "label",
    "mode",
    "batch_size",
    "seconds",
    "due_total",
    "batches",
    "queries",
    "queries_per_batch",
    "queries_per_batch_values",
    "queries_outside_batches",
    "slowest_query_ms",
}
REAL_RUN_KEYS = DRY_RUN_KEYS | {
    "on_commit_s",
    "enqueue_s",
    "bookings_queued",
    "enqueue_bookings_per_s",
    "db_s",
}
TIMELINE_KEYS = {
    "benchmark",
    "started_at",
    "rows",
    "repeats",
    "sizes",
    "queries_constant",
    "under_target",
    "target_ms",
    "target_met",
    "profile",
}


def _messages_queued(broker):
    return lambda: sum(int(broker.do_qsize(name)) for name in broker.get_declared_queues())


def test_sweeper_bench_writes_its_figures_and_queries_per_batch_do_not_depend_on_batch_count(
    tmp_path, broker
):
    # given 400 due bookings, swept in batches of 50 (8 batches) and of 100 (4 batches)
    config = replace(sweeper.QUICK, bookings=400, batch_sizes=(50, 100))

    # when the benchmark runs and reports
    data = {
        "benchmark": "sweeper",
        "started_at": "now",
        **sweeper.measure(config, messages_queued=_messages_queued(broker)),
    }
    sweeper.report(data, results_dir=tmp_path, img_dir=tmp_path)

    # then its JSON has every figure, and the queries per batch are the same for both batch counts
    saved = json.loads((tmp_path / "sweeper.json").read_text())
    assert set(saved) == SWEEPER_KEYS
    assert [set(run) for run in saved["runs"]] == [
        DRY_RUN_KEYS,
        DRY_RUN_KEYS,
        REAL_RUN_KEYS,
        REAL_RUN_KEYS,
        DRY_RUN_KEYS,
    ]
    dry_small, dry_large, real, again = saved["runs"][:4]
    assert (dry_small["batches"], dry_large["batches"]) == (8, 4)
    assert dry_small["due_total"] == dry_large["due_total"] == real["due_total"] == 400
    assert saved["queries_per_batch_by_batch_size"]["50"] == saved["queries_per_batch_by_batch_size"]["100"]
    assert dry_small["queries_per_batch_values"] == [dry_small["queries_per_batch"]]
    assert real["bookings_queued"] == 400  # counted as they are sent (a worker may take them off Redis)
    assert again["due_total"] == 0
    assert (tmp_path / "bench-sweeper.png").read_bytes().startswith(PNG_SIGNATURE)


def test_timeline_bench_writes_its_figures_and_queries_do_not_grow_with_rows(tmp_path):
    # given timelines of 20 and 100 rows
    config = replace(timeline.QUICK, rows=(20, 100), repeats=1)

    # when the benchmark runs and reports
    data = {"benchmark": "timeline", "started_at": "now", **timeline.measure(config)}
    timeline.report(data, results_dir=tmp_path, img_dir=tmp_path)

    # then its JSON has every figure, each timeline has its rows, and the queries are the same
    saved = json.loads((tmp_path / "timeline.json").read_text())
    assert set(saved) == TIMELINE_KEYS
    assert set(saved["sizes"]) == {"20", "100"}
    small, large = saved["sizes"]["20"], saved["sizes"]["100"]
    assert (small["build"]["rows"], large["build"]["rows"]) == (20, 100)
    assert small["admin_page"]["status"] == large["admin_page"]["status"] == 200
    assert small["build"]["queries"] == large["build"]["queries"]
    assert small["admin_page"]["queries"] == large["admin_page"]["queries"]
    assert (tmp_path / "bench-timeline.png").read_bytes().startswith(PNG_SIGNATURE)
