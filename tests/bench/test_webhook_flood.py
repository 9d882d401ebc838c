"""Smoke test of the webhook flood benchmark: a small flood against the receiver as the Procfile
runs it, on the test database, writing its figures, plot and report section to a temporary
directory. What the figures are is the benchmark's business; here only that they are there."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bench import webhook_flood
from tests.bench.conftest import OnTestDatabase
from tests.bookings.conftest import IS_POSTGRES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMOKE = replace(webhook_flood.QUICK, flood=400, sources=20, partner_limit=10, warmup=3)


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.skipif(not IS_POSTGRES, reason="the receiver and the test share the database")
def test_webhook_flood_bench_times_authentic_deliveries_in_both_phases_and_writes_its_figures(
    bench_env: OnTestDatabase, tmp_path
):
    # when a small flood runs against the receiver, in phases, and the benchmark reports
    data = {"benchmark": "webhook_flood", "started_at": "now", **webhook_flood.measure(bench_env, SMOKE)}
    webhook_flood.report(data, results_dir=tmp_path, img_dir=tmp_path)

    # then every forged delivery was answered, and authentic ones were timed in both phases
    saved = json.loads((tmp_path / "webhook_flood.json").read_text())
    assert set(saved) == set(data)
    assert sum(saved["flood"]["statuses"].values()) == SMOKE.flood
    assert saved["flood"]["phases"] >= 2
    for phase in ("flood_on", "flood_off"):
        figures = saved["authentic"][phase]
        assert figures["n"] > 0
        assert all(math.isfinite(figures[key]) for key in ("p50_ms", "p99_ms"))
    assert sum(saved["authentic"]["statuses"].values()) >= len(saved["series"]) > 0
    assert math.isfinite(saved["p99_ratio"]) and saved["flood"]["rate_per_s"] > 0
    assert all(math.isfinite(bound) for bound in saved["p99_ratio_interval"])
    # and the database's growth, in rows and bytes, before and after
    for side in ("before", "after"):
        assert {"rows", "bytes", "table_bytes", "authentic_rows"} <= set(saved["evidence"][side])
    assert {"rows", "bytes", "table_bytes"} <= set(saved["evidence"]["growth"])
    assert (tmp_path / "bench-webhook_flood.png").read_bytes().startswith(PNG_SIGNATURE)
    section = webhook_flood.markdown(saved)
    assert "p99 with the flood on / off" in section and "Target (" in section
