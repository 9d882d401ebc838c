"""The `legacy` protocol (docs/partner-protocols.md §2): X-Api-Key auth, no idempotency, no lookup,
no webhooks; a change listing and partner-local times without offset.

Classification per operation (what is not listed falls back to `http.classify_status`):
- create: 200 state OK/PENDING -> ok; FAIL -> rejected (reason `sold_out` or the message);
  408, 429, never sent -> transient; 5xx (503 too), an unreadable 2xx, sent without a complete
  answer -> ambiguous; 400, 401, 403, 404 -> permanent.
- get: 200 -> ok; 404 -> ok without a booking, error_code not_found; 5xx, 408, 429, an
  unreadable 2xx, any transport failure -> transient; other 4xx -> permanent.
- list_changes: 200 {"items", "next_page"} -> ok; failures as for get, but 404 -> permanent.
- cancel: 200 -> ok (state CXL); 404 not_found, other 4xx -> permanent; 408, 429, never
  sent -> transient; 5xx, an unreadable 2xx, sent without a complete answer -> ambiguous.
- lookup: permanent, not in this protocol.

A create is never repeated safely here (every POST books again), which is why a failure after
sending is ambiguous even on a 503: the sandbox answers half of its 5xx after committing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from partners.connectors import bounds
from partners.connectors.base import CallResult, CreateRequest, ReservationSnapshot, Terms
from partners.connectors.http import Exchange, MalformedPayload, money_string, perform
from partners.models import Outcome, Partner, ReservationStatus

LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

STATES: dict[str, ReservationStatus] = {
    "OK": ReservationStatus.CONFIRMED,
    "PENDING": ReservationStatus.PENDING,
    "FAIL": ReservationStatus.REJECTED,
    "CXL": ReservationStatus.CANCELLED,
}


class LegacyConnector:
    def __init__(self, partner: Partner) -> None:
        self.partner = partner
        self.zone = partner_zone(partner)
        self._auth = {"X-Api-Key": partner.resolved_api_key()}

    def __repr__(self) -> str:
        return f"LegacyConnector({self.partner.code})"

    def create(self, request: CreateRequest, *, idempotency_key: str) -> CallResult:
        # No Idempotency-Key: the protocol has none, and the key means nothing to this partner.
        exchange = self._call("POST", "/api/bookings", write=True, json_body=create_body(request))
        if exchange.failure is not None:
            return exchange.transport_failure()
        if not exchange.is_success:
            return exchange.by_status()
        try:
            snapshot = parse_create_response(exchange.body, request=request)
        except MalformedPayload as exc:
            return exchange.refused(exc)
        if snapshot.status == ReservationStatus.REJECTED:
            return exchange.result(
                Outcome.REJECTED,
                reservations=(snapshot,) if snapshot.partner_ref else (),
                error=snapshot.reason,
            )
        return exchange.result(Outcome.OK, reservations=(snapshot,))

    def get(self, partner_ref: str) -> CallResult:
        exchange = self._call("GET", f"/api/bookings/{_segment(partner_ref)}", write=False)
        if exchange.failure is not None:
            return exchange.transport_failure()
        if exchange.status == 404:
            return exchange.result(Outcome.OK, error="", error_code="not_found")
        if not exchange.is_success:
            return exchange.by_status()
        try:
            snapshot = parse_booking(exchange.body, self.zone, default_ref=partner_ref)
        except MalformedPayload as exc:
            return exchange.refused(exc)
        return exchange.result(Outcome.OK, reservations=(snapshot,))

    def lookup(self, client_reference: str) -> CallResult:
        return CallResult(
            outcome=Outcome.PERMANENT,
            error="lookup by client reference not supported by the legacy protocol",
            error_code="not_supported",
        )

    def list_changes(self, *, since: datetime, page: int = 1) -> CallResult:
        params = {"modified_since": to_partner_local(since, self.zone), "page": page}
        exchange = self._call("GET", "/api/bookings", write=False, params=params)
        if exchange.failure is not None:
            return exchange.transport_failure()
        if not exchange.is_success:
            return exchange.by_status()
        try:
            snapshots, next_page = parse_listing(exchange.body, self.zone)
            if next_page is not None and next_page <= page:
                # Followed, it would walk the same pages for ever.
                raise bounds.OutOfRange("next_page", next_page, f"a page after {page}")
        except MalformedPayload as exc:
            return exchange.refused(exc)
        return exchange.result(Outcome.OK, reservations=snapshots, next_page=next_page)

    def cancel(self, partner_ref: str) -> CallResult:
        exchange = self._call("DELETE", f"/api/bookings/{_segment(partner_ref)}", write=True)
        if exchange.failure is not None:
            return exchange.transport_failure()
        if exchange.status == 404:
            return exchange.result(Outcome.PERMANENT, error_code="not_found")
        if not exchange.is_success:
            return exchange.by_status()
        try:
            snapshot = parse_cancel_response(exchange.body, self.zone, partner_ref=partner_ref)
        except MalformedPayload as exc:
            return exchange.refused(exc)
        return exchange.result(Outcome.OK, reservations=(snapshot,))

    def _call(
        self,
        method: str,
        path: str,
        *,
        write: bool,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Exchange:
        return perform(
            self.partner,
            method,
            path,
            write=write,
            auth_headers=self._auth,
            json_body=json_body,
            params=params,
        )


def partner_zone(partner: Partner) -> ZoneInfo:
    """The partner's configured local time zone (a bad name is a configuration error)."""
    try:
        return ZoneInfo(partner.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"partner {partner.code}: unknown timezone {partner.timezone!r}") from exc


def create_body(request: CreateRequest) -> dict[str, Any]:
    return {
        "ref": request.client_reference,
        "item": request.product_id,
        "from": request.start_date.isoformat(),
        "to": request.end_date.isoformat(),
        "pax": int(request.guests),
        "amount": money_string(request.total_price),
        "ccy": request.currency,
    }


def to_partner_local(moment: datetime, zone: ZoneInfo) -> str:
    """An aware time as the partner's local wall time, `YYYY-MM-DD HH:MM:SS`.

    Seconds are truncated, so a listing asked "since" it starts no later than `moment`.
    """
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined partner-local time")
    return moment.astimezone(zone).strftime(LOCAL_TIME_FORMAT)


def from_partner_local(value: Any, zone: ZoneInfo, *, field: str = "modified") -> datetime:
    """A partner-local wall time as an aware UTC datetime.

    In the repeated hour after a DST change the earlier instant is chosen (fold=0); a time that
    carries an offset anyway is taken at its word.
    """
    if not isinstance(value, str) or not value.strip():
        raise MalformedPayload(f"{field} is not a local time: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedPayload(f"{field} is not a local time: {value!r}") from None
    bounds.moment(parsed, field=field)  # before converting: year 1 or 9999 would overflow
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone, fold=0)
    return parsed.astimezone(UTC)


def parse_state(value: Any) -> ReservationStatus:
    if isinstance(value, str) and value.strip().upper() in STATES:
        return STATES[value.strip().upper()]
    raise MalformedPayload(f"unknown booking state {value!r}")


def rejection_reason(message: Any) -> str:
    """Our reason code for a FAIL: `sold_out` when the partner says so, else its message."""
    text = "" if message is None else str(message).strip()
    squashed = text.lower().replace("_", " ").replace("-", " ")
    if "sold out" in squashed or "soldout" in squashed:
        return "sold_out"
    return bounds.text(text[: bounds.MAX_TEXT_LENGTH], field="msg")


def parse_create_response(data: Any, *, request: CreateRequest) -> ReservationSnapshot:
    """`{"booking_no", "state", "msg"}`: it carries neither the ref, nor a modified time, nor
    the terms."""
    if not isinstance(data, dict):
        raise MalformedPayload("create response is not a JSON object")
    status = parse_state(data.get("state"))
    booking_no = data.get("booking_no")
    if booking_no is None or booking_no == "":
        if status != ReservationStatus.REJECTED:
            raise MalformedPayload("create response has no booking_no")
        partner_ref = ""  # a FAIL may come without a booking: nothing is held
    else:
        partner_ref = bounds.identifier(booking_no, field="booking_no")
    return ReservationSnapshot(
        partner_ref=partner_ref,
        client_reference=request.client_reference,
        status=status,
        reason=rejection_reason(data.get("msg")) if status == ReservationStatus.REJECTED else "",
        version=None,
        created_at=None,
        modified_at=None,
        raw=bounds.payload(data, field="booking"),
    )


def parse_booking(data: Any, zone: ZoneInfo, *, default_ref: str | None = None) -> ReservationSnapshot:
    """A booking from GET or the listing: `{"booking_no", "ref", "state", "modified"}`, and the
    terms it echoes (`from`, `to`, `pax`, `amount`, `ccy`) when present."""
    if not isinstance(data, dict):
        raise MalformedPayload("booking is not a JSON object")
    booking_no = data.get("booking_no", default_ref)
    if booking_no is None or booking_no == "" or isinstance(booking_no, bool):
        raise MalformedPayload("booking has no booking_no")
    modified = data.get("modified")
    status = parse_state(data.get("state"))
    return ReservationSnapshot(
        partner_ref=bounds.identifier(booking_no, field="booking_no"),
        client_reference=bounds.text(data.get("ref"), field="ref"),
        status=status,
        reason=rejection_reason(data.get("msg")) if status == ReservationStatus.REJECTED else "",
        version=None,
        created_at=None,
        modified_at=None if modified is None else from_partner_local(modified, zone),
        terms=Terms(
            start_date=bounds.stay_date(data.get("from"), field="from"),
            end_date=bounds.stay_date(data.get("to"), field="to"),
            guests=bounds.guests(data.get("pax"), field="pax"),
            total_price=bounds.amount(data.get("amount"), field="amount"),
            currency=bounds.currency(data.get("ccy"), field="ccy"),
        ),
        raw=bounds.payload(data, field="booking"),
    )


def parse_cancel_response(data: Any, zone: ZoneInfo, *, partner_ref: str) -> ReservationSnapshot:
    """`{"booking_no", "state": "CXL"}`; a 200 to DELETE without a state means cancelled."""
    if not isinstance(data, dict):
        raise MalformedPayload("cancel response is not a JSON object")
    snapshot = parse_booking({"state": "CXL", **data}, zone, default_ref=partner_ref)
    return replace(snapshot, raw=data)


def parse_listing(data: Any, zone: ZoneInfo) -> tuple[tuple[ReservationSnapshot, ...], int | None]:
    """`{"items": [...], "next_page": N | null}`, all or nothing (a skipped item is a lost one)."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise MalformedPayload('listing is not {"items": [...]}')
    snapshots = tuple(parse_booking(item, zone) for item in data["items"])
    return snapshots, _next_page(data.get("next_page"))


def _next_page(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    raise MalformedPayload(f"next_page is not a page number: {value!r}")


def _segment(value: str) -> str:
    return quote(str(value), safe="")
