"""Stripe's wire format, as its official SDK speaks it: form-encoded nested parameters in, JSON
objects and the error object out, list objects, and the `Stripe-Signature` webhook scheme.

Parameters arrive as `name[sub][0]=value` pairs (the SDK's `_api_encode`); `decode` turns them
back into dicts and lists. Every checker below raises `ApiError` with Stripe's own type, code,
param and wording, so a client's error handling meets what it will meet in production.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from iso4217 import Currency
from werkzeug.wrappers import Response

from sandbox.webhooks import Signer

# The API version this sandbox speaks (the pinned SDK's default); events carry it.
API_VERSION = "2026-10-28.endive"
ID_ALPHABET = string.ascii_letters + string.digits
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_TEXT = 5000
MAX_LIMIT = 100
DEFAULT_LIMIT = 10

_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
# The currencies this provider knows, lower-case as Stripe writes them: ISO 4217's active codes that
# have a minor unit (the pinned `iso4217` package's copy of ISO's list), which is close to Stripe's
# own list, not equal to it: Stripe also refuses a few of these (fund codes such as usn). No
# currency (xxx), metals and units of account are not money here.
CURRENCIES = frozenset(c.code.lower() for c in Currency if c.exponent is not None)
# Stripe's refusal lists what it supports, its home currency first.
_CURRENCIES_LISTED = ", ".join(["usd", *sorted(CURRENCIES - {"usd"})])
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class ApiError(Exception):
    """An answer other than success: Stripe's `{"error": {...}}` with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"type": type, "message": message}
        for name, value in (("code", code), ("param", param), ("decline_code", decline_code)):
            if value is not None:
                self.error[name] = value
        if code is not None:
            self.error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        self.error.update(extra or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.error}


def new_id(prefix: str) -> str:
    return f"{prefix}_{''.join(secrets.choice(ID_ALPHABET) for _ in range(24))}"


class StripeResponse(Response):
    # The idempotency key this answer was saved under, when its request ran (a fault after
    # commit then replaces the saved answer too); None for a replay, a refusal or a read.
    saved_under_key: str | None = None


def response(
    status: int,
    body: dict[str, Any] | str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> StripeResponse:
    """A JSON answer with Stripe's `Request-Id`; a `str` body is sent byte for byte (a replay)."""
    text = body if isinstance(body, str) else dumps(body)
    answer = StripeResponse(text, status=status, content_type="application/json")
    answer.headers["Request-Id"] = request_id or new_id("req")
    answer.headers.update(headers or {})
    return answer


def error_response(error: ApiError, *, request_id: str | None = None) -> StripeResponse:
    return response(error.status, error.body(), request_id=request_id)


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


# --- parameters ------------------------------------------------------------------------------
def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0]=x` pairs into nested dicts and lists (`[]` appends, as `[n]` indexes)."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        match = _NAME.match(name)
        if match is None:
            raise ApiError(400, f"Invalid parameter name: {name}", param=name)
        path = [match[1], *_SEGMENT.findall(match[2])]
        node = root
        for segment in path[:-1]:
            child = node.setdefault(str(len(node)) if segment == "" else segment, {})
            if not isinstance(child, dict):
                raise _given_twice(name)
            node = child
        key = str(len(node)) if path[-1] == "" else path[-1]
        if key in node:
            raise _given_twice(name)
        node[key] = value
    return _listify(root)


def _given_twice(name: str) -> ApiError:
    return ApiError(
        400, f"Invalid parameter: {name} is given twice, or both as a value and a hash", param=name
    )


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def only(params: dict[str, Any], allowed: Sequence[str]) -> None:
    for name in params:
        if name not in allowed:
            raise ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def missing(name: str) -> ApiError:
    return ApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)


def integer(params: dict[str, Any], name: str, *, required: bool = False, minimum: int = 0) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,18}", value):
        raise ApiError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
    number = int(value)
    if number < minimum:
        raise ApiError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    return number


def boolean(params: dict[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise ApiError(400, f"Invalid boolean: {value}", param=name)
    return value == "true"


def text(params: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ApiError(400, f"Invalid string: {name} must be at most {MAX_TEXT} characters", param=name)
    return value


def currency(params: dict[str, Any], name: str = "currency") -> str:
    """A currency this provider knows (`CURRENCIES`), in any case; Stripe's refusal otherwise,
    naming it lower-case and listing what is supported."""
    given = text(params, name, required=True)
    assert given is not None
    if given.lower() not in CURRENCIES:
        raise ApiError(
            400,
            f"Invalid currency: {given.lower()}. Stripe currently supports these currencies: "
            f"{_CURRENCIES_LISTED}.",
            param=name,
        )
    return given.lower()


def choice(params: dict[str, Any], name: str, choices: Sequence[str]) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if value not in choices:
        listed = ", ".join(choices[:-1]) + f", or {choices[-1]}"
        raise ApiError(400, f"Invalid {name}: must be one of {listed}", param=name)
    return value


def text_list(params: dict[str, Any], name: str) -> list[str] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"Invalid array: {name}", param=name)
    return value


def hash_param(params: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid hash: {name}", param=name)
    return value


def metadata(params: dict[str, Any]) -> dict[str, str] | None:
    """Stripe's limits: 50 keys, keys of 40 characters, values of 500; an empty value unsets its key."""
    if params.get("metadata") == "":
        return {}
    value = hash_param(params, "metadata")
    if value is None:
        return None
    if len(value) > MAX_METADATA_KEYS:
        raise ApiError(400, "Invalid metadata: metadata may have at most 50 keys", param="metadata")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ApiError(400, f"Invalid metadata: metadata[{key}] must be a string", param="metadata")
        if len(key) > MAX_METADATA_KEY or len(item) > MAX_METADATA_VALUE:
            raise ApiError(
                400,
                "Invalid metadata: keys may be at most 40 characters and values at most 500",
                param=f"metadata[{key}]",
            )
    return value


def expand(params: dict[str, Any], expandable: Sequence[str]) -> list[str]:
    paths = text_list(params, "expand") or []
    for path in paths:
        if path not in expandable:
            raise ApiError(400, f"This property cannot be expanded ({path}).", param="expand")
    return paths


def created_filter(params: dict[str, Any]) -> dict[str, int]:
    """`created=<ts>` (exactly) or `created[gt|gte|lt|lte]=<ts>`, as {operator: ts}."""
    value = params.get("created")
    if value is None:
        return {}
    if isinstance(value, str):
        return {"eq": integer(params, "created") or 0}
    if not isinstance(value, dict):
        raise ApiError(400, "Invalid created: must be an integer or a hash", param="created")
    only(value, ("gt", "gte", "lt", "lte"))
    return {op: integer(value, op) or 0 for op in value}


def page(params: dict[str, Any]) -> tuple[int, str | None, str | None]:
    """(limit, starting_after, ending_before) of a list call."""
    limit = integer(params, "limit")
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400,
            f"Invalid limit: must be between 1 and {MAX_LIMIT}",
            code="parameter_invalid_integer",
            param="limit",
        )
    starting_after = text(params, "starting_after")
    ending_before = text(params, "ending_before")
    if starting_after and ending_before:
        raise ApiError(400, "You may only specify one of these parameters: ending_before, starting_after.")
    return limit or DEFAULT_LIMIT, starting_after, ending_before


def list_object(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    """What a key is bound to: the endpoint and its parameters (in any order)."""
    canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- webhooks --------------------------------------------------------------------------------
def signature_header(secret: str, timestamp: int, payload: str) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed with the whole whsec_ secret>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def stripe_signer(secret: str) -> Signer:
    def sign(event_id: str, sent_at: datetime, payload: str) -> dict[str, str]:
        return {
            "Stripe-Signature": signature_header(secret, math.floor(sent_at.timestamp()), payload),
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }

    return sign
