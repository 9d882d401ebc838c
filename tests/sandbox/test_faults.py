"""Each fault of docs/partner-protocols.md happens as configured (webhook faults: test_webhooks.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from werkzeug.http import parse_date

from tests.helpers import wait_until
from tests.sandbox.conftest import (
    DEFAULT_FAULTS,
    SandboxProcess,
    WebhookReceiver,
    legacy_body,
    reference_body,
)


def create(partner: SandboxProcess, body: dict, key: str | None = None, **kwargs):
    headers = {"Idempotency-Key": key} if key else {}
    return partner.request("POST", "/v1/reservations", json=body, headers=headers, **kwargs)


# --- /_sandbox/faults ----------------------------------------------------------------------------
def test_faults_endpoint_shows_exactly_the_documented_keys(reference: SandboxProcess) -> None:
    response = reference.request("GET", "/_sandbox/faults")

    assert response.status_code == 200
    assert response.json() == DEFAULT_FAULTS


def test_posting_some_keys_keeps_the_others(reference: SandboxProcess) -> None:
    reference.set_faults(reject_rate=0.5, latency_ms=[1, 2])

    after = reference.set_faults(clock_skew_s=-30)

    assert after == {**DEFAULT_FAULTS, "reject_rate": 0.5, "latency_ms": [1, 2], "clock_skew_s": -30}
    assert reference.request("GET", "/_sandbox/faults").json() == after


@pytest.mark.parametrize(
    "change",
    [
        {"no_such_fault": 1},
        {"reject_rate": 1.5},
        {"reject_rate": True},
        {"error_5xx_rate": "0.1"},
        {"latency_ms": [50, 10]},
        {"latency_ms": [10]},
        {"webhook_delay_s": -1},
        {"async_confirm_delay_s": -5},
        {"honour_idempotency_keys": "yes"},
        {"time_scale": 0},
        {"seed": 1.5},
        {"reject_rate": 0.5, "timeout_after_commit_rate": 2},
        {"partner_cancel_rate": -0.1},
        {"vanish_delay_s": [600, 60]},
        {"partner_cancel_delay_s": None},
        {"amend_rate": "1"},
        {"garbage_values_rate": 1.01},
        {"auth_failure_window_s": [5]},
        {"auth_failure_window_s": [-1, 5]},
        {"outage_window_s": [1, -5]},
        {"outage_window_s": "0,5"},
    ],
)
def test_unknown_keys_and_bad_values_get_400_and_change_nothing(
    reference: SandboxProcess, change: dict
) -> None:
    response = reference.request("POST", "/_sandbox/faults", json=change)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_fault"
    assert reference.request("GET", "/_sandbox/faults").json() == DEFAULT_FAULTS


def test_faults_endpoint_needs_the_api_key_and_speaks_the_profile(legacy: SandboxProcess) -> None:
    assert (
        legacy.request(
            "GET", "/_sandbox/faults", headers={"X-Api-Key": "nope"}, authenticated=False
        ).status_code
        == 401
    )
    bad = legacy.request("POST", "/_sandbox/faults", json={"reject_rate": 7})
    assert bad.status_code == 400
    assert set(bad.json()) == {"err"}


# --- latency -------------------------------------------------------------------------------------
def test_latency_is_added_to_every_call_and_divided_by_time_scale(reference: SandboxProcess) -> None:
    reference.set_faults(latency_ms=[600, 600], time_scale=2)  # 0.3 s

    started = time.monotonic()
    create(reference, reference_body())
    create_s = time.monotonic() - started
    started = time.monotonic()
    reference.request("GET", "/v1/reservations/R-none")
    get_s = time.monotonic() - started
    started = time.monotonic()
    reference.request("GET", "/_sandbox/stats")
    control_s = time.monotonic() - started

    assert 0.3 <= create_s < 0.6
    assert 0.3 <= get_s < 0.6
    assert control_s < 0.3  # faults never apply to /_sandbox/*
    assert reference.stats()["faults"]["latency"] == 2


# --- timeout after commit --------------------------------------------------------------------------
def test_timeout_after_commit_hangs_but_the_reservation_exists(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(timeout_after_commit_rate=1)
    body = reference_body()

    with pytest.raises(requests.ReadTimeout):
        create(reference, body, key="key-hang", timeout=0.5)

    [truth] = reference.truth(body["client_reference"])
    assert truth["status"] == "confirmed"
    receiver.wait_for(truth["id"], 1)  # committed, so its webhook goes out too
    reference.set_faults(timeout_after_commit_rate=0)
    retry = create(reference, body, key="key-hang")
    assert (retry.status_code, retry.json()["id"]) == (200, truth["id"])
    assert reference.stats()["faults"]["timeout_after_commit"] == 1


def test_timeout_after_commit_applies_to_cancel(reference: SandboxProcess) -> None:
    created = create(reference, reference_body()).json()
    reference.set_faults(timeout_after_commit_rate=1)

    with pytest.raises(requests.ReadTimeout):
        reference.request("POST", f"/v1/reservations/{created['id']}/cancel", timeout=0.5)

    [truth] = reference.truth(created["client_reference"])
    assert (truth["status"], truth["version"]) == ("cancelled", 2)


def test_timeout_after_commit_never_hits_reads(reference: SandboxProcess) -> None:
    created = create(reference, reference_body()).json()
    reference.set_faults(timeout_after_commit_rate=1)

    assert reference.request("GET", f"/v1/reservations/{created['id']}", timeout=2).status_code == 200


def test_legacy_drop_after_commit_closes_the_connection_and_the_listing_finds_the_booking(
    legacy: SandboxProcess,
) -> None:
    legacy.set_faults(timeout_after_commit_rate=1)
    body = legacy_body()

    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):  # --hang-s 0: dropped at once, no answer
        legacy.request("POST", "/api/bookings", json=body, timeout=5)
    assert time.monotonic() - started < 2

    listing = legacy.request("GET", "/api/bookings", params={"modified_since": "2000-01-01 00:00:00"})
    assert [i["ref"] for i in listing.json()["items"]] == [body["ref"]]


# --- 5xx -----------------------------------------------------------------------------------------
def test_5xx_answers_every_call_and_about_half_commit(reference: SandboxProcess) -> None:
    reference.set_faults(error_5xx_rate=1, seed=7)
    body = reference_body()

    responses = [create(reference, body) for _ in range(40)]

    assert {r.status_code for r in responses} <= {500, 502, 503, 504}
    assert all(r.json()["error"] == "server_error" for r in responses)
    committed = len(reference.truth(body["client_reference"]))
    faults = reference.stats()["faults"]
    assert committed == faults["error_5xx_after_commit"]
    assert faults["error_5xx_before_commit"] + faults["error_5xx_after_commit"] == 40
    assert 10 <= committed <= 30


def test_legacy_5xx_is_503_with_err(legacy: SandboxProcess) -> None:
    legacy.set_faults(error_5xx_rate=1)

    response = legacy.request("GET", "/api/bookings/1")

    assert (response.status_code, response.json()) == (503, {"err": "service unavailable"})


# --- rate limit ----------------------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after_and_commits_nothing(reference: SandboxProcess) -> None:
    reference.set_faults(rate_limit_rate=1)
    body = reference_body()

    response = create(reference, body)

    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert reference.truth(body["client_reference"]) == []
    reference.set_faults(time_scale=1000)
    assert create(reference, body).headers["Retry-After"] == "1"  # scaled, never below 1


def test_legacy_rate_limit_is_503_with_retry_after(legacy: SandboxProcess) -> None:
    legacy.set_faults(rate_limit_rate=1)

    response = legacy.request("POST", "/api/bookings", json=legacy_body())

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert legacy.truth() == []


# --- reject --------------------------------------------------------------------------------------
def test_reject_rate_creates_rejected_sold_out(reference: SandboxProcess) -> None:
    reference.set_faults(reject_rate=1)

    response = create(reference, reference_body())

    assert response.status_code == 201
    assert (response.json()["status"], response.json()["reason"], response.json()["version"]) == (
        "rejected",
        "sold_out",
        1,
    )
    assert reference.stats()["faults"]["reject"] == 1


def test_legacy_reject_rate_answers_fail_sold_out(legacy: SandboxProcess) -> None:
    legacy.set_faults(reject_rate=1)

    response = legacy.request("POST", "/api/bookings", json=legacy_body())

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["msg"]) == ("FAIL", "sold out")


# --- async confirm -------------------------------------------------------------------------------
def test_async_confirm_answers_pending_and_settles_by_webhook_after_the_scaled_delay(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(async_confirm_delay_s=30, time_scale=30)  # one second

    started = time.monotonic()
    created = create(reference, reference_body()).json()

    assert (created["status"], created["version"]) == ("pending", 1)
    assert reference.request("GET", f"/v1/reservations/{created['id']}").json()["status"] == "pending"
    hooks = receiver.wait_for(created["id"], 2, timeout=5)
    assert [(h.payload["data"]["version"], h.payload["data"]["status"]) for h in hooks] == [
        (1, "pending"),
        (2, "confirmed"),
    ]
    assert hooks[1].at - started >= 0.9
    settled = reference.request("GET", f"/v1/reservations/{created['id']}").json()
    assert (settled["status"], settled["version"]) == ("confirmed", 2)


def test_async_confirm_with_reject_rate_settles_rejected(reference: SandboxProcess) -> None:
    reference.set_faults(async_confirm_delay_s=6, time_scale=60, reject_rate=1)

    created = create(reference, reference_body()).json()

    assert created["status"] == "pending"
    settled = wait_until(
        lambda: (
            (r := reference.request("GET", f"/v1/reservations/{created['id']}").json())["version"] == 2 and r
        ),
        what="the pending reservation to settle",
    )
    assert (settled["status"], settled["reason"]) == ("rejected", "sold_out")


def test_cancel_of_a_pending_reservation_wins_over_the_settlement(reference: SandboxProcess) -> None:
    reference.set_faults(async_confirm_delay_s=60, time_scale=60)  # one second
    created = create(reference, reference_body()).json()
    witness = create(reference, reference_body()).json()  # due after the first: settled after it

    cancelled = reference.request("POST", f"/v1/reservations/{created['id']}/cancel").json()
    wait_until(
        lambda: reference.request("GET", f"/v1/reservations/{witness['id']}").json()["version"] == 2,
        what="the reservation created next to settle",
    )

    assert (cancelled["status"], cancelled["version"]) == ("cancelled", 2)
    [truth] = reference.truth(created["client_reference"])
    assert [h["status"] for h in truth["history"]] == ["pending", "cancelled"]


def test_legacy_async_confirm_is_visible_by_get_and_in_the_change_listing(legacy: SandboxProcess) -> None:
    legacy.set_faults(async_confirm_delay_s=60, time_scale=60)

    created = legacy.request("POST", "/api/bookings", json=legacy_body()).json()

    assert created["state"] == "PENDING"
    path = f"/api/bookings/{created['booking_no']}"
    assert legacy.request("GET", path).json()["state"] == "PENDING"
    settled = wait_until(
        lambda: (b := legacy.request("GET", path).json())["state"] == "OK" and b,
        what="the pending booking to settle",
    )
    listing = legacy.request("GET", "/api/bookings", params={"modified_since": settled["modified"]}).json()
    assert {"booking_no": created["booking_no"], "state": "OK"}.items() <= listing["items"][-1].items()


# --- clock skew ----------------------------------------------------------------------------------
def test_clock_skew_shifts_the_date_header_and_every_timestamp(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(clock_skew_s=120)

    response = create(reference, reference_body())
    now = datetime.now(UTC)

    skewed = now + timedelta(seconds=120)
    assert abs(parse_date(response.headers["Date"]) - skewed) < timedelta(seconds=3)
    assert abs(datetime.fromisoformat(response.json()["created_at"]) - skewed) < timedelta(seconds=3)
    [hook] = receiver.wait_for(response.json()["id"], 1)
    assert abs(datetime.fromisoformat(hook.payload["timestamp"]) - skewed) < timedelta(seconds=3)
    assert abs(int(hook.headers["webhook-timestamp"]) - skewed.timestamp()) < 3


def test_legacy_clock_skew_shifts_modified_and_date(legacy: SandboxProcess) -> None:
    legacy.set_faults(clock_skew_s=-3600)

    created = legacy.request("POST", "/api/bookings", json=legacy_body())
    booking = legacy.request("GET", f"/api/bookings/{created.json()['booking_no']}").json()

    skewed = datetime.now(UTC) - timedelta(hours=1)
    local = datetime.strptime(booking["modified"], "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=ZoneInfo("Europe/Berlin")
    )
    assert abs(local - skewed) < timedelta(seconds=3)
    assert abs(parse_date(created.headers["Date"]) - skewed) < timedelta(seconds=3)


# --- idempotency keys ------------------------------------------------------------------------------
def test_with_keys_not_honoured_a_repeat_creates_a_duplicate(reference: SandboxProcess) -> None:
    reference.set_faults(honour_idempotency_keys=False)
    body = reference_body()

    first = create(reference, body, key="key-ignored")
    second = create(reference, body, key="key-ignored")
    reused = create(reference, {**body, "guests": 4}, key="key-ignored")

    assert [r.status_code for r in (first, second, reused)] == [201, 201, 201]
    assert len({first.json()["id"], second.json()["id"], reused.json()["id"]}) == 3
    lookup = reference.request(
        "GET", "/v1/reservations", params={"client_reference": body["client_reference"]}
    )
    assert len(lookup.json()["data"]) == 3
    assert reference.stats()["faults"]["idempotency_key_ignored"] == 3


# --- stats ---------------------------------------------------------------------------------------
def test_stats_count_calls_per_endpoint_and_faults_per_kind(reference: SandboxProcess) -> None:
    created = create(reference, reference_body()).json()
    reference.request("GET", f"/v1/reservations/{created['id']}")
    reference.set_faults(rate_limit_rate=1)
    reference.request("GET", f"/v1/reservations/{created['id']}")

    stats = reference.stats()

    assert stats["calls"] == {"POST /v1/reservations": 1, "GET /v1/reservations/<reservation_id>": 2}
    assert stats["faults"] == {"rate_limit": 1}
    assert stats["outcomes"] == {"created_confirmed": 1}
