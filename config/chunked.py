"""Request bodies sent chunked (`Transfer-Encoding: chunked`, no Content-Length), as Django sees
bodies with a length.

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
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from config.errors import error_body

_READ_BYTES = 64 * 1024

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ChunkedBodyMiddleware:
    """WSGI middleware around Django's application (config/wsgi.py)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _chunked(environ) and not environ.get("CONTENT_LENGTH"):
            if not environ.get("wsgi.input_terminated"):
                return _length_required(start_response)
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = _read(environ["wsgi.input"], None if limit is None else limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


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
