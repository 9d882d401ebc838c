"""The `reference` profile keeps the wire contract of docs/partner-protocols.md, call by call."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta

from werkzeug.http import parse_date

from tests.helpers import wait_until
from tests.sandbox.conftest import reference_body, unique_ref
from tests.sandbox_process import SandboxProcess

RESERVATION_FIELDS = {
    "id",
    "client_reference",
    "product_id",
    "start_date",
    "end_date",
    "guests",
    "total_price",
    "currency",
    "status",
    "reason",
    "version",
    "created_at",
    "updated_at",
}


def create(partner: SandboxProcess, body: dict, key: str | None = None, **kwargs):
    headers = {"Idempotency-Key": key} if key else {}
    return partner.request("POST", "/v1/reservations", json=body, headers=headers, **kwargs)


def test_create_answers_201_with_a_confirmed_reservation_at_version_1(reference: SandboxProcess) -> None:
    body = reference_body()

    response = create(reference, body)

    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    reservation = response.json()
    assert set(reservation) == RESERVATION_FIELDS
    assert reservation["id"].startswith("R-")
    assert {k: reservation[k] for k in body} == body
    assert (reservation["status"], reservation["reason"], reservation["version"]) == ("confirmed", None, 1)
    # RFC 3339 with the partner's offset (Europe/Berlin).
    created = datetime.fromisoformat(reservation["created_at"])
    assert created.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert abs(created - datetime.now(UTC)) < timedelta(seconds=10)
    assert reservation["updated_at"] == reservation["created_at"]


def test_every_response_carries_a_date_header(reference: SandboxProcess) -> None:
    ok = create(reference, reference_body())
    missing = reference.request("GET", "/v1/reservations/R-missing")
    unauthorised = reference.request(
        "GET", "/v1/reservations/R-missing", headers={"Authorization": "x"}, authenticated=False
    )

    for response in (ok, missing, unauthorised):
        sent = parse_date(response.headers["Date"])
        assert sent is not None
        assert abs(sent - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_missing_or_wrong_key_gets_401_everywhere(reference: SandboxProcess) -> None:
    paths = [
        ("POST", "/v1/reservations"),
        ("GET", "/v1/reservations/R-1"),
        ("GET", "/v1/reservations?client_reference=BK-1"),
        ("POST", "/v1/reservations/R-1/cancel"),
        ("GET", "/_sandbox/faults"),
        ("GET", "/_sandbox/reservations"),
    ]
    for method, path in paths:
        for auth in (
            {"Authorization": "Bearer wrong"},
            {"Authorization": ""},
            {"X-Api-Key": "sandbox-test-key"},
        ):
            response = reference.request(
                method, path, headers=auth, json=reference_body(), authenticated=False
            )
            assert response.status_code == 401, (method, path, auth)
            assert response.json()["error"] == "unauthorized"

    assert reference.truth() == []


def test_get_returns_the_reservation_and_404_for_an_unknown_id(reference: SandboxProcess) -> None:
    created = create(reference, reference_body()).json()

    found = reference.request("GET", f"/v1/reservations/{created['id']}")
    missing = reference.request("GET", "/v1/reservations/R-0000")

    assert (found.status_code, found.json()) == (200, created)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no reservation R-0000"}


def test_idempotent_replay_returns_200_and_the_same_reservation(reference: SandboxProcess) -> None:
    body = reference_body()
    first = create(reference, body, key="key-replay")

    again = create(reference, body, key="key-replay")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(reference.truth(body["client_reference"])) == 1


def test_same_key_with_another_body_gets_422_idempotency_key_reused(reference: SandboxProcess) -> None:
    body = reference_body()
    create(reference, body, key="key-reused")

    response = create(reference, {**body, "guests": 3}, key="key-reused")

    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert len(reference.truth(body["client_reference"])) == 1


def test_a_repeat_while_the_first_is_in_flight_gets_409(reference: SandboxProcess) -> None:
    reference.set_faults(latency_ms=[1000, 1000])  # taken while the key is claimed
    body = reference_body()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(create, reference, body, "key-in-flight")
        wait_until(
            lambda: reference.stats()["calls"].get("POST /v1/reservations") == 1,
            what="the first request to reach the partner",
        )
        second = pool.submit(create, reference, body, "key-in-flight")
        responses = {r.status_code: r for r in (first.result(), second.result())}
    reference.set_faults(latency_ms=[0, 0])
    replay = create(reference, body, key="key-in-flight")

    assert sorted(responses) == [201, 409]
    assert responses[409].json()["error"] == "request_in_progress"
    assert replay.status_code == 200
    assert replay.json()["id"] == responses[201].json()["id"]
    assert len(reference.truth(body["client_reference"])) == 1


def test_without_a_key_every_post_creates_and_lookup_lists_the_duplicates(reference: SandboxProcess) -> None:
    body = reference_body()
    ids = [create(reference, body).json()["id"] for _ in range(2)]

    lookup = reference.request(
        "GET", "/v1/reservations", params={"client_reference": body["client_reference"]}
    )
    other = reference.request("GET", "/v1/reservations", params={"client_reference": "BK-NOBODY"})

    assert lookup.status_code == 200
    assert [r["id"] for r in lookup.json()["data"]] == ids
    assert len(set(ids)) == 2
    assert (other.status_code, other.json()) == (200, {"data": []})


def test_lookup_without_client_reference_is_400(reference: SandboxProcess) -> None:
    response = reference.request("GET", "/v1/reservations")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_malformed_bodies_get_400_and_create_nothing(reference: SandboxProcess) -> None:
    ref = unique_ref()
    bad_bodies = [
        b"not json",
        b"[1, 2]",
        {k: v for k, v in reference_body(ref).items() if k != "product_id"},
        reference_body(ref, guests="2"),
        reference_body(ref, guests=True),
        reference_body(ref, total_price=360),
        reference_body(ref, total_price="lots"),
        reference_body(ref, currency="euro"),
        reference_body(ref, start_date="01/03/2027"),
        {**reference_body(ref), "client_reference": ""},
    ]
    for body in bad_bodies:
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        response = reference.request("POST", "/v1/reservations", **kwargs)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_request"
        assert response.json()["message"]

    assert reference.truth(ref) == []


def test_semantically_invalid_bodies_get_422(reference: SandboxProcess) -> None:
    ref = unique_ref()
    for body in (
        reference_body(ref, start_date="2027-03-04", end_date="2027-03-01"),
        reference_body(ref, end_date="2027-03-01"),
        reference_body(ref, guests=0),
        reference_body(ref, total_price="-1.00"),
    ):
        response = create(
            reference, body, key=f"key-{body['end_date']}-{body['guests']}-{body['total_price']}"
        )
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"

    assert reference.truth(ref) == []


def test_cancel_answers_200_cancelled_with_a_new_version_and_a_repeat_is_harmless(
    reference: SandboxProcess,
) -> None:
    created = create(reference, reference_body()).json()

    cancelled = reference.request("POST", f"/v1/reservations/{created['id']}/cancel")
    repeat = reference.request("POST", f"/v1/reservations/{created['id']}/cancel")

    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["version"]) == ("cancelled", 2)
    assert cancelled.json()["updated_at"] >= created["updated_at"]
    assert (repeat.status_code, repeat.json()) == (200, cancelled.json())
    [truth] = reference.truth(created["client_reference"])
    assert [(h["version"], h["status"]) for h in truth["history"]] == [(1, "confirmed"), (2, "cancelled")]


def test_cancel_of_an_unknown_reservation_is_404(reference: SandboxProcess) -> None:
    response = reference.request("POST", "/v1/reservations/R-nope/cancel")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_cancel_of_a_rejected_reservation_is_409_not_cancellable(reference: SandboxProcess) -> None:
    reference.set_faults(reject_rate=1)
    rejected = create(reference, reference_body()).json()

    response = reference.request("POST", f"/v1/reservations/{rejected['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["error"] == "not_cancellable"
    [truth] = reference.truth(rejected["client_reference"])
    assert (truth["status"], truth["version"]) == ("rejected", 1)


def test_unknown_paths_and_methods(reference: SandboxProcess) -> None:
    assert reference.request("GET", "/v2/nothing").status_code == 404
    not_allowed = reference.request("DELETE", "/v1/reservations/R-1")
    assert not_allowed.status_code == 405
    assert not_allowed.json()["error"] == "method_not_allowed"


def test_ground_truth_lists_every_reservation_with_its_history(reference: SandboxProcess) -> None:
    body = reference_body()
    created = create(reference, body, key="key-truth").json()
    reference.request("POST", f"/v1/reservations/{created['id']}/cancel")

    response = reference.request("GET", "/_sandbox/reservations")

    assert response.status_code == 200
    assert body["client_reference"] in response.text
    [truth] = response.json()["reservations"]
    assert truth["id"] == created["id"]
    assert truth["idempotency_key"] == "key-truth"
    assert [(h["version"], h["status"], h["cause"]) for h in truth["history"]] == [
        (1, "confirmed", "create"),
        (2, "cancelled", "cancel"),
    ]
