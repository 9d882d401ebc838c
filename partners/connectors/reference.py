"""The `reference` protocol (docs/partner-protocols.md §1): JSON, Bearer auth, optional idempotency
keys, lookup by client reference, signed webhooks.

Classification per operation (what is not listed falls back to `http.classify_status`):
- create: 200/201 -> ok, or rejected when the reservation's status is rejected;
  409 request_in_progress, 408, 429, never sent -> transient (409 retries after 1 s by default);
  5xx, any other 409, an unreadable 2xx, sent without a complete answer -> ambiguous;
  400, 401, 403, 404, 422 (idempotency_key_reused included) -> permanent.
- get: 200 -> ok; 404 -> ok without a reservation, error_code not_found;
  5xx, 408, 429, an unreadable 2xx, any transport failure -> transient; other 4xx -> permanent.
- lookup: without capability `lookup_by_reference` -> permanent, no call; 200 {"data": [...]}
  -> ok with every reservation; 404 -> permanent (never read as "none found");
  5xx, 408, 429, an unreadable 2xx, any transport failure -> transient; other 4xx -> permanent.
- cancel: 200 -> ok; 409 not_cancellable, 404 not_found, other 4xx -> permanent;
  408, 429, never sent -> transient; 5xx, other 409, an unreadable 2xx, sent without a
  complete answer -> ambiguous (a repeated cancel is harmless at the partner).
- list_changes: permanent, not in this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from partners.connectors import bounds
from partners.connectors.base import CallResult, CreateRequest, ReservationSnapshot, Terms
from partners.connectors.http import Exchange, MalformedPayload, money_string, perform
from partners.models import Capability, Outcome, Partner, ReservationStatus

WEBHOOK_EVENT_PREFIX = "reservation."
DEFAULT_IN_PROGRESS_RETRY_S = 1.0


__all__ = [
    "MalformedPayload",
    "ReferenceConnector",
    "UnsupportedEvent",
    "WebhookEvent",
    "parse_reservation",
    "parse_webhook",
    "parse_webhook_payload",
    "webhook_partner_time",
]


class UnsupportedEvent(MalformedPayload):
    """A well-formed webhook of a type we do not handle (acknowledge it, do not apply it)."""


@dataclass(frozen=True)
class WebhookEvent:
    type: str
    timestamp: datetime | None  # the partner's clock when it emitted the event, aware
    reservation: ReservationSnapshot


class ReferenceConnector:
    def __init__(self, partner: Partner) -> None:
        self.partner = partner
        self._auth = {"Authorization": f"Bearer {partner.resolved_api_key()}"}

    def __repr__(self) -> str:
        return f"ReferenceConnector({self.partner.code})"

    def create(self, request: CreateRequest, *, idempotency_key: str) -> CallResult:
        headers = {}
        if self.partner.has(Capability.IDEMPOTENCY_KEYS):
            headers["Idempotency-Key"] = idempotency_key
        exchange = self._call(
            "POST", "/v1/reservations", write=True, json_body=create_body(request), headers=headers
        )
        if exchange.failure is not None:
            return exchange.transport_failure()
        if exchange.is_success:
            return _reservation_result(exchange, rejected_is_outcome=True)
        if exchange.status == 409:
            if exchange.error_code == "request_in_progress":
                # The first request with this key is still running: nothing new was created.
                retry_after = exchange.retry_after_s
                return exchange.result(
                    Outcome.TRANSIENT,
                    retry_after_s=DEFAULT_IN_PROGRESS_RETRY_S if retry_after is None else retry_after,
                )
            return exchange.result(Outcome.AMBIGUOUS)
        return exchange.by_status()

    def get(self, partner_ref: str) -> CallResult:
        exchange = self._call("GET", f"/v1/reservations/{_segment(partner_ref)}", write=False)
        if exchange.failure is not None:
            return exchange.transport_failure()
        if exchange.is_success:
            return _reservation_result(exchange)
        if exchange.status == 404:
            return exchange.result(Outcome.OK, error="", error_code="not_found")
        return exchange.by_status()

    def lookup(self, client_reference: str) -> CallResult:
        if not self.partner.has(Capability.LOOKUP_BY_REFERENCE):
            return CallResult(
                outcome=Outcome.PERMANENT,
                error="lookup by client reference not supported by this partner",
                error_code="not_supported",
            )
        exchange = self._call(
            "GET", "/v1/reservations", write=False, params={"client_reference": client_reference}
        )
        if exchange.failure is not None:
            return exchange.transport_failure()
        if exchange.is_success:
            return _list_result(exchange)
        if exchange.status == 404:
            # With the capability a 404 is a wrong URL or a partner without the feature, never
            # "nothing found": reading it as empty could let a duplicate be created.
            return exchange.result(Outcome.PERMANENT, error_code=exchange.error_code or "not_found")
        return exchange.by_status()

    def list_changes(self, *, since: datetime, page: int = 1) -> CallResult:
        return CallResult(
            outcome=Outcome.PERMANENT,
            error="change listing not supported by the reference protocol",
            error_code="not_supported",
        )

    def cancel(self, partner_ref: str) -> CallResult:
        exchange = self._call("POST", f"/v1/reservations/{_segment(partner_ref)}/cancel", write=True)
        if exchange.failure is not None:
            return exchange.transport_failure()
        if exchange.is_success:
            return _reservation_result(exchange)
        if exchange.status == 409:
            if exchange.error_code == "not_cancellable":
                return exchange.result(Outcome.PERMANENT)
            return exchange.result(Outcome.AMBIGUOUS)
        if exchange.status == 404:
            return exchange.result(Outcome.PERMANENT, error_code=exchange.error_code or "not_found")
        return exchange.by_status()

    def _call(
        self,
        method: str,
        path: str,
        *,
        write: bool,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Exchange:
        return perform(
            self.partner,
            method,
            path,
            write=write,
            auth_headers=self._auth,
            json_body=json_body,
            params=params,
            headers=headers,
        )


def create_body(request: CreateRequest) -> dict[str, Any]:
    return {
        "client_reference": request.client_reference,
        "product_id": request.product_id,
        "start_date": request.start_date.isoformat(),
        "end_date": request.end_date.isoformat(),
        "guests": int(request.guests),
        "total_price": money_string(request.total_price),
        "currency": request.currency,
    }


def _segment(value: str) -> str:
    # A partner id goes into the path as one segment, whatever characters it holds.
    return quote(str(value), safe="")


def _reservation_result(exchange: Exchange, *, rejected_is_outcome: bool = False) -> CallResult:
    try:
        snapshot = parse_reservation(exchange.body)
    except MalformedPayload as exc:
        return exchange.refused(exc)
    if rejected_is_outcome and snapshot.status == ReservationStatus.REJECTED:
        return exchange.result(
            Outcome.REJECTED, reservations=(snapshot,), error=snapshot.reason or "rejected"
        )
    return exchange.result(Outcome.OK, reservations=(snapshot,))


def _list_result(exchange: Exchange) -> CallResult:
    body = exchange.body
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return exchange.refused(MalformedPayload('expected {"data": [...]}'))
    try:
        # All or nothing: silently skipping one entry could hide the reservation we look for.
        snapshots = tuple(parse_reservation(item) for item in body["data"])
    except MalformedPayload as exc:
        return exchange.refused(exc)
    return exchange.result(Outcome.OK, reservations=snapshots)


def parse_reservation(data: Any) -> ReservationSnapshot:
    """A reference reservation object as a snapshot; extra fields are kept in `raw` only.

    Every value is read through `bounds`: one out of range refuses the whole object.
    """
    if not isinstance(data, dict):
        raise MalformedPayload("reservation is not a JSON object")
    if data.get("id") in (None, ""):
        raise MalformedPayload("reservation has no id")
    return ReservationSnapshot(
        partner_ref=bounds.identifier(data["id"], field="id"),
        client_reference=bounds.text(data.get("client_reference"), field="client_reference"),
        status=_status(data.get("status")),
        reason=bounds.text(data.get("reason"), field="reason"),
        version=bounds.version(data.get("version")),
        created_at=parse_timestamp(data.get("created_at"), field="created_at"),
        modified_at=parse_timestamp(data.get("updated_at"), field="updated_at"),
        terms=Terms(
            start_date=bounds.stay_date(data.get("start_date"), field="start_date"),
            end_date=bounds.stay_date(data.get("end_date"), field="end_date"),
            guests=bounds.guests(data.get("guests")),
            total_price=bounds.amount(data.get("total_price"), field="total_price"),
            currency=bounds.currency(data.get("currency")),
        ),
        raw=bounds.payload(data, field="reservation"),
    )


def _status(value: Any) -> ReservationStatus:
    if isinstance(value, str):
        try:
            return ReservationStatus(value.strip().lower())
        except ValueError:
            pass
    raise MalformedPayload(f"unknown reservation status {value!r}")


def parse_timestamp(value: Any, *, field: str = "timestamp") -> datetime | None:
    """An RFC 3339 time with offset ("Z" too) as an aware datetime; None when absent.

    A time without an offset is refused: guessing its zone would misorder observations.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{field} is not a string: {value!r}")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedPayload(f"{field} is not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise MalformedPayload(f"{field} has no UTC offset: {value!r}")
    return bounds.moment(parsed, field=field)


def parse_webhook(body: Any) -> WebhookEvent:
    """A webhook body `{"type": "reservation.updated", "timestamp": ..., "data": {...}}`."""
    if not isinstance(body, dict):
        raise MalformedPayload("webhook body is not a JSON object")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedPayload("webhook body has no type")
    if not event_type.startswith(WEBHOOK_EVENT_PREFIX):
        raise UnsupportedEvent(f"unsupported webhook type {event_type!r}")
    if "data" not in body:
        raise MalformedPayload("webhook body has no data")
    return WebhookEvent(
        type=event_type,
        timestamp=webhook_partner_time(body),
        reservation=parse_reservation(body["data"]),
    )


def parse_webhook_payload(body: dict[str, Any]) -> ReservationSnapshot:
    """The reservation a webhook body carries (raises `MalformedPayload`)."""
    return parse_webhook(body).reservation


def webhook_partner_time(body: dict[str, Any]) -> datetime | None:
    """The partner's clock in a webhook body: RFC 3339, or unix seconds; None when absent."""
    value = body.get("timestamp")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return bounds.unix_time(value, field="timestamp")
    return parse_timestamp(value, field="timestamp")
