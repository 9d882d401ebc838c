"""The connector contract: one adapter module per partner protocol behind `PartnerConnector`.

Adapters speak the wire format and classify every outcome; they never touch the database.
What a call did is one `CallResult`; what the partner holds is `ReservationSnapshot`s.

Outcome classes (see "Traps of the stack" in docs/design.md on requests):
- ok: the partner answered and we know what it holds (a GET's 404 is ok with no reservation);
- rejected: a create answered with a declined reservation (sold out, invalid);
- transient: the request provably did not take effect (connect refused or timed out, 429, a 5xx
  on a read, `request_in_progress`): safe to try again later;
- ambiguous: the request may have taken effect (read timeout, connection dropped after sending,
  5xx on a write): nothing may be created again until a lookup resolves it;
- permanent: the partner refused this request for good (4xx, bad key, key reused).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from partners.models import Outcome, ReservationStatus


class PartnerError(Exception):
    """Base of partner failures raised by the call layer (adapters return `CallResult`s)."""


class PermanentPartnerError(PartnerError):
    """No call can succeed (e.g. no connector speaks the partner's protocol): never retried."""


@dataclass(frozen=True)
class CreateRequest:
    client_reference: str  # our booking reference, e.g. BK-7F3K2Q
    product_id: str
    start_date: date
    end_date: date
    guests: int
    total_price: Decimal
    currency: str


@dataclass(frozen=True)
class Terms:
    """A booking's terms as the partner states them; what an answer did not carry is None."""

    start_date: date | None = None
    end_date: date | None = None
    guests: int | None = None
    total_price: Decimal | None = None
    currency: str = ""


TERM_FIELDS = tuple(term.name for term in fields(Terms))


@dataclass(frozen=True)
class ReservationSnapshot:
    """What the partner says about one reservation, normalised to our vocabulary."""

    partner_ref: str
    client_reference: str
    status: ReservationStatus
    reason: str = ""
    version: int | None = None  # reference protocol; None for legacy
    created_at: datetime | None = None  # aware (legacy local times converted)
    modified_at: datetime | None = None  # aware
    terms: Terms = Terms()
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    http_status: int | None = None
    reservations: tuple[ReservationSnapshot, ...] = ()
    partner_time: datetime | None = None  # the response's Date header, aware
    latency_ms: int = 0
    error: str = ""
    error_code: str = ""  # the partner's error code (`not_found`, `idempotency_key_reused`, ...)
    retry_after_s: float | None = None
    next_page: int | None = None  # change listing only
    refusal: str = ""  # why the answer's data was refused at our edge; "" when it was usable

    @property
    def reservation(self) -> ReservationSnapshot | None:
        return self.reservations[0] if self.reservations else None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK


class PartnerConnector(Protocol):
    """What every adapter offers. Methods a partner lacks return a permanent `CallResult`."""

    def create(self, request: CreateRequest, *, idempotency_key: str) -> CallResult: ...

    def get(self, partner_ref: str) -> CallResult: ...

    def lookup(self, client_reference: str) -> CallResult: ...

    def list_changes(self, *, since: datetime, page: int = 1) -> CallResult: ...

    def cancel(self, partner_ref: str) -> CallResult: ...
