"""Start options, the product catalogue, concurrency, restarts and a clean SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_until
from tests.sandbox.conftest import API_KEY, SECRET, WebhookReceiver, legacy_body, reference_body
from tests.sandbox_process import ROOT, SandboxProcess


def test_every_fault_can_be_set_by_a_start_option(start_sandbox) -> None:
    partner = start_sandbox(
        "reference",
        *("--latency-ms", "10,50", "--timeout-after-commit-rate", "0.2", "--error-5xx-rate", "0.1"),
        *("--error-500-saved-rate", "0.02"),
        *("--rate-limit-rate", "0.05", "--reject-rate", "0.3", "--async-confirm-delay-s", "5"),
        *("--webhook-duplicate-rate", "0.1", "--webhook-reorder-rate", "0.2", "--webhook-delay-s", "1,3"),
        *("--webhook-early-rate", "0.5", "--clock-skew-s", "-90", "--honour-idempotency-keys", "false"),
        *("--partner-cancel-rate", "0.1", "--partner-cancel-delay-s", "30,90", "--vanish-rate", "0.05"),
        *("--vanish-delay-s", "120", "--amend-rate", "0.2", "--garbage-values-rate", "0.01"),
        *("--refund-refused-rate", "0.5", "--void-refused-rate", "0.25"),
        *("--error-500-reconciled-rate", "0.03", "--error-500-reconciled-delay-s", "2,4"),
        *("--auth-failure-window-s", "3600,60", "--outage-window-s", "7200,30"),
        *("--time-scale", "60", "--seed", "7", "--no-lookup-by-reference"),
    )

    faults = partner.request("GET", "/_sandbox/faults").json()

    assert faults == {
        "latency_ms": [10, 50],
        "timeout_after_commit_rate": 0.2,
        "error_5xx_rate": 0.1,
        "error_500_saved_rate": 0.02,
        "error_500_reconciled_rate": 0.03,
        "error_500_reconciled_delay_s": [2, 4],
        "rate_limit_rate": 0.05,
        "reject_rate": 0.3,
        "async_confirm_delay_s": 5,
        "webhook_duplicate_rate": 0.1,
        "webhook_reorder_rate": 0.2,
        "webhook_delay_s": [1, 3],
        "webhook_early_rate": 0.5,
        "clock_skew_s": -90,
        "honour_idempotency_keys": False,
        "partner_cancel_rate": 0.1,
        "partner_cancel_delay_s": [30, 90],
        "vanish_rate": 0.05,
        "vanish_delay_s": [120, 120],
        "amend_rate": 0.2,
        "auth_failure_window_s": [3600, 60],
        "outage_window_s": [7200, 30],
        "garbage_values_rate": 0.01,
        "refund_refused_rate": 0.5,
        "void_refused_rate": 0.25,
        "time_scale": 60,
        "seed": 7,
    }
    partner.set_faults(rate_limit_rate=0, error_5xx_rate=0)
    lookup = partner.request("GET", "/v1/reservations", params={"client_reference": "BK-1"})
    assert (lookup.status_code, lookup.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    "bad",
    [
        ["--reject-rate", "2"],
        ["--latency-ms", "50,10"],
        ["--honour-idempotency-keys", "maybe"],
        ["--outage-window-s", "5"],
        ["--auth-failure-window-s", "-1,5"],
        ["--amend-rate", "-0.1"],
        ["--product", "no-capacity"],
        ["--timezone", "Mars/Olympus"],
    ],
)
def test_a_bad_start_option_fails_at_once(tmp_path: Path, bad: list[str]) -> None:
    command = [sys.executable, "manage.py", "run_sandbox_partner", "--profile", "reference"]
    command += ["--port", "1", "--store", str(tmp_path / "s.sqlite3"), *bad]

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)

    assert result.returncode != 0
    assert result.stderr.strip()


def _start_refused(*options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "manage.py", "run_sandbox_partner", "--profile", "reference", *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        (["--port", "99999"], "--port 99999: a port is 0 (any free one) to 65535"),
        (["--port", "-1"], "--port -1: a port is 0 (any free one) to 65535"),
        (["--threads", "0"], "--threads 0: at least 1"),
        (["--hang-s", "nan"], "--hang-s nan: seconds, 0 or more"),
        (["--hang-s", "-1"], "--hang-s -1.0: seconds, 0 or more"),
        (["--timezone", f"Europe/{'a' * 300}"], "--timezone: unknown zone"),
    ],
)
def test_a_start_option_out_of_range_is_one_line_not_a_traceback(
    tmp_path: Path, bad: list[str], said: str
) -> None:
    result = _start_refused("--port", "0", "--store", str(tmp_path / "s.sqlite3"), *bad)

    assert result.returncode == 1
    assert result.stderr.startswith(f"CommandError: {said}") and result.stderr.count("\n") == 1


def test_a_store_it_cannot_open_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from sandbox.store import Store

    Store(tmp_path / "legacy.sqlite3", "legacy").close()

    missing = _start_refused("--port", "0", "--store", str(tmp_path / "no-such-dir" / "s.sqlite3"))
    another = _start_refused("--port", "0", "--store", str(tmp_path / "legacy.sqlite3"))

    assert (missing.returncode, another.returncode) == (1, 1)
    assert missing.stderr == (
        f"CommandError: sandbox partner could not open its store {tmp_path / 'no-such-dir' / 's.sqlite3'}: "
        "unable to open database file\n"
    )
    assert another.stderr.startswith("CommandError: sandbox partner could not open its store")
    assert another.stderr.endswith("holds a legacy partner\n")


def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = _start_refused("--port", str(port), "--store", str(tmp_path / "s.sqlite3"))

    assert result.returncode == 1
    assert result.stderr.startswith(f"CommandError: sandbox partner could not listen on 127.0.0.1:{port}: ")
    assert "Address already in use" in result.stderr and result.stderr.count("\n") == 1


def test_catalogue_capacity_makes_sold_out_real(start_sandbox, tmp_path: Path) -> None:
    products = tmp_path / "products.json"
    products.write_text(json.dumps([{"id": "room-small", "capacity": 1, "price": "120.00"}]))
    partner = start_sandbox("reference", "--products-file", str(products), "--product", "room-big:5:99.50")

    def book(product: str, start: str, end: str) -> dict:
        body = reference_body(product_id=product, start_date=start, end_date=end)
        return partner.request("POST", "/v1/reservations", json=body).json()

    first = book("room-small", "2027-03-01", "2027-03-04")
    overlapping = book("room-small", "2027-03-03", "2027-03-05")
    adjacent = book("room-small", "2027-03-04", "2027-03-06")
    partner.request("POST", f"/v1/reservations/{first['id']}/cancel")
    after_cancel = book("room-small", "2027-03-02", "2027-03-03")

    assert first["status"] == "confirmed"
    assert (overlapping["status"], overlapping["reason"]) == ("rejected", "sold_out")
    assert adjacent["status"] == "confirmed"
    assert after_cancel["status"] == "confirmed"
    unknown = partner.request("POST", "/v1/reservations", json=reference_body(product_id="room-none"))
    assert (unknown.status_code, unknown.json()["error"]) == (422, "unknown_product")
    info = partner.request("GET", "/_sandbox/info").json()
    assert info["products"] == [
        {"id": "room-small", "capacity": 1, "price": "120.00"},
        {"id": "room-big", "capacity": 5, "price": "99.50"},
    ]


def test_concurrent_creates_never_oversell(start_sandbox) -> None:
    partner = start_sandbox("reference", "--product", "room-big:5:99.50", "--latency-ms", "0,30")

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(
            pool.map(
                lambda _: partner.request(
                    "POST", "/v1/reservations", json=reference_body(product_id="room-big")
                ),
                range(20),
            )
        )

    assert [r.status_code for r in responses] == [201] * 20
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["confirmed"] * 5 + ["rejected"] * 15


def test_async_settlement_respects_capacity(start_sandbox) -> None:
    partner = start_sandbox(
        "reference", "--product", "room-small:1:120.00", "--async-confirm-delay-s", "30", "--time-scale", "60"
    )

    ids = [
        partner.request("POST", "/v1/reservations", json=reference_body(product_id="room-small")).json()["id"]
        for _ in range(2)
    ]

    settled = wait_until(
        lambda: (
            (rs := [partner.request("GET", f"/v1/reservations/{i}").json() for i in ids])
            and all(r["version"] == 2 for r in rs)
            and rs
        ),
        what="both pending reservations to settle",
    )
    assert [(r["status"], r["reason"]) for r in settled] == [("confirmed", None), ("rejected", "sold_out")]


def test_legacy_catalogue_and_start_options(start_sandbox) -> None:
    partner = start_sandbox("legacy", "--product", "room-small:1:120.00", "--reject-rate", "0", "--seed", "3")

    first = partner.request("POST", "/api/bookings", json=legacy_body(item="room-small")).json()
    second = partner.request("POST", "/api/bookings", json=legacy_body(item="room-small")).json()
    unknown = partner.request("POST", "/api/bookings", json=legacy_body(item="room-none"))

    assert (first["state"], second["state"], second["msg"]) == ("OK", "FAIL", "sold out")
    assert unknown.status_code == 400
    assert "err" in unknown.json()
    assert partner.request("GET", "/_sandbox/faults").json()["seed"] == 3


def test_a_restart_keeps_reservations_keys_and_undelivered_webhooks(start_sandbox, tmp_path: Path) -> None:
    receiver = WebhookReceiver().start()
    receiver.planned_codes.extend([500] * 1000)  # nothing gets through before the restart
    options = ("--webhook-url", receiver.url, "--webhook-secret", SECRET, "--time-scale", "100")
    try:
        partner = start_sandbox("reference", *options)
        body = reference_body()
        created = partner.request(
            "POST", "/v1/reservations", json=body, headers={"Idempotency-Key": "k-1"}
        ).json()
        wait_until(lambda: len(receiver.hooks) >= 2, what="two refused deliveries")
        assert partner.terminate() == 0

        receiver.planned_codes.clear()
        again = start_sandbox("reference", *options, store=partner.store, port=partner.port)

        assert again.request("GET", f"/v1/reservations/{created['id']}").json() == created
        replay = again.request("POST", "/v1/reservations", json=body, headers={"Idempotency-Key": "k-1"})
        assert (replay.status_code, replay.json()) == (200, created)
        wait_until(
            lambda: again.stats()["webhooks"]["events_by_status"] == {"delivered": 1},
            what="the restarted partner to deliver the stored webhook",
        )
        assert receiver.hooks[-1].payload["data"] == created
        assert len({h.webhook_id for h in receiver.hooks}) == 1
    finally:
        receiver.stop()


def test_legacy_booking_numbers_go_on_after_a_restart(start_sandbox) -> None:
    partner = start_sandbox("legacy")
    first = partner.request("POST", "/api/bookings", json=legacy_body()).json()["booking_no"]
    assert partner.terminate() == 0

    again = start_sandbox("legacy", store=partner.store)
    second = again.request("POST", "/api/bookings", json=legacy_body()).json()["booking_no"]

    assert second == first + 1
    assert again.request("GET", f"/api/bookings/{first}").json()["state"] == "OK"


def test_a_store_written_before_the_partner_faults_opens_and_gains_their_columns(start_sandbox) -> None:
    partner = start_sandbox("reference")
    created = partner.request("POST", "/v1/reservations", json=reference_body()).json()
    assert partner.terminate() == 0
    with sqlite3.connect(partner.store) as old:  # as the first stores were written
        old.execute("ALTER TABLE reservations DROP COLUMN vanished_at")
        old.execute("ALTER TABLE history DROP COLUMN changes")
        old.execute("DROP TABLE partner_actions")

    again = start_sandbox("reference", "--vanish-rate", "1", "--vanish-delay-s", "0", store=partner.store)

    assert again.request("GET", f"/v1/reservations/{created['id']}").json() == created
    lost = again.request("POST", "/v1/reservations", json=reference_body()).json()
    wait_until(
        lambda: again.request("GET", f"/v1/reservations/{lost['id']}").status_code == 404,
        what="a reservation of the reopened store to vanish",
    )
    assert [t["vanished_at"] is not None for t in again.truth()] == [False, True]


def test_a_store_of_the_other_profile_is_refused(start_sandbox, tmp_path: Path) -> None:
    partner = start_sandbox("reference")
    assert partner.terminate() == 0

    with pytest.raises(AssertionError, match="exited"):
        start_sandbox("legacy", store=partner.store)


def test_sigterm_stops_cleanly_even_with_a_hung_request(start_sandbox) -> None:
    partner: SandboxProcess = start_sandbox("reference", "--timeout-after-commit-rate", "1", "--hang-s", "30")
    outcome: list[BaseException | requests.Response] = []

    def hung_create() -> None:
        try:
            outcome.append(
                requests.post(
                    f"{partner.base_url}/v1/reservations",
                    json=reference_body(),
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=60,
                )
            )
        except requests.RequestException as exc:
            outcome.append(exc)

    client = threading.Thread(target=hung_create)
    client.start()
    wait_until(partner.truth, what="the hung create to commit")

    started = time.monotonic()
    status = partner.terminate(timeout_s=15)
    client.join(10)

    assert status == 0
    assert time.monotonic() - started < 10
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError)  # dropped, never answered
    assert "stopped" in partner.log()
