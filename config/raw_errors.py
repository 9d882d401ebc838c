"""The one error shape (`config.errors`) for answers written below Django: the dev router's own,
and gunicorn's to a request it refuses before any application sees it (an over-long URL or
header, a request line it cannot read). Nothing of Django here: gunicorn's master imports it
before any settings exist."""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

# A service that cannot answer for a moment: 503 with Retry-After (UNAVAILABLE_RETRY_AFTER_S; this
# is its default) and these words, from Django (config.middleware) and from the dev router alike.
UNAVAILABLE_RETRY_AFTER_S = 5
UNAVAILABLE_MESSAGE = "The service is briefly unavailable; retry after Retry-After seconds."

# Our words for what the HTTP servers refuse on their own; gunicorn's are about its parser.
_MESSAGES = {
    HTTPStatus.REQUEST_URI_TOO_LONG: "The request's URL is too long.",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "The request's headers are too large.",
}


def status_code_name(status: int) -> str:
    """The error code of a status known only by its number: `404` -> `not_found`."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_message(status: int, reason: str, detail: str = "") -> str:
    if status in _MESSAGES:
        return _MESSAGES[HTTPStatus(status)]
    return f"{reason}: {detail}" if detail else f"{reason}."


def http_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 answer, closing the connection, with the error in the one shape."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def gunicorn_write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Stands in for `gunicorn.util.write_error` (gunicorn.conf.py): the same status, our shape
    instead of its HTML page."""
    from gunicorn import util

    answer = http_error(status_int, status_code_name(status_int), error_message(status_int, reason, mesg))
    util.write_nonblock(sock, answer)
