"""What both wire protocols share: JSON responses, routes, the per-call context, the interface."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from werkzeug.wrappers import Request, Response

from sandbox.store import Reservation

CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_TEXT = 200


def json_response(status: int, data: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status=status,
        headers=headers,
        content_type="application/json",
    )


class BadRequest(Exception):
    """A request the partner refuses; `status` 400 (malformed) or 422 (semantically invalid)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def read_json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise BadRequest(f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def date_field(body: dict[str, Any], name: str) -> date:
    value = body.get(name)
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD") from exc


def int_field(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    return value


def money_field(body: dict[str, Any], name: str) -> tuple[str, Decimal]:
    value = body.get(name)
    try:
        if not isinstance(value, str):
            raise InvalidOperation(value)
        amount = Decimal(value)
        if not amount.is_finite():
            raise InvalidOperation(value)
    except InvalidOperation as exc:
        raise BadRequest(f'{name} must be a decimal string such as "360.00"') from exc
    return value, amount


def changes_json(stored: str | None, names: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """An amendment's stored `{column: [old, new]}` as `{field: {"old", "new"}}`, in wire names."""
    if stored is None:
        return None
    names = names or {}
    return {
        names.get(column, column): {"old": old, "new": new}
        for column, (old, new) in json.loads(stored).items()
    }


def currency_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not CURRENCY.match(value):
        raise BadRequest(f"{name} must be an ISO 4217 code such as EUR")
    return value


@dataclass
class CallContext:
    """Per call: the injected latency, taken once, where the handler chooses (default: first)."""

    latency_s: float
    stopping: threading.Event
    _paused: bool = field(default=False)

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            if self.latency_s > 0:
                self.stopping.wait(self.latency_s)  # shutdown cuts it short


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]
    endpoint: str
    handler: Handler
    write: bool = False
    # The handler calls ctx.pause() itself (reference create: inside the idempotency window).
    late_pause: bool = False


class WireProtocol(Protocol):
    name: str
    garbage: Mapping[str, Sequence[object]]  # fields `garbage_values_rate` spoils, and with what

    def routes(self) -> list[Route]: ...

    def authenticate(self, request: Request, api_key: str) -> bool: ...

    def error(self, status: int, code: str, message: str) -> Response: ...

    def rate_limited(self, retry_after_s: int) -> Response: ...

    def server_error(self) -> Response: ...

    def server_error_after_commit(self, request: Request, committed: Response) -> Response:
        """The 5xx that replaces `committed`, the answer of a call whose change was made."""
        ...

    def auth_failure(self) -> Response: ...

    def reservation_objects(self, body: Any) -> list[dict[str, Any]]: ...


class ReservationWire(WireProtocol, Protocol):
    """A protocol over the shared reservations (`reference`, `legacy`)."""

    def ground_truth(self, reservation: Reservation, history: list[Any]) -> dict[str, Any]: ...
