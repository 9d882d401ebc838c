"""A stream whose database goes away after its headers were sent: the 200 is out, so no 503 can
answer it (DatabaseUnavailableMiddleware never sees the error). The stream logs one warning and
ends; its client reconnects, and the reconnection gets the 503. Before, the error left the ASGI
application, and uvicorn logged it as "Exception in ASGI application" with a traceback.

The stream runs in this process on the ASGI application and a hub of its own (a real Redis, the
test's database); only the stream's opening read fails, raising what a database that stopped
answering raises, because the moment between the stream's authentication and that read cannot
be hit from outside.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import OperationalError, connections

from bookings.streams import views
from bookings.streams.followers import CustomerFollower
from bookings.streams.hub import Hub
from tests.factories import BookingFactory, TokenFactory, UserFactory

MY_BOOKINGS = "/api/v1/bookings/events"


def _stream(path: str, token: str) -> list[dict]:
    """Run one stream request through the ASGI application, as uvicorn does; what it sent."""
    application = ASGIHandler()  # not get_asgi_application(): its setup would reconfigure logging
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Token {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict] = []

    async def run() -> None:
        asked = False
        client_stays = asyncio.Event()  # the client never leaves on its own

        async def receive() -> dict:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await client_stays.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        hub = views.hub
        try:
            await asyncio.wait_for(application(scope, receive, send), timeout=30)
        finally:
            # The database connections of the hub's thread and of Django's, or the test database
            # cannot be dropped after the test.
            await hub.db(connections.close_all)
            await sync_to_async(connections.close_all)()
            await hub.close()

    asyncio.run(run())
    return sent


# What it raises is PostgreSQL's word for a server gone; on the embedded defaults (SQLite in this
# process) the test's own teardown of the hub's connections once hung the event loop under load.
@pytest.mark.once_per_ci("postgresql")
@pytest.mark.timeout(60)
def test_a_database_gone_after_the_headers_ends_the_stream_with_one_warning(
    transactional_db, monkeypatch, caplog, settings
):
    customer = UserFactory()
    BookingFactory(customer=customer)
    token = TokenFactory(user=customer).key
    settings.LIVE_DB_THREADS = 1  # one database connection, closed at the end
    monkeypatch.setattr(views, "hub", Hub())  # started on this test's loop, closed with it

    def database_gone(self):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(CustomerFollower, "read", database_gone)

    with caplog.at_level(logging.WARNING):
        sent = _stream(MY_BOOKINGS, token)  # no exception leaves the application

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body"}  # the closing message: the stream ended
    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert body.startswith(b"retry:")
    assert b"event:" not in body
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [("bookings.streams.views", "WARNING", "database unavailable: stream ended")]
    record = next(r for r in caplog.records if r.name == "bookings.streams.views")
    assert record.path == MY_BOOKINGS
    assert record.error == "OperationalError: server closed the connection unexpectedly"
