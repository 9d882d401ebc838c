"""The `reference` wire protocol: JSON, Bearer auth, idempotency keys, lookup, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.clock import PartnerClock, from_store
from sandbox.faults import Faults
from sandbox.garbage import AMOUNTS, VERSIONS
from sandbox.ledger import (
    Change,
    Ledger,
    NewReservation,
    NotCancellable,
    NotFound,
    UnknownProduct,
)
from sandbox.store import Reservation
from sandbox.webhooks import ReservationOutbox
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

SERVER_ERRORS = (500, 502, 503, 504)
TIMESTAMPS = ("0001-01-01T00:00:00.000+00:00", "9999-12-31T23:59:59.999+00:00")
# The fields of a reservation object that `garbage_values_rate` spoils, answers and webhooks alike.
GARBAGE = {"version": VERSIONS, "created_at": TIMESTAMPS, "updated_at": TIMESTAMPS, "total_price": AMOUNTS}


def render(reservation: Reservation, clock: PartnerClock) -> dict[str, Any]:
    return {
        "id": reservation.id,
        "client_reference": reservation.client_reference,
        "product_id": reservation.product_id,
        "start_date": reservation.start_date,
        "end_date": reservation.end_date,
        "guests": reservation.guests,
        "total_price": reservation.total_price,
        "currency": reservation.currency,
        "status": reservation.status,
        "reason": reservation.reason,
        "version": reservation.version,
        "created_at": clock.rfc3339(reservation.created_at),
        "updated_at": clock.rfc3339(reservation.updated_at),
    }


def parse_new(body: dict[str, Any]) -> NewReservation:
    """400 for a malformed body, 422 for a well-formed one that makes no sense."""
    new = NewReservation(
        client_reference=text_field(body, "client_reference"),
        product_id=text_field(body, "product_id"),
        start_date=date_field(body, "start_date"),
        end_date=date_field(body, "end_date"),
        guests=int_field(body, "guests"),
        total_price=money_field(body, "total_price")[0],
        currency=currency_field(body, "currency"),
    )
    if new.end_date <= new.start_date:
        raise BadRequest("end_date must be after start_date", status=422)
    if new.guests < 1:
        raise BadRequest("guests must be at least 1", status=422)
    if money_field(body, "total_price")[1] < 0:
        raise BadRequest("total_price must not be negative", status=422)
    return new


def fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ReferenceProtocol:
    name = "reference"
    garbage = GARBAGE

    def __init__(
        self,
        *,
        ledger: Ledger,
        outbox: ReservationOutbox | None,
        faults: Faults,
        clock: PartnerClock,
        lookup_by_reference: bool = True,
    ) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.faults = faults
        self.clock = clock
        self.lookup_by_reference = lookup_by_reference

    def routes(self) -> list[Route]:
        return [
            Route("/v1/reservations", ("POST",), "create", self.create, write=True, late_pause=True),
            Route("/v1/reservations", ("GET",), "lookup", self.lookup),
            Route("/v1/reservations/<reservation_id>", ("GET",), "get", self.get),
            Route("/v1/reservations/<reservation_id>/cancel", ("POST",), "cancel", self.cancel, write=True),
        ]

    def authenticate(self, request: Request, api_key: str) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    def error(self, status: int, code: str, message: str) -> Response:
        return json_response(status, {"error": code, "message": message})

    def auth_failure(self) -> Response:
        return self.error(401, "unauthorized", "invalid API key")

    def reservation_objects(self, body: Any) -> list[dict[str, Any]]:
        """The reservations in a success body: the object itself, or a lookup's `data`."""
        return body.get("data", [body])

    def rate_limited(self, retry_after_s: int) -> Response:
        response = self.error(429, "rate_limited", "too many requests")
        response.headers["Retry-After"] = str(retry_after_s)
        return response

    def server_error(self) -> Response:
        status = self.faults.choice(SERVER_ERRORS)
        return self.error(status, "server_error", "the partner failed; try again later")

    def server_error_after_commit(self, request: Request, committed: Response) -> Response:
        return self.server_error()

    def render(self, reservation: Reservation) -> dict[str, Any]:
        return render(reservation, self.clock)

    def ground_truth(self, reservation: Reservation, history: list[Any]) -> dict[str, Any]:
        return {
            **self.render(reservation),
            "idempotency_key": reservation.idempotency_key,
            "vanished_at": reservation.vanished_at and self.clock.rfc3339(reservation.vanished_at),
            "history": [
                {
                    "version": h["version"],
                    "status": h["status"],
                    "reason": h["reason"],
                    "at": self.clock.rfc3339(from_store(h["at"])),
                    "cause": h["cause"],
                    "changes": changes_json(h["changes"]),
                }
                for h in history
            ],
        }

    # --- handlers ------------------------------------------------------------------------
    def create(self, request: Request, ctx: CallContext) -> Response:
        try:
            body = read_json_object(request)
            new = parse_new(body)
        except BadRequest as exc:
            ctx.pause()
            return self.error(exc.status, exc.code, exc.message)
        try:
            self.ledger.check_product(new.product_id)
        except UnknownProduct:
            ctx.pause()
            return self.error(422, "unknown_product", f"no product {new.product_id!r}")
        key = request.headers.get("Idempotency-Key")
        if key and not self.faults.settings.honour_idempotency_keys:
            self.ledger.store.bump("faults", "idempotency_key_ignored")
            key = None
        if not key:
            ctx.pause()
            return self._created(self.ledger.create(new))
        claim = self.ledger.claim_key(key, fingerprint(body))
        ctx.pause()  # inside the claim: a repeat arriving now sees the key in flight
        if claim.kind == "reused":
            return self.error(
                422, "idempotency_key_reused", "this Idempotency-Key was used with another body"
            )
        if claim.kind == "in_flight":
            return self.error(
                409, "request_in_progress", "a request with this Idempotency-Key is in progress"
            )
        if claim.kind == "done":
            assert claim.reservation is not None
            return json_response(200, self.render(claim.reservation))
        try:
            change = self.ledger.create(new, idempotency_key=key)
        except BaseException:
            self.ledger.release_key(key)
            raise
        return self._created(change)

    def _created(self, change: Change) -> Response:
        if change.inline_event and self.outbox is not None:
            self.outbox.deliver_inline(change.inline_event)
        return json_response(201, self.render(change.reservation))

    def lookup(self, request: Request, ctx: CallContext) -> Response:
        if not self.lookup_by_reference:
            return self.error(404, "not_found", "lookup by client_reference is not supported")
        client_reference = request.args.get("client_reference")
        if not client_reference:
            return self.error(400, "invalid_request", "client_reference is required")
        found = self.ledger.by_client_reference(client_reference)
        return json_response(200, {"data": [self.render(r) for r in found]})

    def get(self, request: Request, ctx: CallContext, reservation_id: str) -> Response:
        reservation = self.ledger.get(reservation_id)
        if reservation is None:
            return self.error(404, "not_found", f"no reservation {reservation_id}")
        return json_response(200, self.render(reservation))

    def cancel(self, request: Request, ctx: CallContext, reservation_id: str) -> Response:
        try:
            change = self.ledger.cancel(reservation_id)
        except NotFound:
            return self.error(404, "not_found", f"no reservation {reservation_id}")
        except NotCancellable:
            return self.error(409, "not_cancellable", "a rejected reservation cannot be cancelled")
        return json_response(200, self.render(change.reservation))
