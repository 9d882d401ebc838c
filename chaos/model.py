"""What the checks look at, as plain data: our side, each partner's side, and the clients' record.

`snapshot.py` fills these from the database and the sandboxes; the checks are pure functions
over them, so they can be tested with hand-made data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.money_truth import MoneyTruth

LIVE = frozenset({"pending", "confirmed"})


@dataclass(frozen=True)
class EventRow:
    id: int
    kind: str
    actor: str
    from_state: str
    to_state: str
    occurred_at: datetime
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transition(self) -> bool:
        return bool(self.to_state)

    def excerpt(self) -> str:
        move = f" {self.from_state or '∅'}→{self.to_state}" if self.to_state else ""
        at = self.occurred_at.isoformat(timespec="milliseconds")
        return f"{at} #{self.id} {self.kind}{move} [{self.actor}] {self.summary}"


# A booking's terms as plain text, the same way on both sides: start_date, end_date (ISO dates),
# guests, total_price (a decimal string, two places), currency.
Terms = dict[str, str]


@dataclass(frozen=True)
class BookingRow:
    reference: str
    partner_code: str
    customer: str
    status: str
    attention_reason: str
    attention_detail: str
    deadline: datetime
    created_at: datetime
    events: tuple[EventRow, ...] = ()
    terms: Terms = field(default_factory=dict)
    # What the customer is shown now (bookings.customer_view): status, message code, number.
    view_status: str = ""
    view_message: str = ""
    view_version: int = 0
    # What the customer is told of their money now (bookings.customer_view, the `money` the page,
    # the API and the mails read): its code and amounts as text; empty without a payment.
    view_money: dict[str, str] = field(default_factory=dict)

    def first_reached(self, states: frozenset[str] | set[str]) -> EventRow | None:
        return next((e for e in self.events if e.to_state in states), None)

    def view_changes(self) -> list[ViewChange]:
        """Every numbered change of what the customer is shown, as its timeline records it (the
        row of the transition or `customer.view_changed` that carries `data.customer_view`), in
        version order, each with the message shown before it: version 1 is the new booking's
        (`received`, or `checking_payment` for one that starts awaiting its payment)."""
        recorded = sorted(
            (
                (int(view["status_version"]), view, event)
                for event in self.events
                if isinstance(view := event.data.get("customer_view"), dict) and "status_version" in view
            ),
            key=lambda item: item[0],
        )
        first = self.events[0].to_state if self.events else ""
        before_message = "checking_payment" if first == "awaiting_payment" else "received"
        changes = []
        for version, view, event in recorded:
            money = view.get("money")
            change = ViewChange(
                version=version,
                before=str(view.get("from", "")),
                status=str(view.get("to", "")),
                message=str(view.get("message", "")),
                at=event.occurred_at,
                actor=event.actor,
                event_id=event.id,
                before_message=before_message,
                money=str(money.get("code", "")) if isinstance(money, dict) else "",
                money_told=dict(money) if isinstance(money, dict) else {},
            )
            changes.append(change)
            before_message = change.message
        return changes


@dataclass(frozen=True)
class ViewChange:
    """One numbered change of a booking's customer view, from its timeline."""

    version: int
    before: str  # the status shown before
    status: str
    message: str
    at: datetime
    actor: str
    event_id: int
    before_message: str = ""  # the message shown before (the version below)
    money: str = ""  # what the customer is told of their money now, when this change moved it
    money_told: dict[str, str] = field(default_factory=dict)  # that money's code and amounts


@dataclass(frozen=True)
class IdempotencyRow:
    customer: str
    key: str
    booking_reference: str


@dataclass(frozen=True)
class OurReservation:
    partner_code: str
    partner_ref: str
    booking_reference: str | None
    role: str
    status: str
    version: int | None
    compensation_requested_at: datetime | None
    compensation_reason: str
    compensated_at: datetime | None
    case_state: str = ""  # its orphan case: open / closed ('' when it has none)
    case_automation: str = ""


@dataclass(frozen=True)
class ObservationRow:
    id: int
    partner_code: str
    partner_ref: str
    source: str
    status: str
    version: int | None
    partner_modified_at: datetime | None
    received_at: datetime
    result: str


@dataclass(frozen=True)
class PartnerChange:
    version: int
    status: str  # our vocabulary: pending | confirmed | rejected | cancelled
    at: datetime  # the partner's clock (skew included), aware
    cause: str  # create | settle | cancel | partner_cancel | amend | vanish
    changes: dict[str, Any] = field(default_factory=dict)  # an amendment's {field: {"old", "new"}}


# What the partner does to a reservation on its own, by the cause in its history.
INITIATIVES = {"partner_cancel": "cancelled", "vanish": "lost", "amend": "changed"}


@dataclass(frozen=True)
class TruthReservation:
    partner_code: str
    partner_ref: str
    client_reference: str
    status: str
    history: tuple[PartnerChange, ...]
    raw: dict[str, Any] = field(default_factory=dict)
    vanished_at: datetime | None = None  # the partner's clock: lost to every read since
    terms: Terms = field(default_factory=dict)  # as the partner holds them now

    @property
    def live(self) -> bool:
        """Held by the partner: a lost reservation is live to nobody, whatever its last status."""
        return self.status in LIVE and self.vanished_at is None

    def initiatives(self) -> list[PartnerChange]:
        """What the partner did to it on its own (cancelled, lost, changed it), in order."""
        return [h for h in self.history if h.cause in INITIATIVES]

    def first(self, status: str) -> PartnerChange | None:
        return next((h for h in self.history if h.status == status), None)

    def excerpt(self) -> str:
        steps = ", ".join(
            f"v{h.version} {h.status} @{h.at.isoformat(timespec='milliseconds')} ({h.cause})"
            for h in self.history
        )
        lost = " lost" if self.vanished_at else ""
        return (
            f"{self.partner_code}:{self.partner_ref} ref={self.client_reference} now={self.status}{lost} "
            f"[{steps}]"
        )


@dataclass(frozen=True)
class ClientKey:
    """What one client idempotency key got from the API."""

    key: str
    customer: str
    outcome: str  # accepted | refused | gave_up | pending
    references: tuple[str, ...]  # from every 202, in order
    responses: tuple[str, ...]
    refusal: str = ""


@dataclass(frozen=True)
class ShownView:
    """What one client of the run was shown about one booking, and when it saw it (our clock).

    `client` names who saw it, so that order can be judged per client: `booking-stream:<ref>`
    (the booking's stream, across its reconnections), `customer-stream:<username>` (the
    customer's stream of every booking), `poll:<ref>` (GET with If-None-Match), or
    `answer:<key>` (the API's answer to the POST or cancel that a client made)."""

    reference: str
    client: str
    at: datetime
    status: str
    message: str  # the message code
    version: int
    opening: bool = False  # the first event of a stream connection: where it started from

    @property
    def follows(self) -> bool:
        """A client that keeps following the booking (a stream or a poller), not one answer."""
        return not self.client.startswith("answer:")

    def excerpt(self) -> str:
        opening = " (stream opening)" if self.opening else ""
        return (
            f"{self.at.isoformat(timespec='milliseconds')} {self.client}: "
            f"{self.status}/{self.message} v{self.version}{opening}"
        )


@dataclass(frozen=True)
class MailRow:
    """One message the run's SMTP sink kept, by the headers that name what it announces."""

    reference: str
    version: int | None
    kind: str
    message_id: str
    received_at: datetime
    file: str
    text: str = ""  # its plain-text body: the words the customer read
    # The versions of money changes a status mail tells beside its own (`X-Booking-Included-Versions`).
    included: tuple[int, ...] = ()

    def announces(self, reference: str, version: int) -> bool:
        """Whether the mail tells the booking's change of `version`: its own, or one it includes."""
        return self.reference == reference and (self.version == version or version in self.included)


@dataclass(frozen=True)
class NotificationRow:
    """A notification our outbox owes or owed (bookings.models.Notification)."""

    reference: str
    version: int
    kind: str
    message: str
    state: str
    attempts: int
    created_at: datetime
    error: str = ""


@dataclass
class Snapshot:
    profiles: dict[str, str]  # partner code -> profile
    skew_s: dict[str, float]  # partner code -> configured clock skew (partner minus real)
    bookings: dict[str, BookingRow]  # by reference
    idempotency: list[IdempotencyRow]
    reservations: list[OurReservation]
    observations: list[ObservationRow]
    truth: list[TruthReservation]
    clients: list[ClientKey]
    unresolved_fences: int = 0
    pending_compensations: int = 0
    # How often each Dramatiq message was retried (its id -> the workers' "Retrying" log lines).
    retried: dict[str, list[str]] = field(default_factory=dict)
    # Per booking: the longest run of partner answers refused at our edge with no usable one between.
    refused_in_a_row: dict[str, int] = field(default_factory=dict)
    # Per reservation we compensated (partner code, partner ref): the cancel calls made.
    cancel_calls: dict[tuple[str, str], int] = field(default_factory=dict)
    # What the run's clients were shown (None: nobody watched, e.g. a cluster run) and who
    # followed each booking to the end (reference -> client names).
    shown: list[ShownView] | None = None
    followers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The SMTP sink's messages (None: the run had no sink) and our outbox's notifications.
    mails: list[MailRow] | None = None
    notifications: list[NotificationRow] = field(default_factory=list)
    # Our payment rows and the payment provider's ground truth (None: nobody paid in this run).
    money: MoneyTruth | None = None

    def shown_by_reference(self) -> dict[str, list[ShownView]]:
        grouped: dict[str, list[ShownView]] = {}
        for view in self.shown or []:
            grouped.setdefault(view.reference, []).append(view)
        for views in grouped.values():
            views.sort(key=lambda v: v.at)
        return grouped

    def truth_by_reference(self) -> dict[str, list[TruthReservation]]:
        grouped: dict[str, list[TruthReservation]] = {}
        for reservation in self.truth:
            grouped.setdefault(reservation.client_reference, []).append(reservation)
        return grouped

    def ours_by_key(self) -> dict[tuple[str, str], OurReservation]:
        return {(r.partner_code, r.partner_ref): r for r in self.reservations}

    def real_time(self, partner_code: str, partner_time: datetime) -> datetime:
        """A partner timestamp on our clock: the sandbox's clock is real time plus its skew."""
        return partner_time - timedelta(seconds=self.skew_s.get(partner_code, 0.0))
