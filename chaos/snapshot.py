"""Reading a run's outcome: our database (this run's partners only), each sandbox's ground truth,
and the clients' ledger, into the plain data of `model.py`. Also the cheap live counts.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db.models import Count, Q

from bookings.models import Booking, BookingEvent, Notification, NotificationState
from bookings.states import OPEN_STATES
from chaos import logscan, mailbox
from chaos.load import ClientLedger
from chaos.model import (
    BookingRow,
    ClientKey,
    EventRow,
    IdempotencyRow,
    NotificationRow,
    ObservationRow,
    OurReservation,
    PartnerChange,
    ShownView,
    Snapshot,
    Terms,
    TruthReservation,
)
from chaos.payments import payments_owed
from chaos.sandboxes import SandboxPartner
from partners.models import (
    Operation,
    Outcome,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
)

LEGACY_STATES = {"PENDING": "pending", "OK": "confirmed", "FAIL": "rejected", "CXL": "cancelled"}
TERM_FIELDS = ("start_date", "end_date", "guests", "total_price", "currency")
# The wire names of a booking's terms, per profile, as ours.
TERM_NAMES = {
    "reference": {name: name for name in TERM_FIELDS},
    "legacy": {
        "from": "start_date",
        "to": "end_date",
        "pax": "guests",
        "amount": "total_price",
        "ccy": "currency",
    },
}
CENT = Decimal("0.01")
CHUNK = 2000


# --- live counts -------------------------------------------------------------------------------
def live_counts(partner_codes: list[str], *, compensation_max_tries: int) -> dict[str, int]:
    """Bookings per state plus the work still owed (fences, compensations): for progress and settle."""
    counts: Counter[str] = Counter(
        {
            row["status"]: row["n"]
            for row in Booking.objects.filter(partner__code__in=partner_codes)
            .order_by()
            .values("status")
            .annotate(n=Count("id"))
        }
    )
    result = dict(counts)
    result["total"] = sum(counts.values())
    result["open"] = sum(counts[s] for s in OPEN_STATES)
    result["fences"] = (
        PartnerAttempt.objects.fencing()
        .filter(partner__code__in=partner_codes)
        .values("booking")
        .distinct()
        .count()
    )
    result["compensations"] = (
        PartnerReservation.objects.filter(
            partner__code__in=partner_codes,
            compensation_requested_at__isnull=False,
            compensated_at__isnull=True,
        )
        .annotate(cancels=Count("attempts", filter=Q(attempts__operation=Operation.CANCEL)))
        .filter(cancels__lt=compensation_max_tries)
        .count()
    )
    # Mail still owed: not yet sent, or an attempt that has not said how it ended.
    result["notifications"] = Notification.objects.filter(
        booking__partner__code__in=partner_codes,
        state__in=(NotificationState.QUEUED, NotificationState.SENDING),
    ).count()
    # Payments with work still owed (an outcome not known, a look due soon).
    result["payments"] = payments_owed(partner_codes)
    return result


def unanswered_read_share(partner_codes: list[str]) -> float:
    """The share of our reads of these partners' reservations (every sync: the audit's, the
    follow-ups') that the partner did not answer, by the bookings' timelines."""
    reads = BookingEvent.objects.filter(
        booking__partner__code__in=partner_codes, kind__in=("sync.completed", "sync.failed")
    ).aggregate(total=Count("id"), failed=Count("id", filter=Q(kind="sync.failed")))
    return reads["failed"] / reads["total"] if reads["total"] else 0.0


def final_versions(partner_codes: list[str]) -> dict[str, int]:
    """Each booking's status_version now: what its customers' clients should show at the end."""
    return dict(
        Booking.objects.filter(partner__code__in=partner_codes).values_list("reference", "status_version")
    )


# --- the full snapshot -------------------------------------------------------------------------
def take(
    *,
    sandboxes: list[SandboxPartner],
    ledger: ClientLedger,
    truth: dict[str, list[dict[str, Any]]],
    compensation_max_tries: int,
    run_dir: Path | None = None,
    shown: list[ShownView] | None = None,
    followers: dict[str, tuple[str, ...]] | None = None,
    mail_dir: Path | None = None,
) -> Snapshot:
    codes = [s.code for s in sandboxes]
    counts = live_counts(codes, compensation_max_tries=compensation_max_tries)
    return Snapshot(
        profiles={s.code: s.profile for s in sandboxes},
        skew_s={s.code: s.plan.clock_skew_s for s in sandboxes},
        bookings=_bookings(codes),
        idempotency=_idempotency(codes),
        reservations=_reservations(codes),
        observations=_observations(codes),
        truth=[_truth_row(s.code, s.profile, row) for s in sandboxes for row in truth.get(s.code, [])],
        clients=[
            ClientKey(
                key=r.key,
                customer=r.customer,
                outcome=r.outcome,
                references=tuple(r.references),
                responses=tuple(r.responses),
                refusal=r.refusal,
            )
            for r in ledger.records.values()
        ],
        unresolved_fences=counts["fences"],
        pending_compensations=counts["compensations"],
        retried=logscan.retried(run_dir) if run_dir is not None else {},
        refused_in_a_row=_refused_in_a_row(codes),
        cancel_calls=_cancel_calls(codes),
        shown=shown,
        followers=followers or {},
        mails=mailbox.read(mail_dir) if mail_dir is not None else None,
        notifications=_notifications(codes),
    )


def _bookings(codes: list[str]) -> dict[str, BookingRow]:
    rows = list(
        Booking.objects.filter(partner__code__in=codes).values_list(
            "id",
            "reference",
            "partner__code",
            "customer__username",
            "status",
            "attention_reason",
            "attention_detail",
            "deadline",
            "created_at",
            "start_date",
            "end_date",
            "guests",
            "total_price",
            "currency",
            "customer_status",
            "customer_message",
            "status_version",
            "customer_money",
        )
    )
    events: dict[Any, list[EventRow]] = {}
    ids = [row[0] for row in rows]
    for start in range(0, len(ids), CHUNK):
        for e in (
            BookingEvent.objects.filter(booking_id__in=ids[start : start + CHUNK])
            .order_by("booking_id", "id")
            .values_list(
                "booking_id",
                "id",
                "kind",
                "actor",
                "from_state",
                "to_state",
                "occurred_at",
                "summary",
                "data",
            )
        ):
            events.setdefault(e[0], []).append(
                EventRow(
                    id=e[1],
                    kind=e[2],
                    actor=e[3],
                    from_state=e[4],
                    to_state=e[5],
                    occurred_at=e[6],
                    summary=e[7],
                    data=e[8] or {},
                )
            )
    return {
        row[1]: BookingRow(
            reference=row[1],
            partner_code=row[2],
            customer=row[3],
            status=row[4],
            attention_reason=row[5],
            attention_detail=row[6],
            deadline=row[7],
            created_at=row[8],
            events=tuple(events.get(row[0], [])),
            terms=terms_text(dict(zip(TERM_FIELDS, row[9:14], strict=True))),
            view_status=row[14],
            view_message=row[15],
            view_version=row[16],
            view_money={str(k): str(v) for k, v in (row[17] or {}).items()},
        )
        for row in rows
    }


def terms_text(terms: dict[str, Any]) -> Terms:
    """Terms as the same text on both sides: ISO dates, whole guests, money to the cent."""
    text: Terms = {}
    for name, value in terms.items():
        if value is None or value == "":
            continue
        if isinstance(value, date):
            text[name] = value.isoformat()
        elif name == "total_price":
            try:
                text[name] = format(Decimal(str(value)).quantize(CENT), "f")
            except InvalidOperation:
                text[name] = str(value)
        else:
            text[name] = str(value)
    return text


def _wire_terms(profile: str, data: dict[str, Any]) -> Terms:
    names = TERM_NAMES[profile]
    return terms_text({ours: data.get(wire) for wire, ours in names.items()})


def _changes(profile: str, changes: dict[str, Any] | None) -> dict[str, Any]:
    names = TERM_NAMES[profile]
    return {names.get(wire, wire): change for wire, change in (changes or {}).items()}


def _refused_in_a_row(codes: list[str]) -> dict[str, int]:
    """Per booking, the longest run of answers refused at our edge with no usable answer between."""
    longest: dict[str, int] = {}
    run: dict[str, int] = {}
    rows = (
        PartnerAttempt.objects.filter(partner__code__in=codes, booking__isnull=False)
        .filter(Q(outcome=Outcome.OK) | ~Q(refusal=""))
        .order_by("booking_id", "started_at", "id")
        .values_list("booking__reference", "refusal")
    )
    for reference, refusal in rows.iterator(chunk_size=CHUNK):
        run[reference] = run.get(reference, 0) + 1 if refusal else 0
        longest[reference] = max(longest.get(reference, 0), run[reference])
    return {reference: n for reference, n in longest.items() if n}


def _cancel_calls(codes: list[str]) -> dict[tuple[str, str], int]:
    return {
        (code, ref): n
        for code, ref, n in PartnerAttempt.objects.filter(partner__code__in=codes, operation=Operation.CANCEL)
        .values_list("partner__code", "reservation__partner_ref")
        .annotate(n=Count("id"))
        .order_by()
    }


def _notifications(codes: list[str]) -> list[NotificationRow]:
    return [
        NotificationRow(
            reference=row[0],
            version=row[1],
            kind=row[2],
            message=row[3],
            state=row[4],
            attempts=row[5],
            created_at=row[6],
            error=row[7],
        )
        for row in Notification.objects.filter(booking__partner__code__in=codes)
        .order_by("id")
        .values_list(
            "booking__reference",
            "status_version",
            "kind",
            "message",
            "state",
            "attempts",
            "created_at",
            "error",
        )
        .iterator(chunk_size=CHUNK)
    ]


def _idempotency(codes: list[str]) -> list[IdempotencyRow]:
    return [
        IdempotencyRow(customer=c, key=k, booking_reference=r)
        for c, k, r in (
            Booking.objects.filter(partner__code__in=codes)
            .exclude(idempotency_key="")
            .values_list("customer__username", "idempotency_key", "reference")
        )
    ]


def _reservations(codes: list[str]) -> list[OurReservation]:
    return [
        OurReservation(
            partner_code=row[0],
            partner_ref=row[1],
            booking_reference=row[2],
            role=row[3],
            status=row[4],
            version=row[5],
            compensation_requested_at=row[6],
            compensation_reason=row[7],
            compensated_at=row[8],
            case_state=row[9] or "",
            case_automation=row[10] or "",
        )
        for row in PartnerReservation.objects.filter(partner__code__in=codes).values_list(
            "partner__code",
            "partner_ref",
            "booking__reference",
            "role",
            "status",
            "version",
            "compensation_requested_at",
            "compensation_reason",
            "compensated_at",
            "orphan_case__state",
            "orphan_case__automation",
        )
    ]


def _observations(codes: list[str]) -> list[ObservationRow]:
    return [
        ObservationRow(
            id=row[0],
            partner_code=row[1],
            partner_ref=row[2],
            source=row[3],
            status=row[4],
            version=row[5],
            partner_modified_at=row[6],
            received_at=row[7],
            result=row[8],
        )
        for row in PartnerObservation.objects.filter(reservation__partner__code__in=codes)
        .order_by("id")
        .values_list(
            "id",
            "reservation__partner__code",
            "reservation__partner_ref",
            "source",
            "status",
            "version",
            "partner_modified_at",
            "received_at",
            "result",
        )
    ]


def _truth_row(code: str, profile: str, row: dict[str, Any]) -> TruthReservation:
    if profile == "legacy":
        vanished = row.get("vanished_utc")
        return TruthReservation(
            partner_code=code,
            partner_ref=str(row["booking_no"]),
            client_reference=str(row["ref"]),
            status=LEGACY_STATES[row["state"]],
            history=tuple(
                PartnerChange(
                    version=int(h["version"]),
                    status=LEGACY_STATES[h["state"]],
                    at=datetime.fromisoformat(h["at_utc"]),
                    cause=str(h["cause"]),
                    changes=_changes(profile, h.get("changes")),
                )
                for h in row.get("history", [])
            ),
            raw=row,
            vanished_at=datetime.fromisoformat(vanished) if vanished else None,
            terms=_wire_terms(profile, row),
        )
    vanished = row.get("vanished_at")
    return TruthReservation(
        partner_code=code,
        partner_ref=str(row["id"]),
        client_reference=str(row["client_reference"]),
        status=str(row["status"]),
        history=tuple(
            PartnerChange(
                version=int(h["version"]),
                status=str(h["status"]),
                at=datetime.fromisoformat(h["at"]),
                cause=str(h["cause"]),
                changes=_changes(profile, h.get("changes")),
            )
            for h in row.get("history", [])
        ),
        raw=row,
        vanished_at=datetime.fromisoformat(vanished) if vanished else None,
        terms=_wire_terms(profile, row),
    )
