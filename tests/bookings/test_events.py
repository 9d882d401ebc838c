"""The live status streams against a real events process (uvicorn, `config.events`) on this test's
database and a real Redis: a committed change arrives within a second; `Last-Event-ID` resumes
with only what is newer; a lost publish is corrected at the next heartbeat, and after a Redis
restart; customers follow only their own bookings, by token or session; a stream ends at its
life bound and at shutdown; a client that leaves frees its subscription; the process holds its
few database connections however many streams are open.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.http.response import HttpResponseBase
from django.test import Client
from rest_framework.test import APIClient

from bookings import live
from bookings.models import Booking
from bookings.states import BookingState
from config import embedded_redis, health
from tests.bookings.conftest import IS_POSTGRES, post_booking, stay_body
from tests.factories import BookingFactory, OfferFactory, QuoteFactory, TokenFactory, UserFactory
from tests.helpers import wait_until
from tests.streams import STOPPED_CLEANLY, ServerProcess, SseStream, move, start_events, subscriptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

S = BookingState
HEARTBEAT_S = 1.0


@pytest.fixture(scope="module")
def events(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    """One events process for the module's tests, beating every second."""
    process = start_events(tmp_path_factory.mktemp("events"), LIVE_HEARTBEAT_S=str(HEARTBEAT_S))
    yield process
    assert process.stop() in STOPPED_CLEANLY, process.log()


@pytest.fixture
def open_stream(transactional_db) -> Iterator[Callable[..., SseStream]]:
    """`open_stream(server, path, token=..., session=..., last_event_id=...)`; closed at the end."""
    opened: list[SseStream] = []

    def open_(server: ServerProcess, path: str, *, token=None, session=None, last_event_id=None) -> SseStream:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Token {token.key}"
        if session is not None:
            headers["Cookie"] = f"{settings.SESSION_COOKIE_NAME}={session}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        stream = SseStream(server.url, path, headers=headers)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.close()


@pytest.fixture
def ada(transactional_db):
    return UserFactory(username="ada")


def booking_of(customer, **fields) -> Booking:
    return BookingFactory(customer=customer, **fields)


def booking_path(booking: Booking) -> str:
    return f"/api/v1/bookings/{booking.reference}/events"


MY_BOOKINGS = "/api/v1/bookings/events"


# --- a change reaches the stream ---------------------------------------------------------------
def test_a_committed_change_reaches_the_booking_and_customer_streams_within_a_second(
    events, open_stream, ada
):
    booking = booking_of(ada)
    token = TokenFactory(user=ada)
    stream = open_stream(events, booking_path(booking), token=token)
    mine = open_stream(events, MY_BOOKINGS, token=token)

    # the stream opens with its retry hint, then the booking as it is shown now, numbered
    assert stream.status == 200
    assert stream.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert stream.next().retry_ms == 2000
    opening = stream.next_event()
    assert (opening.name, opening.id) == ("status", 1)
    assert opening.data == {
        "reference": booking.reference,
        "status": "pending",
        "message": "We received your booking and are sending it to the partner.",
        "message_code": "received",
        "status_version": 1,
    }
    assert mine.next_event().id == 1  # the customer's sequence: their one booking at version 1

    # when the worker moves it (committed), the change is pushed at once, on both streams
    committed_at = move(booking, "start_submission")

    change = stream.next_event(timeout_s=2)
    assert (change.id, change.data["status_version"], change.data["message_code"]) == (2, 2, "submitting")
    assert change.at - committed_at < 1.0
    pushed = mine.next_event(timeout_s=2)
    assert (pushed.id, pushed.data["reference"], pushed.data["status_version"]) == (2, booking.reference, 2)
    assert pushed.at - committed_at < 1.0


def test_last_event_id_resumes_with_only_what_is_newer(events, open_stream, ada):
    booking = booking_of(ada)
    token = TokenFactory(user=ada)
    move(booking, "start_submission")
    move(booking, "mark_partner_pending")  # version 3

    # a client that has version 3 gets nothing on reconnecting, only heartbeats
    current = open_stream(events, booking_path(booking), token=token, last_event_id=3)
    assert current.next_heartbeat(timeout_s=3 * HEARTBEAT_S) == []
    # one that had version 1 gets the booking as it is now: version 3, not 2 then 3
    behind = open_stream(events, booking_path(booking), token=token, last_event_id=1)
    assert [(e.id, e.data["message_code"]) for e in behind.next_heartbeat()] == [(3, "partner_confirming")]

    # and the next change reaches both
    move(booking, "confirm")
    assert [current.next_event().id, behind.next_event().id] == [4, 4]
    assert current.next_heartbeat() == []  # once


def test_my_bookings_stream_numbers_the_customers_changes_and_resumes_by_that_number(
    events, open_stream, ada
):
    first, second = booking_of(ada), booking_of(ada)
    someone_elses = booking_of(UserFactory())
    token = TokenFactory(user=ada)

    # a new stream gets every booking of the customer, the sequence (1 + 1) on the last
    fresh = open_stream(events, MY_BOOKINGS, token=token)
    opening = fresh.next_heartbeat()
    assert sorted(e.data["reference"] for e in opening) == sorted([first.reference, second.reference])
    assert [e.id for e in opening] == [None, 2]

    # a change of theirs moves the sequence by one; another customer's reaches no one here
    move(someone_elses, "start_submission")
    move(second, "start_submission")
    change = fresh.next_event()
    assert (change.id, change.data["reference"], change.data["status_version"]) == (3, second.reference, 2)
    assert fresh.next_heartbeat() == []

    # resumed at the sequence it had, nothing is sent again; from an older one, everything
    assert open_stream(events, MY_BOOKINGS, token=token, last_event_id=3).next_heartbeat() == []
    resumed = open_stream(events, MY_BOOKINGS, token=token, last_event_id=2).next_heartbeat()
    assert {(e.data["reference"], e.data["status_version"]) for e in resumed} == {
        (first.reference, 1),
        (second.reference, 2),
    }
    assert resumed[-1].id == 3


# --- a new booking reaches the stream -------------------------------------------------------------
# Every way a booking is made: by the API or the quote page, without or with a card.
WAYS = [("api", ""), ("api", "pm_card_visa"), ("page", ""), ("page", "pm_card_visa")]


def booking_request(way: str, token, card: str, key: str) -> Callable[[], HttpResponseBase]:
    """A new booking's request as the API client or the quote page sends it; sent again, it is a
    replay (the same Idempotency-Key and body)."""
    customer, offer = token.user, OfferFactory()
    if way == "api":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        body = stay_body(offer, **({"payment_method": card} if card else {}))
        return lambda: post_booking(client, body, key=key)
    quote = QuoteFactory(customer=customer, offer=offer)
    browser = Client()
    browser.force_login(customer)
    return lambda: browser.post(f"/quotes/{quote.pk}/book/", {"idempotency_key": key, "payment_method": card})


def test_a_new_booking_reaches_my_bookings_stream_within_a_second_and_once_however_it_is_made(
    open_stream, ada, broker, tmp_path
):
    # an events process whose heartbeat is a minute away: what its stream gets at once was published
    events = start_events(tmp_path, LIVE_HEARTBEAT_S="60")
    listener = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    try:
        token = TokenFactory(user=ada)
        booking_of(ada)  # an earlier booking, at version 1
        mine = open_stream(events, MY_BOOKINGS, token=token)
        assert mine.next_event().id == 1  # subscribed, at the customer's sequence
        listener.subscribe(live.customer_channel(ada.pk))
        wait_until(
            lambda: (listener.get_message(timeout=0.1) or {}).get("type") == "subscribe", what="subscribed"
        )

        for sequence, (way, card) in enumerate(WAYS, start=2):
            key = f"new-by-{way}-{card or 'no-card'}"
            send = booking_request(way, token, card, key)

            # when the customer books (committed once answered)
            answer = send()
            answered_at = time.monotonic()
            assert answer.status_code in (202, 302), answer.content
            booking = Booking.objects.get(customer=ada, idempotency_key=key)

            # then its first view reaches the stream at once, and the sequence moves by its one
            new = mine.next_event(timeout_s=3)
            assert new.at - answered_at < 1.0, (way, card)
            assert (new.id, new.data) == (sequence, live.payload(booking))
            assert new.data["status_version"] == 1
            assert new.data["message_code"] == ("checking_payment" if card else "received")

            # published once: a replay of the request is the same booking, and publishes nothing
            assert send().status_code == answer.status_code
            published = [listener.get_message(timeout=0.5) for _ in range(2)]
            assert [json.loads(m["data"]) for m in published if m] == [live.payload(booking)], (way, card)
    finally:
        listener.close()
        assert events.stop() in STOPPED_CLEANLY, events.log()


def test_a_lost_publish_is_corrected_at_the_next_heartbeat(events, open_stream, ada, monkeypatch):
    booking = booking_of(ada)
    stream = open_stream(events, booking_path(booking), token=TokenFactory(user=ada))
    mine = open_stream(events, MY_BOOKINGS, token=TokenFactory(user=UserFactory()))  # nothing of theirs
    assert stream.next_event().id == 1

    # given a change whose publish never reaches Redis
    monkeypatch.setattr(live, "_publish", lambda *args, **kwargs: None)
    committed_at = move(booking, "start_submission")

    # the stream re-reads the booking at its next heartbeat and sends it then
    change = stream.next_event(timeout_s=3 * HEARTBEAT_S)
    assert (change.id, change.data["message_code"]) == (2, "submitting")
    assert change.at - committed_at <= HEARTBEAT_S + 0.5
    assert mine.next_heartbeat() == []


def test_streams_follow_the_customers_own_bookings_by_token_or_session(events, open_stream, ada):
    booking = booking_of(ada)
    someone_elses = booking_of(UserFactory())
    browser = Client()
    browser.force_login(ada)
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value

    # the pages' session follows the booking as a token does
    by_session = open_stream(events, booking_path(booking), session=session)
    assert by_session.status == 200 and by_session.next_event().data["reference"] == booking.reference
    assert (
        open_stream(events, MY_BOOKINGS, session=session).next_event().data["reference"] == booking.reference
    )

    # another customer's booking is a 404 like a missing one, in the one error shape
    theirs = open_stream(events, booking_path(someone_elses), session=session)
    missing = open_stream(events, "/api/v1/bookings/BK-NOSUCH/events", token=TokenFactory(user=ada))
    for refused in (theirs, missing):
        assert refused.status == 404
        assert refused.body["error"]["code"] == "not_found"
    assert theirs.body["error"]["message"] == f"No booking {someone_elses.reference}."

    # a reference in lower case names the same booking (references are of one case), and only
    # the customer's own
    lowered = open_stream(events, booking_path(booking).lower(), session=session)
    assert lowered.status == 200 and lowered.next_event().data["reference"] == booking.reference
    assert open_stream(events, booking_path(someone_elses).lower(), session=session).status == 404
    # a NUL (`%00`) names no booking either: not a database error
    nul = open_stream(events, f"/api/v1/bookings/{booking.reference}%00/events", session=session)
    assert (nul.status, nul.body["error"]["code"]) == (404, "not_found")

    # no credentials, a wrong token or a malformed Last-Event-ID: refused before any stream
    anonymous = open_stream(events, booking_path(booking))
    assert (anonymous.status, anonymous.body["error"]["code"]) == (401, "not_authenticated")
    assert anonymous.response.getheader("WWW-Authenticate") == "Token"
    wrong = SseStream(events.url, booking_path(booking), headers={"Authorization": "Token nope"})
    assert (wrong.status, wrong.body["error"]["code"]) == (401, "authentication_failed")
    garbled = open_stream(events, booking_path(booking), session=session, last_event_id="v3")
    assert (garbled.status, garbled.body["error"]["fields"]) == (
        400,
        {"Last-Event-ID": ["Send back the id of the last event received, a whole number."]},
    )
    # a header byte that reads as a digit to str.isdigit() but not to int() (a latin-1 `²`): a
    # 400 as any other, not a ValueError's 500
    superscript = open_stream(events, booking_path(booking), session=session, last_event_id="\u00b2")
    assert (superscript.status, superscript.body["error"]["code"]) == (400, "validation_error")


def test_a_stream_on_the_web_server_is_refused_as_misdirected(ada, client):
    """Under WSGI a stream would hold a worker thread for its whole life."""
    booking = booking_of(ada)
    client.force_login(ada)

    response = client.get(booking_path(booking))

    assert response.status_code == 421
    assert response.json()["error"]["code"] == "misdirected_request"


STREAM_PATHS = [MY_BOOKINGS, "/api/v1/bookings/BK-ANY/events"]
NOT_GET = ["POST", "PUT", "PATCH", "DELETE"]


def assert_method_not_allowed(status: int, body: bytes, method: str) -> None:
    assert (status, json.loads(body)) == (
        405,
        {"error": {"code": "method_not_allowed", "message": f'Method "{method}" not allowed.'}},
    )


@pytest.mark.parametrize("path", STREAM_PATHS)
@pytest.mark.parametrize("method", NOT_GET)
def test_a_stream_path_answers_another_method_405_on_the_web_server(ada, path, method):
    """Not the CSRF middleware's 403: a browser's session, no CSRF token, as a client would send."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada)

    response = client.generic(method, path, data=b"{}", content_type="application/json")

    assert_method_not_allowed(response.status_code, response.content, method)
    assert response["Allow"] == "GET"


@pytest.mark.parametrize("path", STREAM_PATHS)
@pytest.mark.parametrize("method", NOT_GET)
def test_a_stream_path_answers_another_method_405_on_the_events_process(events, path, method):
    connection = http.client.HTTPConnection("127.0.0.1", events.port, timeout=10)
    try:
        connection.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert_method_not_allowed(response.status, response.read(), method)
        assert response.getheader("Allow") == "GET"
    finally:
        connection.close()


# --- the life of a stream and of its subscription ---------------------------------------------
def test_a_client_that_leaves_frees_its_subscription(events, open_stream, ada):
    booking, other = booking_of(ada), booking_of(ada)
    token = TokenFactory(user=ada)
    streams = [
        open_stream(events, booking_path(booking), token=token),
        open_stream(events, booking_path(booking), token=token),
        open_stream(events, booking_path(other), token=token),
        open_stream(events, MY_BOOKINGS, token=token),
    ]
    for stream in streams:
        stream.next_event()

    # one subscription per followed channel, however many streams follow it
    assert subscriptions(events.pid) == 3
    for stream in streams[:3]:
        stream.close()
    wait_until(lambda: subscriptions(events.pid) == 1, what="the booking channels to be unsubscribed")
    streams[3].close()
    wait_until(lambda: subscriptions(events.pid) == 0, what="the customer channel to be unsubscribed")


def test_a_stream_ends_at_its_life_bound_and_the_client_resumes(open_stream, ada, tmp_path):
    events = start_events(tmp_path, LIVE_HEARTBEAT_S="0.25", LIVE_STREAM_LIFE_S="2")
    try:
        booking = booking_of(ada)
        token = TokenFactory(user=ada)
        stream = open_stream(events, booking_path(booking), token=token)
        opened_at = stream.next_event().at

        stream.ended.wait(5)
        lived_s = time.monotonic() - opened_at
        assert 1.6 - 0.1 <= lived_s <= 2.0 + 0.25 + 0.5
        wait_until(lambda: subscriptions(events.pid) == 0, what="the ended stream to unsubscribe")
        resumed = open_stream(events, booking_path(booking), token=token, last_event_id=1)
        assert resumed.next_heartbeat() == []
    finally:
        assert events.stop() in STOPPED_CLEANLY, events.log()


def test_shutdown_ends_open_streams_at_once(open_stream, ada, tmp_path):
    events = start_events(tmp_path)
    booking = booking_of(ada)
    stream = open_stream(events, booking_path(booking), token=TokenFactory(user=ada))
    stream.next_event()

    started = time.monotonic()
    os.killpg(events.pid, signal.SIGTERM)

    assert stream.ended.wait(5)
    assert events.process.wait(10) in STOPPED_CLEANLY
    assert time.monotonic() - started < 2.0  # not the 3 s grace nor the stream's life
    assert "Traceback" not in events.log()


def test_after_a_redis_restart_the_stream_is_corrected_and_publishes_flow_again(
    open_stream, ada, tmp_path, monkeypatch
):
    own_redis = embedded_redis.EmbeddedRedis(tmp_path).start()
    events = start_events(tmp_path, REDIS_URL=own_redis.url, LIVE_HEARTBEAT_S="0.5")
    try:
        booking = booking_of(ada)
        stream = open_stream(events, booking_path(booking), token=TokenFactory(user=ada))
        assert stream.next_event().id == 1
        own = redis.Redis.from_url(own_redis.url)
        channel = live.booking_channel(booking.pk)
        assert own.pubsub_numsub(channel) == [(channel.encode(), 1)]

        # Redis goes away; the booking changes meanwhile (its publish is lost: nobody is there)
        own_redis.stop()
        move(booking, "start_submission")
        assert stream.next_event(timeout_s=5).id == 2  # the heartbeat reads the database regardless
        own_redis.start()

        # the process subscribes again by itself, and publishes reach the stream at once
        wait_until(
            lambda: own.pubsub_numsub(channel)[0][1] == 1,
            what="the events process to subscribe again",
            timeout_s=15,
        )
        monkeypatch.setattr(live, "_publish", lambda *args, **kwargs: None)  # the test publishes below
        move(booking, "mark_partner_pending")
        moved = Booking.objects.get(pk=booking.pk)
        own.publish(channel, json.dumps(live.payload(moved)))
        published_at = time.monotonic()
        change = stream.next_event(timeout_s=2)
        assert change.id == 3 and change.at - published_at < 0.4  # sooner than any heartbeat
    finally:
        assert events.stop() in STOPPED_CLEANLY, events.log()
        own_redis.stop()


@pytest.mark.skipif(not IS_POSTGRES, reason="counts connections in PostgreSQL's pg_stat_activity")
def test_the_events_process_holds_its_few_database_connections_however_many_streams(events, open_stream, ada):
    bookings = [booking_of(ada) for _ in range(40)]
    token = TokenFactory(user=ada)
    streams = [open_stream(events, booking_path(booking), token=token) for booking in bookings]
    for stream in streams:
        stream.next_event()
    for booking in bookings[:10]:
        move(booking, "start_submission")
    for stream in streams[:10]:
        assert stream.next_event().id == 2
    streams[0].next_heartbeat()  # a heartbeat's re-read of all 40 has run too

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        others = [query for (query,) in cursor.fetchall()]
    # the streams' reads share the live threads' connections; besides them, at most the one that
    # answered the readiness check (/healthz, on the process's sync thread: its query on PostgreSQL
    # is the probe's own, no longer `SELECT 1`, and it stays until the thread's locals are collected)
    streams = [query for query in others if query not in ("SELECT 1", health._POSTGRES_WRITABLE)]
    assert 1 <= len(streams) <= settings.LIVE_DB_THREADS, others
    assert len(others) - len(streams) <= 1, others
