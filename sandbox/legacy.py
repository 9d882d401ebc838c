"""The `legacy` wire protocol: X-Api-Key, no idempotency, no webhooks, local naive times.

Every POST creates a booking. The change listing (ordered by `modified`, 100 per page) is the
only way a client finds a booking whose POST timed out. Transient failures are `503`; a rate
limit is a `503` with `Retry-After` too, since this older partner documents no `429`; a rotated
key is a `403`. A booking (GET, listing item) echoes its terms (`from`, `to`, `pax`, `amount`,
`ccy`), as the partner holds them now: the only way a client sees a silent amendment.
"""

from __future__ import annotations

import hmac
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.clock import PartnerClock, from_store
from sandbox.garbage import AMOUNTS
from sandbox.ledger import Ledger, NewReservation, NotCancellable, NotFound, UnknownProduct
from sandbox.store import Reservation
from sandbox.wire import (
    BadRequest,
    CallContext,
    Route,
    changes_json,
    currency_field,
    date_field,
    int_field,
    json_response,
    money_field,
    read_json_object,
    text_field,
)

STATES = {"pending": "PENDING", "confirmed": "OK", "rejected": "FAIL", "cancelled": "CXL"}
MESSAGES = {"PENDING": "awaiting confirmation", "OK": "confirmed", "FAIL": "sold out"}
PAGE_SIZE = 100
# Stored column -> legacy wire name, for the fields an amendment may change.
WIRE_NAMES = {"start_date": "from", "end_date": "to", "guests": "pax", "total_price": "amount"}
# No version field here: only times and amounts can be out of range.
GARBAGE = {"modified": ("0001-01-01 00:00:00", "9999-12-31 23:59:59"), "amount": AMOUNTS}


def parse_new(body: dict[str, Any]) -> NewReservation:
    new = NewReservation(
        client_reference=text_field(body, "ref"),
        product_id=text_field(body, "item"),
        start_date=date_field(body, "from"),
        end_date=date_field(body, "to"),
        guests=int_field(body, "pax"),
        total_price=money_field(body, "amount")[0],
        currency=currency_field(body, "ccy"),
    )
    if new.end_date <= new.start_date:
        raise BadRequest("to must be after from")
    if new.guests < 1:
        raise BadRequest("pax must be at least 1")
    if money_field(body, "amount")[1] < 0:
        raise BadRequest("amount must not be negative")
    return new


class LegacyProtocol:
    name = "legacy"
    garbage = GARBAGE

    def __init__(self, *, ledger: Ledger, clock: PartnerClock) -> None:
        self.ledger = ledger
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("/api/bookings", ("POST",), "create", self.create, write=True),
            Route("/api/bookings", ("GET",), "changes", self.changes),
            Route("/api/bookings/<int:booking_no>", ("GET",), "get", self.get),
            Route("/api/bookings/<int:booking_no>", ("DELETE",), "cancel", self.cancel, write=True),
        ]

    def authenticate(self, request: Request, api_key: str) -> bool:
        given = request.headers.get("X-Api-Key", "")
        return hmac.compare_digest(given.encode(), api_key.encode())

    def error(self, status: int, code: str, message: str) -> Response:
        return json_response(status, {"err": message})

    def auth_failure(self) -> Response:
        return self.error(403, "forbidden", "api key not valid")

    def reservation_objects(self, body: Any) -> list[dict[str, Any]]:
        """The bookings in a success body: a listing's `items`, or the answer itself."""
        return body.get("items", [body])

    def rate_limited(self, retry_after_s: int) -> Response:
        response = self.error(503, "rate_limited", "too many requests, slow down")
        response.headers["Retry-After"] = str(retry_after_s)
        return response

    def server_error(self) -> Response:
        return self.error(503, "server_error", "service unavailable")

    def server_error_after_commit(self, request: Request, committed: Response) -> Response:
        return self.server_error()

    def render(self, reservation: Reservation) -> dict[str, Any]:
        return {
            "booking_no": reservation.seq,
            "ref": reservation.client_reference,
            "state": STATES[reservation.status],
            "modified": self.clock.local_naive(reservation.updated_at),
            "from": reservation.start_date,
            "to": reservation.end_date,
            "pax": reservation.guests,
            "amount": reservation.total_price,
            "ccy": reservation.currency,
        }

    def ground_truth(self, reservation: Reservation, history: list[Any]) -> dict[str, Any]:
        vanished = reservation.vanished_at
        return {
            **self.render(reservation),
            "item": reservation.product_id,
            "created": self.clock.local_naive(reservation.created_at),
            "modified_utc": self.clock.rfc3339(reservation.updated_at),
            "vanished": vanished and self.clock.local_naive(vanished),
            "vanished_utc": vanished and vanished.isoformat(timespec="milliseconds"),
            "history": [
                {
                    "version": h["version"],
                    "state": STATES[h["status"]],
                    "modified": self.clock.local_naive(from_store(h["at"])),
                    "at_utc": from_store(h["at"]).isoformat(timespec="milliseconds"),
                    "cause": h["cause"],
                    "changes": changes_json(h["changes"], WIRE_NAMES),
                }
                for h in history
            ],
        }

    # --- handlers ------------------------------------------------------------------------
    def create(self, request: Request, ctx: CallContext) -> Response:
        try:
            new = parse_new(read_json_object(request))
            change = self.ledger.create(new)
        except BadRequest as exc:
            return self.error(400, exc.code, exc.message)
        except UnknownProduct as exc:
            return self.error(400, "unknown_product", f"unknown item {exc}")
        state = STATES[change.reservation.status]
        return json_response(
            200,
            {"booking_no": change.reservation.seq, "state": state, "msg": MESSAGES[state]},
        )

    def get(self, request: Request, ctx: CallContext, booking_no: int) -> Response:
        reservation = self.ledger.get_by_seq(booking_no)
        if reservation is None:
            return self.error(404, "not_found", "no such booking")
        return json_response(200, self.render(reservation))

    def changes(self, request: Request, ctx: CallContext) -> Response:
        since_text = request.args.get("modified_since")
        try:
            since = self.clock.parse_local_naive(since_text) if since_text else None
        except ValueError:
            return self.error(400, "invalid_request", "modified_since must be YYYY-MM-DD HH:MM:SS")
        try:
            page = int(request.args.get("page", "1"))
            if page < 1:
                raise ValueError(page)
        except ValueError:
            return self.error(400, "invalid_request", "page must be a positive integer")
        # One extra row tells whether another page follows.
        rows = self.ledger.changed_since(since, (page - 1) * PAGE_SIZE, PAGE_SIZE + 1)
        return json_response(
            200,
            {
                "items": [self.render(r) for r in rows[:PAGE_SIZE]],
                "next_page": page + 1 if len(rows) > PAGE_SIZE else None,
            },
        )

    def cancel(self, request: Request, ctx: CallContext, booking_no: int) -> Response:
        reservation = self.ledger.get_by_seq(booking_no)
        if reservation is None:
            return self.error(404, "not_found", "no such booking")
        try:
            change = self.ledger.cancel(reservation.id)
        except NotFound:
            return self.error(404, "not_found", "no such booking")
        except NotCancellable:
            return self.error(400, "not_cancellable", "booking failed, nothing to cancel")
        return json_response(200, {"booking_no": change.reservation.seq, "state": "CXL"})
