"""Smoke test of the payments benchmark: a few bookings each way through real workers, partner and
payment provider, and a few POSTs each way, on the test database, writing its figures, plot and
report section to a temporary directory. What the figures are is the benchmark's business; here
that they are there, and that the paying side really paid (the provider's own truth)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from django.db import connection

from bench import payments
from bench.load import WARMUP_REQUESTS
from tests.bench.conftest import OnTestDatabase
from tests.bookings.conftest import IS_POSTGRES
from tests.streams import database_url

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMOKE = replace(payments.QUICK, processes=1, bookings=8, rounds=1, clients=2, requests_each=6, api_rounds=2)


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.skipif(not IS_POSTGRES, reason="the workers, servers and the test share the database")
def test_payments_bench_captures_every_paying_booking_at_the_provider_and_times_both_posts(
    bench_env: OnTestDatabase, tmp_path
):
    # the lock-wait sampler reads this test's database
    bench_env.database_url, bench_env.db_name = database_url(), connection.settings_dict["NAME"]

    # when both comparisons run against their real processes, and the benchmark reports
    data = {"benchmark": "payments", "started_at": "now", **payments.measure(bench_env, SMOKE)}
    payments.report(data, results_dir=tmp_path, img_dir=tmp_path)

    # then each side went through the workers to its end, and the rates are there
    saved = json.loads((tmp_path / "payments.json").read_text())
    assert set(saved) == set(data)
    (round_,) = saved["end_to_end"]["rounds"]
    assert round_["order"] == ["without", "with"]
    for side in payments.SIDES:
        unfinished = (round_[side].get("unfinished"), round_[side].get("worker_log_tail"))
        assert round_[side]["completed"] and round_[side]["per_s"] > 0, unfinished
        assert round_[side]["series"][-1][1] == SMOKE.bookings
        assert round_[side]["servers_cpu_s"].keys() == {"webhooks", "partner", "provider"}
        # the machine's CPU for the side covers at least what its workers used, split by part
        split = round_[side]["cpu_ms_per_booking"]
        assert split.keys() == {"workers", "webhooks", "partner", "provider", "rest"}
        assert round_[side]["machine_cpu_ms_per_booking"] >= split["workers"] > 0
    assert saved["end_to_end"]["cpu_ms_per_booking"]["with"]["provider"] > 0  # only the paying side
    assert saved["end_to_end"]["cpu_ms_per_booking"]["without"]["machine"] > 0
    assert saved["end_to_end"]["ratio"] > 0 and isinstance(saved["end_to_end"]["target_met"], bool)
    # and every paying booking was captured in full, by our rows and by the provider's truth,
    # while the others took no money
    money = saved["money"]
    assert money["captured_in_full_at_provider"] == money["captured_in_full_by_our_rows"] == SMOKE.bookings
    assert money["intents_at_provider"] == SMOKE.bookings and money["all_held"]
    assert money["without_payment_confirmed"] == SMOKE.bookings
    assert money["without_payment_with_money"] == 0
    # and both POSTs ran in alternating rounds, the paying one storing a payment and queueing its run
    post = saved["post"]
    assert post["rounds"] == ["without", "with", "with", "without"]
    requests = SMOKE.clients * SMOKE.requests_each * SMOKE.api_rounds
    for side in payments.SIDES:
        assert (post[side]["requests_ok"], post[side]["errors"]) == (requests, {})
        assert post[side]["p99_ms"] >= post[side]["p50_ms"] > 0
    posted = SMOKE.clients * (SMOKE.requests_each + WARMUP_REQUESTS) * SMOKE.api_rounds  # a side
    assert post["checks"] == {
        "bookings_stored": 2 * posted,
        "payments_stored": posted,
        "payment_runs_queued": posted,
        "submissions_queued": posted,
    }
    assert post["throughput_ratio"] > 0
    assert (tmp_path / "bench-payments.png").read_bytes().startswith(PNG_SIGNATURE)
    section = payments.markdown(saved)
    assert "**The customer POST.**" in section and "Target (" in section
    assert "The machine's CPU a booking" in section
