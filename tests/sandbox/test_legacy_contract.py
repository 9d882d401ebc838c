"""The `legacy` profile keeps the wire contract of docs/partner-protocols.md, call by call."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

from tests.helpers import wait_until
from tests.sandbox.conftest import legacy_body, unique_ref
from tests.sandbox_process import SandboxProcess

BERLIN = ZoneInfo("Europe/Berlin")
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
# A booking as GET and the listing show it: its state and the terms the partner holds now.
BOOKING_FIELDS = {"booking_no", "ref", "state", "modified", "from", "to", "pax", "amount", "ccy"}


def create(partner: SandboxProcess, body: dict):
    return partner.request("POST", "/api/bookings", json=body)


def _partner_now(partner: SandboxProcess) -> datetime:
    """The partner's clock, from the Date header it sends with every answer."""
    return parsedate_to_datetime(partner.request("GET", "/_sandbox/faults").headers["Date"])


def test_every_post_creates_a_new_booking(legacy: SandboxProcess) -> None:
    body = legacy_body()

    first = create(legacy, body)
    second = create(legacy, body)

    assert first.status_code == second.status_code == 200
    assert first.json()["state"] == "OK"
    assert first.json()["msg"] == "confirmed"
    assert set(first.json()) == {"booking_no", "state", "msg"}
    assert isinstance(first.json()["booking_no"], int)
    assert second.json()["booking_no"] == first.json()["booking_no"] + 1
    assert len(legacy.truth(body["ref"])) == 2


def test_get_shows_state_and_local_naive_modified_time(legacy: SandboxProcess) -> None:
    body = legacy_body()
    booking_no = create(legacy, body).json()["booking_no"]

    response = legacy.request("GET", f"/api/bookings/{booking_no}")

    assert response.status_code == 200
    booking = response.json()
    assert set(booking) == BOOKING_FIELDS
    assert (booking["booking_no"], booking["ref"], booking["state"]) == (booking_no, body["ref"], "OK")
    terms = {name: body[name] for name in ("from", "to", "pax", "amount", "ccy")}
    assert {name: booking[name] for name in terms} == terms
    assert LOCAL_TIME.match(booking["modified"])
    local = datetime.strptime(booking["modified"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN)
    assert abs(local - datetime.now(UTC)) < timedelta(seconds=5)
    assert "Date" in response.headers


def test_get_of_an_unknown_booking_is_404(legacy: SandboxProcess) -> None:
    response = legacy.request("GET", "/api/bookings/1")

    assert response.status_code == 404
    assert response.json() == {"err": "no such booking"}


def test_bad_key_is_401(legacy: SandboxProcess) -> None:
    for headers in ({"X-Api-Key": "wrong"}, {"X-Api-Key": ""}, {"Authorization": "Bearer sandbox-test-key"}):
        response = legacy.request(
            "POST", "/api/bookings", json=legacy_body(), headers=headers, authenticated=False
        )
        assert response.status_code == 401
        assert "err" in response.json()

    assert legacy.truth() == []


def test_bad_bodies_are_400_with_err(legacy: SandboxProcess) -> None:
    ref = unique_ref()
    for body in (
        b"{not json",
        {"ref": ref},
        legacy_body(ref, pax="2"),
        legacy_body(ref, amount=360),
        legacy_body(ref, ccy="€"),
        legacy_body(ref, **{"from": "2027-03-04", "to": "2027-03-01"}),
        legacy_body(ref, pax=0),
    ):
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        response = legacy.request("POST", "/api/bookings", **kwargs)
        assert response.status_code == 400, body
        assert set(response.json()) == {"err"}

    assert legacy.truth(ref) == []


def test_delete_cancels_and_a_repeat_is_harmless(legacy: SandboxProcess) -> None:
    booking_no = create(legacy, legacy_body()).json()["booking_no"]

    first = legacy.request("DELETE", f"/api/bookings/{booking_no}")
    repeat = legacy.request("DELETE", f"/api/bookings/{booking_no}")
    unknown = legacy.request("DELETE", "/api/bookings/42")

    assert (first.status_code, first.json()) == (200, {"booking_no": booking_no, "state": "CXL"})
    assert (repeat.status_code, repeat.json()) == (200, {"booking_no": booking_no, "state": "CXL"})
    assert unknown.status_code == 404
    assert legacy.request("GET", f"/api/bookings/{booking_no}").json()["state"] == "CXL"
    [truth] = legacy.truth(str(legacy.request("GET", f"/api/bookings/{booking_no}").json()["ref"]))
    assert [h["state"] for h in truth["history"]] == ["OK", "CXL"]


def test_delete_of_a_failed_booking_is_400(legacy: SandboxProcess) -> None:
    legacy.set_faults(reject_rate=1)
    booking_no = create(legacy, legacy_body()).json()["booking_no"]

    response = legacy.request("DELETE", f"/api/bookings/{booking_no}")

    assert response.status_code == 400
    assert "err" in response.json()


def test_listing_is_ordered_by_modified_and_paged_by_100(legacy: SandboxProcess) -> None:
    numbers = [create(legacy, legacy_body()).json()["booking_no"] for _ in range(205)]
    # Cancelling the first booking moves it to the end of the change order.
    legacy.request("DELETE", f"/api/bookings/{numbers[0]}")

    pages = []
    page: int | None = 1
    while page is not None:
        response = legacy.request(
            "GET", "/api/bookings", params={"modified_since": "2000-01-01 00:00:00", "page": page}
        )
        assert response.status_code == 200
        pages.append(response.json())
        page = response.json()["next_page"]

    assert [len(p["items"]) for p in pages] == [100, 100, 5]
    assert [p["next_page"] for p in pages] == [2, 3, None]
    items = [item for p in pages for item in p["items"]]
    assert [i["booking_no"] for i in items] == [*numbers[1:], numbers[0]]
    assert items[-1]["state"] == "CXL"
    assert [i["modified"] for i in items] == sorted(i["modified"] for i in items)
    assert set(items[0]) == BOOKING_FIELDS


def test_listing_filters_by_modified_since_in_local_time(legacy: SandboxProcess) -> None:
    old = create(legacy, legacy_body()).json()["booking_no"]
    modified = legacy.request("GET", f"/api/bookings/{old}").json()["modified"]
    old_modified = datetime.strptime(modified, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN)
    # legacy times have whole seconds: the next booking must be modified a second later
    wait_until(lambda: _partner_now(legacy) > old_modified, what="the partner's clock to pass that second")
    since = legacy.request("GET", "/api/bookings/" + str(create(legacy, legacy_body()).json()["booking_no"]))
    since_modified = since.json()["modified"]

    response = legacy.request("GET", "/api/bookings", params={"modified_since": since_modified, "page": 1})
    future = legacy.request("GET", "/api/bookings", params={"modified_since": "2999-01-01 00:00:00"})

    numbers = [i["booking_no"] for i in response.json()["items"]]
    assert since.json()["booking_no"] in numbers
    assert old not in numbers
    assert future.json() == {"items": [], "next_page": None}


def test_listing_rejects_malformed_parameters(legacy: SandboxProcess) -> None:
    for params in ({"modified_since": "2027-03-01T10:00:00+01:00"}, {"page": "0"}, {"page": "two"}):
        response = legacy.request("GET", "/api/bookings", params=params)
        assert response.status_code == 400, params
        assert "err" in response.json()


def test_ground_truth_shows_legacy_fields_and_history(legacy: SandboxProcess) -> None:
    body = legacy_body()
    booking_no = create(legacy, body).json()["booking_no"]

    [truth] = legacy.truth(body["ref"])

    assert truth["booking_no"] == booking_no
    assert {k: truth[k] for k in body} == body
    assert [(h["version"], h["state"]) for h in truth["history"]] == [(1, "OK")]
    assert LOCAL_TIME.match(truth["history"][0]["modified"])
