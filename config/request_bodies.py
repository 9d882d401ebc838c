"""Request bodies below Django: a chunked one read to its end, an unread one dropped before the
connection closes.

*Chunked bodies* (`Transfer-Encoding: chunked`, no Content-Length), as Django sees bodies with a
length.

Django's WSGI request reads `CONTENT_LENGTH` only: a body without one is read as empty, so a
chunked booking was told "This field is required." for every field it sent, a chunked body of
any size escaped the 413, and a correctly signed chunked webhook failed its signature (an HMAC
over b""). gunicorn decodes the chunks and ends `wsgi.input` at the body's end
(`wsgi.input_terminated`), so the body is read here, at most one byte past
`DATA_UPLOAD_MAX_MEMORY_SIZE` (the largest body Django reads at all), and handed on with its
length. A body over that limit goes on cut at limit + 1 bytes and declared so (a lower bound of
its size): whatever refuses a declared oversized body refuses it the same way (the API's `413`,
the webhook receivers' `413` with its first bytes as evidence), and smaller limits (a webhook's
`WEBHOOK_MAX_BYTES`) apply to the whole bytes as to any body. A server that does not end the
input at the body's end cannot be read to it: `411 Length Required`, never an empty body.

*Unread bodies.* A client sends its whole body before it reads the answer (http.client, requests,
curl). A body the application refused without reading it all (a `413`, a `401` before the body
was needed) is still arriving when the answer is written, and a connection closed with bytes
unread is reset by the kernel: the client gets a broken pipe or a reset instead of the answer.
gunicorn drops at most 64 KiB of what is left before it closes, so what the application left
unread is read and dropped here, after the answer, up to `DRAIN_AT_MOST` bytes or
`DRAIN_FOR_S` seconds, each read bounded by the time left on gunicorn's socket (a client that
declares a large body and stops sending holds the thread no longer); a client sending more than
that still gets the reset.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings

from config.errors import error_body

_READ_BYTES = 64 * 1024
DRAIN_AT_MOST = 16 * 1024 * 1024
DRAIN_FOR_S = 5.0

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestBodyMiddleware:
    """WSGI middleware around Django's application (config/wsgi.py)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        source = environ.get("wsgi.input")
        has_body = _declared_length(environ) > 0
        if _chunked(environ) and not environ.get("CONTENT_LENGTH"):
            if not environ.get("wsgi.input_terminated"):
                return _length_required(start_response)
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = _read(source, None if limit is None else limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            has_body = True
        response = self.app(environ, start_response)
        # Only a request with a body is wrapped: the others keep the server's file wrapper
        # (sendfile for static files).
        if not has_body or source is None:
            return response
        return _DrainedAfter(response, source, environ.get("gunicorn.socket"))


class _DrainedAfter:
    """The application's answer, then what is left of the request body read and dropped."""

    def __init__(self, response: Iterable[bytes], source: Any, connection: socket.socket | None) -> None:
        self.response = response
        self.source = source
        self.connection = connection

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.response)

    def close(self) -> None:
        try:
            if hasattr(self.response, "close"):
                self.response.close()
        finally:
            _drain(self.source, self.connection)


def _drain(stream: Any, connection: socket.socket | None) -> None:
    """Read and drop at most DRAIN_AT_MOST bytes for at most DRAIN_FOR_S seconds. Each read waits
    on the socket no longer than the time left (gunicorn's socket has no timeout of its own), so
    a client that stops sending holds the thread for DRAIN_FOR_S at most. Without the socket (not
    gunicorn) there is no bound on a read: nothing is drained."""
    if connection is None:
        return
    deadline = time.monotonic() + DRAIN_FOR_S
    drained = 0
    before = connection.gettimeout()
    try:
        while drained < DRAIN_AT_MOST and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            part = stream.read(_READ_BYTES)
            if not part:
                return
            drained += len(part)
    except Exception:  # noqa: BLE001 - best effort: the answer is sent; a timeout or a client gone ends it
        return
    finally:
        with contextlib.suppress(OSError):
            connection.settimeout(before)


def _declared_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _chunked(environ: dict[str, Any]) -> bool:
    codings = environ.get("HTTP_TRANSFER_ENCODING", "")
    return "chunked" in (coding.strip().lower() for coding in codings.split(","))


def _read(stream: Any, most: int | None) -> bytes:
    """The stream to its end, or its first `most` bytes."""
    parts, size = [], 0
    while most is None or size < most:
        part = stream.read(_READ_BYTES if most is None else min(_READ_BYTES, most - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _length_required(start_response: Callable[..., Any]) -> list[bytes]:
    message = "Send the request body with a Content-Length: this server cannot read a chunked one."
    body = json.dumps(error_body("length_required", message)).encode()
    start_response(
        "411 Length Required",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
