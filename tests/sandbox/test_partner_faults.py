"""What the partner does behind the client's back: it cancels, loses and amends reservations on its
own, rotates its key, goes down, and sends out-of-range values (docs/partner-protocols.md).

"Never at rate 0" is shown with a sentinel: the partner carries out its actions in the order they
fall due, so once a reservation planned after the others has been acted on, an action planned
for any of those others would have been carried out already.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from standardwebhooks.webhooks import Webhook

from tests.helpers import wait_until
from tests.sandbox.conftest import SECRET, WebhookReceiver, legacy_body, reference_body
from tests.sandbox_process import SandboxProcess

TERMS = ("start_date", "end_date", "guests", "total_price")
LEGACY_TERMS = {"start_date": "from", "end_date": "to", "guests": "pax", "total_price": "amount"}


def create(partner: SandboxProcess, **overrides: Any) -> dict[str, Any]:
    response = partner.request("POST", "/v1/reservations", json=reference_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def create_legacy(partner: SandboxProcess, **overrides: Any) -> dict[str, Any]:
    response = partner.request("POST", "/api/bookings", json=legacy_body(**overrides))
    assert response.status_code == 200, response.text
    return response.json()


def read(partner: SandboxProcess, reservation_id: str) -> requests.Response:
    return partner.request("GET", f"/v1/reservations/{reservation_id}")


def read_legacy(partner: SandboxProcess, booking_no: int) -> requests.Response:
    return partner.request("GET", f"/api/bookings/{booking_no}")


def lookup(partner: SandboxProcess, client_reference: str) -> list[dict[str, Any]]:
    response = partner.request("GET", "/v1/reservations", params={"client_reference": client_reference})
    assert response.status_code == 200
    return response.json()["data"]


def listing(partner: SandboxProcess) -> list[dict[str, Any]]:
    response = partner.request("GET", "/api/bookings", params={"modified_since": "2000-01-01 00:00:00"})
    assert response.status_code == 200
    return response.json()["items"]


def truth_of(partner: SandboxProcess, client_reference: str) -> dict[str, Any]:
    [truth] = partner.truth(client_reference)
    return truth


def version_reaches(partner: SandboxProcess, reservation_id: str, version: int) -> dict[str, Any] | None:
    response = read(partner, reservation_id)
    return response.json() if response.status_code == 200 and response.json()["version"] >= version else None


def runs(values: list[Any]) -> list[Any]:
    """[200, 200, 401, 200] -> [200, 401, 200]: the order of the phases a poll went through."""
    return [value for value, _ in itertools.groupby(values)]


# --- partner cancel ------------------------------------------------------------------------------
def test_the_reference_partner_cancels_a_confirmed_reservation_after_the_scaled_delay(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(partner_cancel_rate=1, partner_cancel_delay_s=[30, 30], time_scale=30)  # 1 s

    started = time.monotonic()
    created = create(reference)
    cancelled = wait_until(
        lambda: version_reaches(reference, created["id"], 2), what="the partner to cancel on its own"
    )

    assert time.monotonic() - started >= 0.95
    assert (created["status"], created["version"]) == ("confirmed", 1)
    assert (cancelled["status"], cancelled["reason"], cancelled["version"]) == (
        "cancelled",
        "partner_cancelled",
        2,
    )
    assert lookup(reference, created["client_reference"]) == [cancelled]
    hooks = receiver.wait_for(created["id"], 2)
    assert [Webhook(SECRET).verify(h.body, h.headers)["data"] for h in hooks] == [created, cancelled]
    truth = truth_of(reference, created["client_reference"])
    assert [(h["version"], h["status"], h["reason"], h["cause"]) for h in truth["history"]] == [
        (1, "confirmed", None, "create"),
        (2, "cancelled", "partner_cancelled", "partner_cancel"),
    ]
    assert reference.stats()["faults"] == {"partner_cancel": 1}


def test_a_reservation_confirmed_late_is_cancelled_after_its_confirmation(reference: SandboxProcess) -> None:
    reference.set_faults(
        async_confirm_delay_s=30, partner_cancel_rate=1, partner_cancel_delay_s=[30, 30], time_scale=60
    )

    created = create(reference)
    cancelled = wait_until(lambda: version_reaches(reference, created["id"], 3), what="the partner cancel")

    assert created["status"] == "pending"
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "partner_cancelled")
    history = truth_of(reference, created["client_reference"])["history"]
    assert [(h["status"], h["cause"]) for h in history] == [
        ("pending", "create"),
        ("confirmed", "settle"),
        ("cancelled", "partner_cancel"),
    ]
    settled_at, cancelled_at = (datetime.fromisoformat(h["at"]) for h in history[1:])
    assert (cancelled_at - settled_at).total_seconds() >= 0.49  # the delay counts from the confirmation


def test_the_partner_cancels_nothing_at_rate_0_nor_what_is_no_longer_confirmed(
    reference: SandboxProcess,
) -> None:
    reference.set_faults(partner_cancel_delay_s=[0, 0])
    untouched = create(reference)  # rate 0
    reference.set_faults(reject_rate=1, partner_cancel_rate=1)
    rejected = create(reference)
    reference.set_faults(reject_rate=0, partner_cancel_delay_s=[1, 1])
    cancelled_first = create(reference)
    reference.request("POST", f"/v1/reservations/{cancelled_first['id']}/cancel")
    reference.set_faults(partner_cancel_delay_s=[1.5, 1.5])

    sentinel = create(reference)
    wait_until(lambda: version_reaches(reference, sentinel["id"], 2), what="the sentinel's partner cancel")

    assert read(reference, untouched["id"]).json() == untouched
    assert read(reference, rejected["id"]).json() == rejected
    history = truth_of(reference, cancelled_first["client_reference"])["history"]
    assert [h["cause"] for h in history] == ["create", "cancel"]
    assert reference.stats()["faults"]["partner_cancel"] == 1


def test_the_legacy_partner_cancel_shows_in_get_and_the_listing(legacy: SandboxProcess) -> None:
    legacy.set_faults(partner_cancel_rate=1, partner_cancel_delay_s=[30, 30], time_scale=30)

    started = time.monotonic()
    created = create_legacy(legacy)
    cancelled = wait_until(
        lambda: (b := read_legacy(legacy, created["booking_no"]).json())["state"] == "CXL" and b,
        what="the legacy partner to cancel on its own",
    )

    assert time.monotonic() - started >= 0.95
    assert created["state"] == "OK"
    [item] = listing(legacy)
    assert item == cancelled
    truth = truth_of(legacy, cancelled["ref"])
    assert [(h["state"], h["cause"]) for h in truth["history"]] == [
        ("OK", "create"),
        ("CXL", "partner_cancel"),
    ]
    assert legacy.stats()["faults"] == {"partner_cancel": 1}


def test_a_planned_partner_cancel_survives_a_restart(start_sandbox) -> None:
    partner = start_sandbox("reference", "--partner-cancel-rate", "1", "--partner-cancel-delay-s", "2")
    created = create(partner)
    assert partner.terminate() == 0

    partner.start()

    cancelled = wait_until(
        lambda: version_reaches(partner, created["id"], 2), what="the cancel after restart"
    )
    assert cancelled["reason"] == "partner_cancelled"


# --- vanish --------------------------------------------------------------------------------------
def test_a_vanished_reference_reservation_is_gone_from_every_read_but_the_ground_truth(
    reference: SandboxProcess,
) -> None:
    reference.set_faults(vanish_rate=1, vanish_delay_s=[30, 30], time_scale=30)  # 1 s

    started = time.monotonic()
    created = create(reference)
    wait_until(lambda: read(reference, created["id"]).status_code == 404, what="the reservation to vanish")

    assert time.monotonic() - started >= 0.95
    assert lookup(reference, created["client_reference"]) == []
    cancel = reference.request("POST", f"/v1/reservations/{created['id']}/cancel")
    assert (cancel.status_code, cancel.json()["error"]) == (404, "not_found")
    truth = truth_of(reference, created["client_reference"])
    assert (truth["id"], truth["status"], truth["version"]) == (created["id"], "confirmed", 1)
    assert truth["vanished_at"] is not None
    assert [(h["version"], h["cause"]) for h in truth["history"]] == [(1, "create"), (1, "vanish")]
    assert truth["history"][-1]["at"] == truth["vanished_at"]
    assert reference.stats()["faults"] == {"vanish": 1}


def test_a_vanished_reservation_takes_its_idempotency_key_with_it(reference: SandboxProcess) -> None:
    reference.set_faults(vanish_rate=1, vanish_delay_s=[0, 0])
    body = reference_body()
    first = reference.request("POST", "/v1/reservations", json=body, headers={"Idempotency-Key": "k-lost"})
    wait_until(lambda: read(reference, first.json()["id"]).status_code == 404, what="the vanish")
    reference.set_faults(vanish_rate=0)

    replay = reference.request("POST", "/v1/reservations", json=body, headers={"Idempotency-Key": "k-lost"})

    assert replay.status_code == 201
    assert replay.json()["id"] != first.json()["id"]
    assert [r["id"] for r in lookup(reference, body["client_reference"])] == [replay.json()["id"]]


def test_a_vanished_legacy_booking_is_gone_from_get_listing_and_delete(legacy: SandboxProcess) -> None:
    legacy.set_faults(vanish_rate=1, vanish_delay_s=[0, 0])

    created = create_legacy(legacy)
    wait_until(lambda: read_legacy(legacy, created["booking_no"]).status_code == 404, what="the vanish")

    assert listing(legacy) == []
    assert legacy.request("DELETE", f"/api/bookings/{created['booking_no']}").status_code == 404
    [truth] = legacy.truth()
    assert truth["booking_no"] == created["booking_no"]
    assert truth["vanished"] is not None and truth["vanished_utc"] is not None
    assert [h["cause"] for h in truth["history"]] == ["create", "vanish"]
    assert legacy.stats()["faults"] == {"vanish": 1}


def test_nothing_vanishes_at_rate_0(reference: SandboxProcess) -> None:
    reference.set_faults(vanish_delay_s=[0, 0])
    kept = [create(reference) for _ in range(5)]
    reference.set_faults(vanish_rate=1)

    sentinel = create(reference)
    wait_until(lambda: read(reference, sentinel["id"]).status_code == 404, what="the sentinel to vanish")

    assert [read(reference, r["id"]).json() for r in kept] == kept
    assert [t["vanished_at"] is not None for t in reference.truth()] == [False] * 5 + [True]
    assert reference.stats()["faults"] == {"vanish": 1}


# --- amend ---------------------------------------------------------------------------------------
def changed_terms(before: dict[str, Any], after: dict[str, Any], names: tuple[str, ...]) -> set[str]:
    return {name for name in names if after[name] != before[name]}


def test_an_amendment_is_a_new_version_with_changed_terms_and_no_webhook(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(amend_rate=1)

    created = create(reference)
    amended = wait_until(lambda: version_reaches(reference, created["id"], 2), what="the amendment")

    changed = changed_terms(created, amended, TERMS)
    assert changed in ({"start_date", "end_date"}, {"guests"}, {"total_price"})
    assert (amended["status"], amended["reason"]) == ("confirmed", None)
    assert {k: v for k, v in amended.items() if k not in {*changed, "version", "updated_at"}} == {
        k: v for k, v in created.items() if k not in {*changed, "version", "updated_at"}
    }
    assert lookup(reference, created["client_reference"]) == [amended]
    history = truth_of(reference, created["client_reference"])["history"]
    assert [(h["version"], h["cause"], h["changes"]) for h in history] == [
        (1, "create", None),
        (2, "amend", {name: {"old": created[name], "new": amended[name]} for name in changed}),
    ]
    # Silent: the change after it (v3) is the next webhook; a v2 event would have gone out first.
    reference.request("POST", f"/v1/reservations/{created['id']}/cancel")
    hooks = receiver.wait_for(created["id"], 2)
    assert [h.payload["data"]["version"] for h in hooks] == [1, 3]
    assert reference.stats()["faults"] == {"amend": 1}


def test_amendments_shift_the_dates_change_the_guests_or_raise_the_price(reference: SandboxProcess) -> None:
    reference.set_faults(amend_rate=1)

    created = [create(reference) for _ in range(24)]
    amended = [
        wait_until(lambda r=r: version_reaches(reference, r["id"], 2), what="every amendment")
        for r in created
    ]

    kinds = set()
    for before, after in zip(created, amended, strict=True):
        changed = changed_terms(before, after, TERMS)
        if changed == {"start_date", "end_date"}:
            kinds.add("dates")
            shifts = {(date.fromisoformat(after[n]) - date.fromisoformat(before[n])).days for n in changed}
            assert len(shifts) == 1 and 1 <= shifts.pop() <= 3
        elif changed == {"guests"}:
            kinds.add("guests")
            assert abs(after["guests"] - before["guests"]) == 1
        else:
            kinds.add("price")
            assert changed == {"total_price"}
            assert 5 <= Decimal(after["total_price"]) - Decimal(before["total_price"]) <= 50
            assert after["total_price"].endswith(".00")  # the partner keeps its money format
    assert kinds == {"dates", "guests", "price"}


def test_nothing_is_amended_at_rate_0_nor_what_was_never_confirmed(reference: SandboxProcess) -> None:
    kept = [create(reference) for _ in range(5)]
    reference.set_faults(amend_rate=1, reject_rate=1)
    rejected = create(reference)
    reference.set_faults(reject_rate=0)

    sentinel = create(reference)
    wait_until(lambda: version_reaches(reference, sentinel["id"], 2), what="the sentinel's amendment")

    assert [read(reference, r["id"]).json() for r in [*kept, rejected]] == [*kept, rejected]
    assert reference.stats()["faults"] == {"amend": 1, "reject": 1}


def test_the_legacy_get_and_listing_show_the_amended_terms(legacy: SandboxProcess) -> None:
    legacy.set_faults(amend_rate=1)
    body = legacy_body()
    wire_terms = tuple(LEGACY_TERMS.values())

    created = legacy.request("POST", "/api/bookings", json=body).json()
    amended = wait_until(
        lambda: (
            (b := read_legacy(legacy, created["booking_no"]).json())
            and changed_terms(body, b, wire_terms)
            and b
        ),
        what="the legacy amendment",
    )

    changed = changed_terms(body, amended, wire_terms)
    assert changed in ({"from", "to"}, {"pax"}, {"amount"})
    assert (created["state"], amended["state"], amended["ccy"]) == ("OK", "OK", body["ccy"])
    assert listing(legacy) == [amended]
    history = truth_of(legacy, body["ref"])["history"]
    assert [(h["state"], h["cause"], h["changes"]) for h in history] == [
        ("OK", "create", None),
        ("OK", "amend", {name: {"old": body[name], "new": amended[name]} for name in changed}),
    ]


# --- auth failure window -------------------------------------------------------------------------
def poll(call: Callable[[], Any], done: Callable[[list[Any]], bool], what: str) -> list[tuple[float, Any]]:
    """Call again and again until `done(results so far)`; every result with the monotonic time it
    came back. The time it was asked would put a call answered just after a window opened before
    the opening (CI saw one 0.17 ms early)."""
    seen: list[tuple[float, Any]] = []

    def step() -> bool:
        result = call()
        seen.append((time.monotonic(), result))
        return done([result for _, result in seen])

    wait_until(step, what=what, timeout_s=15, interval_s=0.02)
    return seen


def window_edges(seen: list[tuple[float, Any]], inside: Any) -> tuple[float, float]:
    """When the first result `inside` the window came, and the first one after the window."""
    opened = next(at for at, result in seen if result == inside)
    closed = next(at for at, result in seen if at > opened and result != inside)
    return opened, closed


def test_a_rotated_key_answers_401_from_the_scaled_start_for_the_scaled_length(
    reference: SandboxProcess,
) -> None:
    created = create(reference)
    set_at = time.monotonic()
    reference.set_faults(auth_failure_window_s=[1, 2], time_scale=2)  # after 0.5 s, for 1 s

    seen = poll(
        lambda: read(reference, created["id"]).status_code,
        lambda codes: runs(codes) == [200, 401, 200],
        what="the window to open and close",
    )

    opened, closed = window_edges(seen, 401)
    assert 0.5 <= opened - set_at < 0.8
    assert 0.95 <= closed - opened < 1.3
    failures = sum(1 for _, code in seen if code == 401)
    assert reference.stats()["faults"] == {"auth_failure": failures}
    window = reference.stats()["windows"]["auth_failure_window_s"]
    span = datetime.fromisoformat(window["closes"]) - datetime.fromisoformat(window["opens"])
    assert span.total_seconds() == 1.0
    assert reference.stats()["windows"]["outage_window_s"] is None


def test_during_the_window_every_api_call_fails_and_the_control_endpoints_answer(
    reference: SandboxProcess,
) -> None:
    created = create(reference)
    reference.set_faults(auth_failure_window_s=[0, 3600])

    answers = [
        read(reference, created["id"]),
        reference.request(
            "GET", "/v1/reservations", params={"client_reference": created["client_reference"]}
        ),
        reference.request("POST", "/v1/reservations", json=reference_body()),
        reference.request("POST", f"/v1/reservations/{created['id']}/cancel"),
    ]

    assert [(a.status_code, a.json()["error"]) for a in answers] == [(401, "unauthorized")] * 4
    assert len(reference.truth()) == 1  # nothing reached the partner's ledger
    assert reference.stats()["faults"] == {"auth_failure": 4}
    reference.set_faults(auth_failure_window_s=None)
    assert read(reference, created["id"]).json() == created


def test_the_legacy_rotated_key_is_403(legacy: SandboxProcess) -> None:
    created = create_legacy(legacy)
    legacy.set_faults(auth_failure_window_s=[0, 3600])

    answers = [
        read_legacy(legacy, created["booking_no"]),
        legacy.request("GET", "/api/bookings", params={"modified_since": "2000-01-01 00:00:00"}),
        legacy.request("POST", "/api/bookings", json=legacy_body()),
        legacy.request("DELETE", f"/api/bookings/{created['booking_no']}"),
    ]

    assert [a.status_code for a in answers] == [403] * 4
    assert all(set(a.json()) == {"err"} for a in answers)
    [truth] = legacy.truth()
    assert truth["state"] == "OK"
    assert legacy.stats()["faults"] == {"auth_failure": 4}


# --- outage window -------------------------------------------------------------------------------
def connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return "accepted"
    except ConnectionRefusedError:
        return "refused"


def test_an_outage_refuses_connections_for_the_scaled_window_then_serves_again(start_sandbox) -> None:
    partner = start_sandbox("reference")
    created = create(partner)
    set_at = time.monotonic()
    partner.set_faults(outage_window_s=[1, 3], time_scale=2)  # after 0.5 s, for 1.5 s

    seen = poll(
        lambda: connect(partner.port),
        lambda outcomes: runs(outcomes) == ["accepted", "refused", "accepted"],
        what="the outage to begin and end",
    )

    opened, closed = window_edges(seen, "refused")
    assert 0.5 <= opened - set_at < 0.8
    assert 1.45 <= closed - opened < 1.9
    assert read(partner, created["id"]).json() == created  # the same partner, its store intact
    assert partner.stats()["faults"] == {"outage": 1}


def test_an_outage_window_given_at_start_counts_from_the_process_start(start_sandbox) -> None:
    started = time.monotonic()
    partner = start_sandbox("legacy", "--outage-window-s", "0,1.5")

    assert time.monotonic() - started >= 1.5  # the port opened only after the window
    assert create_legacy(partner)["state"] == "OK"
    assert partner.stats()["faults"] == {"outage": 1}


# --- garbage values ------------------------------------------------------------------------------
def is_number(text: Any) -> bool:
    try:
        return isinstance(text, str) and Decimal(text).is_finite()
    except InvalidOperation:
        return False


def spoiled(obj: dict[str, Any]) -> dict[str, str]:
    """The out-of-range fields of a reservation object (reference or legacy), by kind."""
    found = {}
    if "version" in obj and not 0 <= obj["version"] < 2**63:
        found["version"] = "version"
    for name in ("created_at", "updated_at", "modified"):
        if name in obj and obj[name][:4] in ("0001", "9999"):
            found[name] = "timestamp"
    for name in ("total_price", "amount"):
        if name in obj and not is_number(obj[name]):
            found[name] = "amount"
    return found


def test_garbage_values_spoil_every_reference_answer_and_webhook_and_stay_signed(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(garbage_values_rate=1)

    created = create(reference)
    answers = [
        created,
        read(reference, created["id"]).json(),
        *lookup(reference, created["client_reference"]),
        reference.request("POST", f"/v1/reservations/{created['id']}/cancel").json(),
    ]
    hooks = receiver.wait_for(created["id"], 2)

    assert [len(spoiled(a)) for a in answers] == [1, 1, 1, 1]
    payloads = [Webhook(SECRET).verify(h.body, h.headers)["data"] for h in hooks]
    assert [len(spoiled(p)) for p in payloads] == [1, 1]
    truth = truth_of(reference, created["client_reference"])
    assert spoiled(truth) == {}
    assert (truth["version"], truth["total_price"]) == (2, "360.00")
    assert reference.stats()["faults"] == {"garbage_values": 4, "webhook_garbage_values": 2}


def test_garbage_values_are_versions_timestamps_and_amounts_out_of_range(reference: SandboxProcess) -> None:
    created = create(reference)
    reference.set_faults(garbage_values_rate=1)

    kinds = [spoiled(read(reference, created["id"]).json()) for _ in range(30)]

    assert {kind for found in kinds for kind in found.values()} == {"version", "timestamp", "amount"}
    assert all(len(found) == 1 for found in kinds)


def test_legacy_garbage_values_spoil_bookings_in_get_and_the_listing(legacy: SandboxProcess) -> None:
    legacy.set_faults(garbage_values_rate=1)

    created = create_legacy(legacy)
    got = read_legacy(legacy, created["booking_no"]).json()
    items = listing(legacy)

    assert (set(created), created["state"]) == ({"booking_no", "state", "msg"}, "OK")  # nothing to spoil
    assert len(spoiled(got)) == 1
    assert set(spoiled(got)) <= {"modified", "amount"}
    assert [len(spoiled(i)) for i in items] == [1]
    assert legacy.stats()["faults"] == {"garbage_values": 2}


def test_no_garbage_at_rate_0(reference: SandboxProcess, receiver: WebhookReceiver) -> None:
    created = create(reference)

    reads = [read(reference, created["id"]).json() for _ in range(10)]

    assert reads == [created] * 10
    assert spoiled(created) == {}
    [hook] = receiver.wait_for(created["id"], 1)
    assert hook.payload["data"] == created
    assert reference.stats()["faults"] == {}
