"""The live status streams: `GET /api/v1/bookings/<reference>/events` (one booking) and
`GET /api/v1/bookings/events` (every booking of the customer: "my bookings").

Authenticated as the API is (a token, or the pages' session); a customer follows only their own
bookings, so another customer's booking is a 404 like a missing one. Each event is `status` with
the booking's view as data (`bookings.live.payload`, what a publish carries) and its id: the
booking's `status_version`, or the customer's sequence number. A client that reconnects with
`Last-Event-ID` gets only what changed since. Each stream ends after `LIVE_STREAM_LIFE_S`; the
client reconnects after the `retry:` it was given. A stream whose database goes away before its
opening read (its 200 already sent) ends too, with one warning; the reconnection gets the 503.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions

from bookings import live
from bookings.streams import selectors, sse
from bookings.streams.followers import BookingFollower, CustomerFollower, Follower
from bookings.streams.hub import hub
from config import database_errors
from config.errors import ApplicationError, ValidationFailed, error_body, error_response
from config.logging import one_line

logger = logging.getLogger(__name__)

LAST_EVENT_ID = "Last-Event-ID"
# The digits 0-9 alone: str.isdigit() also takes `²` (a latin-1 header byte), which int() refuses.
_EVENT_ID = re.compile(r"[0-9]{1,18}")


def _stream_view(view: Callable[..., Awaitable[HttpResponse]]) -> Callable[..., Awaitable[HttpResponse]]:
    """GET only, never cached, served by the events process only, errors in the one shape.

    CSRF-exempt: the views answer GET alone, which CSRF never checks; without it the CSRF
    middleware answered any other method 403 before the view could say 405, as the API does."""

    @csrf_exempt
    @never_cache
    @functools.wraps(view)
    async def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "GET":
            # As DRF answers the API's other paths (config.errors.api_exception_handler).
            body = error_body("method_not_allowed", f'Method "{request.method}" not allowed.')
            return JsonResponse(body, status=405, headers={"Allow": "GET"})
        if not isinstance(request, ASGIRequest):
            # Under WSGI a stream would hold a worker thread for its whole life.
            return error_response(
                421,
                "misdirected_request",
                "Event streams are served by the events process: route this path to it.",
            )
        hub.start()
        try:
            return await view(request, *args, **kwargs)
        except ApplicationError as exc:
            return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=exc.http_status)
        except (exceptions.NotAuthenticated, exceptions.AuthenticationFailed) as exc:
            # As the API answers them (config.errors.api_exception_handler).
            body = error_body(exc.get_codes(), str(exc.detail))
            return JsonResponse(body, status=exc.status_code, headers={"WWW-Authenticate": "Token"})

    return wrapped


@_stream_view
async def booking_events(request: HttpRequest, reference: str) -> HttpResponse:
    since = _last_event_id(request)
    customer = await _customer(request)
    booking_id = await hub.db(selectors.followed_booking_id, customer=customer, reference=reference)
    follower = BookingFollower(
        booking_id=booking_id, channel=live.booking_channel(booking_id), life_s=settings.LIVE_STREAM_LIFE_S
    )
    return _event_stream(request, follower, since)


@_stream_view
async def customer_events(request: HttpRequest) -> HttpResponse:
    since = _last_event_id(request)
    customer = await _customer(request)
    follower = CustomerFollower(
        customer_id=customer.pk,
        channel=live.customer_channel(customer.pk),
        life_s=settings.LIVE_STREAM_LIFE_S,
    )
    return _event_stream(request, follower, since)


async def _customer(request: HttpRequest):
    customer = await hub.db(selectors.stream_customer, request)
    if not customer.is_authenticated:
        raise exceptions.NotAuthenticated()
    return customer


def _last_event_id(request: HttpRequest) -> int | None:
    value = request.headers.get(LAST_EVENT_ID, "").strip()
    if not value:
        return None
    if not _EVENT_ID.fullmatch(value):
        raise ValidationFailed(
            f"The {LAST_EVENT_ID} header is not an event id of this stream.",
            fields={LAST_EVENT_ID: ["Send back the id of the last event received, a whole number."]},
        )
    return int(value)


def _event_stream(request: HttpRequest, follower: Follower, since: int | None) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_events(follower, since, request.path), content_type=sse.CONTENT_TYPE)
    # Proxies must pass each event on at once (nginx buffers a response unless told otherwise).
    response["X-Accel-Buffering"] = "no"
    return response


async def _events(follower: Follower, since: int | None, path: str) -> AsyncIterator[bytes]:
    # The headers and the reconnection delay go out at once: the client's stream is open.
    yield sse.retry(settings.LIVE_RETRY_MS)
    try:
        # Subscribed first, read second: a change committed in between is in one or the other.
        await hub.follow(follower)
        try:
            opening = await hub.db(follower.read)
        except DatabaseError as exc:
            # The 200 is out, so DatabaseUnavailableMiddleware cannot answer it 503: raised on,
            # the error would be the server's "Exception in ASGI application" with a traceback.
            # The stream ends; its client reconnects after `retry:` and gets the 503.
            if not database_errors.is_unavailable(exc):
                raise
            logger.warning(
                "database unavailable: stream ended",
                extra={"path": path, "error": one_line(exc), "cause": database_errors.cause_of(exc)},
            )
            return
        yield follower.opening(opening, since)
        while (chunk := await follower.next_chunk()) is not None:
            yield chunk
    finally:
        # Also when the client went away: under ASGI the server cancels this generator
        # (CancelledError at the await above), which then propagates.
        hub.unfollow(follower)
