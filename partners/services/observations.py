"""The one door for partner truth (invariant 1).

Every piece of partner data (call responses, webhooks, lookups, listings) enters through
`observation_apply`: it is recorded, ordered against what we hold (by version, else partner
time, then receipt), applied only when newer, and then the booking is reconciled with what its
partner holds. Stale and duplicate observations are recorded on the timeline as ignored and
change nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django_fsm import RETURN_VALUE

from bookings import customer_view
from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.timeline import record_event
from config.metrics import events as metrics
from partners import decisions, messages
from partners.connectors.base import TERM_FIELDS, ReservationSnapshot, Terms
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    InboundEvent,
    ObservationResult,
    Operation,
    OrphanCaseState,
    OrphanFinding,
    Partner,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
    ReservationRole,
)
from partners.services.orphans import (
    orphan_case_link,
    orphan_case_not_linked,
    orphan_case_open,
    orphan_case_settled,
    orphan_case_taken_up,
)
from partners.timeline import (
    compensation_data,
    compensation_summary,
    mismatch_data,
    mismatch_summary,
    observation_data,
    observation_summary,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observed:
    reservation: PartnerReservation
    observation: PartnerObservation
    booking: Booking | None

    @property
    def result(self) -> str:
        return self.observation.result


def _find_booking_id(partner: Partner, snapshot: ReservationSnapshot, booking_id: UUID | None) -> UUID | None:
    if booking_id:
        return booking_id
    linked = (
        PartnerReservation.objects.filter(partner=partner, partner_ref=snapshot.partner_ref)
        .values_list("booking_id", flat=True)
        .first()
    )
    if linked:
        return linked
    if snapshot.client_reference:
        return (
            Booking.objects.filter(partner=partner, reference=snapshot.client_reference)
            .values_list("id", flat=True)
            .first()
        )
    return None


def observation_apply(
    *,
    partner: Partner,
    snapshot: ReservationSnapshot,
    source: str,
    actor: Actor | str,
    actor_label: str = "",
    booking_id: UUID | None = None,
    locked_booking: Booking | None = None,
    attempt: PartnerAttempt | None = None,
    inbound_event: InboundEvent | None = None,
) -> Observed:
    """Record one partner observation, apply it if newer, and reconcile its booking.

    `locked_booking`: the booking, already locked by the caller's open transaction (its copy is
    current), so it is not locked and read a second time.
    """
    # No savepoint of its own inside a caller's transaction (two round trips saved per call):
    # an error here always ends the caller's transaction too, nobody goes on after one.
    with transaction.atomic(savepoint=False):
        if locked_booking is not None:
            booking: Booking | None = locked_booking
        else:
            target_id = _find_booking_id(partner, snapshot, booking_id)
            booking = lock_booking(target_id) if target_id else None  # lock order: booking, then reservation
        reservation, created = PartnerReservation.objects.select_for_update(no_key=True).get_or_create(
            partner=partner,
            partner_ref=snapshot.partner_ref,
            defaults={
                "booking": booking,
                "client_reference": snapshot.client_reference,
                "status": snapshot.status,
                "reason": snapshot.reason,
                "version": snapshot.version,
                "partner_created_at": snapshot.created_at,
                "partner_modified_at": snapshot.modified_at,
                **_stated_terms(snapshot.terms),
                "learned_from": source,
                "role": ReservationRole.PRIMARY if booking else ReservationRole.ORPHAN,
                "payload": snapshot.raw,
            },
        )
        incoming = decisions.Held(snapshot.status, snapshot.version, snapshot.modified_at)
        linked_now = link_refused = withdrawn = False
        if created:
            result = ObservationResult.APPLIED
        else:
            held = decisions.Held(reservation.status, reservation.version, reservation.partner_modified_at)
            result = decisions.order_observation(held, incoming)
            if booking is not None and reservation.booking_id is None:
                # An orphan now found to be this booking's: its cancel, if one was decided, must
                # be withdrawn first, or the booking's own reservation would be cancelled by us.
                cancel_decided = reservation.compensation_requested_at is not None
                linked_now = orphan_cancel_withdrawn(reservation)
                link_refused, withdrawn = not linked_now, cancel_decided and linked_now
            if result == ObservationResult.APPLIED:
                _update_reservation(reservation, snapshot, None if link_refused else booking)
            else:
                reservation.last_observed_at = timezone.now()
                fields = ["last_observed_at"]
                if result == ObservationResult.DUPLICATE:
                    # The same status, yet maybe new terms: a legacy partner's amendment moves
                    # only `modified` and the terms it echoes.
                    fields += _take_terms(reservation, snapshot.terms)
                if linked_now:
                    # An orphan we now know the booking of: link it even when the news is old.
                    reservation.booking, reservation.role = booking, ReservationRole.PRIMARY
                    fields += ["booking", "role"]
                reservation.save(update_fields=fields)

        observation = PartnerObservation.objects.create(
            reservation=reservation,
            booking=booking,
            source=source,
            status=snapshot.status,
            version=snapshot.version,
            partner_modified_at=snapshot.modified_at,
            result=result,
            attempt=attempt,
            inbound_event=inbound_event,
            payload=snapshot.raw,
        )
        if booking is not None and result == ObservationResult.APPLIED:
            metrics.partner_change_applied(
                partner=partner.code,
                source=source,
                changed_at=snapshot.modified_at,
                skew_ms=partner.clock_skew_ms,
            )
        if booking is not None:
            _record_on_timeline(booking, observation, partner, actor, actor_label)
            if linked_now:
                orphan_case_link(
                    reservation,
                    booking,
                    kind="orphan.linked",
                    actor=actor,
                    actor_label=actor_label,
                    cancel_withdrawn=withdrawn,
                )
            elif link_refused:
                orphan_case_not_linked(reservation, booking, actor=actor, actor_label=actor_label)
            if result == ObservationResult.APPLIED or linked_now:
                reconcile_booking(booking, actor=actor, actor_label=actor_label)
            if result != ObservationResult.STALE:
                _compare_terms(booking, reservation, snapshot.terms, observation, actor, actor_label)
        elif result == ObservationResult.APPLIED:
            _handle_orphan(reservation, actor=actor, actor_label=actor_label)
        logger.info(
            "partner observation",
            extra={
                "partner": partner.code,
                "partner_ref": snapshot.partner_ref,
                "booking": booking.reference if booking else None,
                "source": source,
                "status": snapshot.status,
                "version": snapshot.version,
                "result": result,
            },
        )
        return Observed(reservation=reservation, observation=observation, booking=booking)


def _stated_terms(terms: Terms) -> dict[str, object]:
    """The terms an observation states, as reservation fields (what it did not carry left out)."""
    stated = {name: getattr(terms, name) for name in TERM_FIELDS}
    return {name: value for name, value in stated.items() if value is not None and value != ""}


def _take_terms(reservation: PartnerReservation, terms: Terms) -> list[str]:
    """Set the terms an observation states on the reservation; the names of those that changed."""
    changed = []
    for name, value in _stated_terms(terms).items():
        if getattr(reservation, name) != value:
            setattr(reservation, name, value)
            changed.append(name)
    return changed


def _update_reservation(
    reservation: PartnerReservation, snapshot: ReservationSnapshot, booking: Booking | None
) -> None:
    reservation.status = snapshot.status
    reservation.reason = snapshot.reason
    # A snapshot without a version (a loss we concluded, a partner that left it out) keeps the
    # last one: the order of what comes later is still judged against it.
    if snapshot.version is not None:
        reservation.version = snapshot.version
    reservation.partner_modified_at = snapshot.modified_at or reservation.partner_modified_at
    reservation.partner_created_at = reservation.partner_created_at or snapshot.created_at
    reservation.last_observed_at = timezone.now()
    reservation.payload = snapshot.raw or reservation.payload
    fields = [
        "status",
        "reason",
        "version",
        "partner_modified_at",
        "partner_created_at",
        "last_observed_at",
        "payload",
        *_take_terms(reservation, snapshot.terms),
    ]
    if booking is not None and reservation.booking_id is None:
        reservation.booking = booking
        reservation.role = ReservationRole.PRIMARY
        fields += ["booking", "role"]
    reservation.save(update_fields=fields)


def _record_on_timeline(
    booking: Booking,
    observation: PartnerObservation,
    partner: Partner,
    actor: Actor | str,
    actor_label: str,
) -> None:
    record_event(
        booking,
        f"partner.observation.{observation.result}",
        actor=actor,
        actor_label=actor_label,
        summary=observation_summary(observation),
        partner_time=observation.partner_modified_at,
        skew_ms=partner.clock_skew_ms,
        # The delivery or call that brought it: the timeline shows them inside this row.
        data={
            **observation_data(observation),
            "inbound_event_id": observation.inbound_event_id,
            "attempt_id": observation.attempt_id,
        },
    )


def _compare_terms(
    booking: Booking,
    reservation: PartnerReservation,
    stated: Terms,
    observation: PartnerObservation,
    actor: Actor | str,
    actor_label: str,
) -> None:
    """Invariant 6 for the terms: the partner's dates, guests, price and currency for the
    booking's own live reservation must be the booking's. A difference is support's to settle
    (`partner_mismatch`), with what we have and what the partner has on the timeline."""
    ours = Terms(
        start_date=booking.start_date,
        end_date=booking.end_date,
        guests=booking.guests,
        total_price=booking.total_price,
        currency=booking.currency,
    )
    differences = decisions.terms_differences(ours, stated)
    if not differences:
        return
    # Reconciling may just have marked it a duplicate to cancel (by an UPDATE): read its role again.
    reservation.refresh_from_db(fields=["booking", "role", "status", "compensation_requested_at"])
    if (
        reservation.booking_id != booking.pk
        or reservation.role != ReservationRole.PRIMARY
        or reservation.compensation_requested_at is not None
        or not reservation.is_live
    ):
        return  # not the reservation the booking keeps: its terms are not the booking's
    step = decisions.on_mismatch(booking.status, booking.attention_reason)
    if step == decisions.MismatchStep.NONE:
        return
    summary = mismatch_summary(reservation, differences)
    record_event(
        booking,
        "partner.mismatch",
        actor=actor,
        actor_label=actor_label,
        summary=summary,
        partner_time=observation.partner_modified_at,
        data=mismatch_data(reservation, observation, differences),
    )
    if step == decisions.MismatchStep.HAND_OVER:
        apply_transition(
            booking,
            "flag_for_attention",
            actor=actor,
            actor_label=actor_label,
            summary=f"{booking.status} → needs_attention ({decisions.PARTNER_MISMATCH})",
            data={"reason": decisions.PARTNER_MISMATCH},
            reason=decisions.PARTNER_MISMATCH,
            detail=summary,
        )


def _views(booking: Booking) -> list[decisions.ReservationView]:
    rows = booking.partner_reservations.order_by("first_seen_at", "id").values_list(
        "id", "status", "compensation_requested_at"
    )
    return [
        decisions.ReservationView(
            id=pk, status=status, linked_order=index, compensating=requested is not None
        )
        for index, (pk, status, requested) in enumerate(rows)
    ]


def is_fenced(booking: Booking) -> bool:
    return PartnerAttempt.objects.fencing().filter(booking=booking).exists()


def may_hold(booking_id: UUID) -> bool:
    """Whether the partner may still hold something for the booking: an unresolved create (a
    fence), or a reservation not verified cancelled that is live or that we asked it to cancel.
    One statement; each EXISTS is answered from an index that starts with the booking
    (`attempt_fencing`, `reservation_booking_status`). The booking core asks it through its
    port (`bookings.ports.partner_may_hold`)."""
    fence = PartnerAttempt.objects.fencing().filter(booking_id=booking_id)
    held = PartnerReservation.objects.filter(booking_id=booking_id, compensated_at__isnull=True).filter(
        Q(status__in=LIVE_RESERVATION_STATUSES) | Q(compensation_requested_at__isnull=False)
    )
    return Booking.objects.filter(pk=booking_id).filter(Exists(fence) | Exists(held)).exists()


def reconcile_booking(
    booking: Booking, *, actor: Actor | str, actor_label: str = ""
) -> decisions.Reconciliation:
    """Bring a locked booking in line with what its partner holds (call inside `atomic()`)."""
    fenced = is_fenced(booking)
    ended_as = booking.ended_as
    plan = decisions.reconcile(
        booking.status,
        _views(booking),
        fenced=fenced,
        ended_as=ended_as,
        may_hold=bool(ended_as) and may_hold(booking.pk),
    )
    if plan.primary is not None and fenced:
        # A live reservation for the booking is the partner's answer to our create. Unfenced,
        # there is nothing to resolve (a sync's replay opened since resolves with its answer).
        PartnerAttempt.objects.fencing().filter(booking=booking).update(
            resolved_at=timezone.now(), resolution="partner_holds_reservation"
        )
    for reservation_id, reason in plan.compensate.items():
        request_compensation(
            reservation_id, reason=reason, booking=booking, actor=actor, actor_label=actor_label
        )
    if plan.transition:
        kwargs = {"reason": plan.reason} if plan.transition == "flag_for_attention" else {}
        apply_transition(
            booking,
            plan.transition,
            actor=actor,
            actor_label=actor_label,
            summary=f"{booking.status} → {_target(booking, plan.transition)} ({plan.reason})",
            data={"reason": plan.reason},
            **kwargs,
        )
    else:
        # What may be held at the partner can change without a move (a fence resolved, a
        # cancellation verified): the customer's view follows it.
        customer_view.refresh(booking, actor=actor, actor_label=actor_label)
        # Every move takes its strays up; a case left open beside a booking no longer going ahead
        # by a process before that rule (a rolling deploy, rows already there) closes here.
        take_up_strays(booking, actor=actor, actor_label=actor_label)
    return plan


def take_up_strays(booking: Booking, *, actor: Actor | str, actor_label: str = "") -> None:
    """A duplicate's case lasts only while its booking keeps its own reservation
    (`decisions.stray_left_to_a_case`). Once the booking is cancelling, ended or with support,
    the stray is what holds it up again: its case closes and its cancel is asked again with a
    fresh budget (its tries were spent while the booking did not need it), so the partner is
    asked again; should that give up too, the booking goes to support (`compensation._give_up`).

    Run by every move of a booking, in its transaction (`bookings.ports.partner_follows`, from
    `apply_transition`): whatever moves it (the one door's reconciling, the worker's hand-over,
    the partner's different terms, support, the sweeper's expiry), the case closes with the move,
    never left open beside the booking for support to find twice. A case opens only while its
    booking is going ahead, under the booking's lock (`compensation._give_up`), so no move
    passes one by."""
    if decisions.stray_left_to_a_case(booking.status, ReservationRole.DUPLICATE):
        return  # the booking keeps its own: its strays' cases are support's (no query)
    strays = PartnerReservation.objects.filter(
        booking=booking,
        compensated_at__isnull=True,
        orphan_case__state=OrphanCaseState.OPEN,
        orphan_case__opened_because=OrphanFinding.DUPLICATE,
    )
    for reservation in strays:
        if orphan_case_taken_up(reservation, booking, actor=actor, actor_label=actor_label):
            request_compensation_again(reservation)
            record_event(
                booking,
                "partner.compensation.requested",
                actor=actor,
                actor_label=actor_label,
                summary=f"{reservation.partner_ref}: its cancel asked again, as {booking.reference} "
                f"is {booking.status} (its orphan case #{reservation.orphan_case.pk} closed)",
                data={**compensation_data(reservation), "orphan_case": reservation.orphan_case.pk},
            )


def _target(booking: Booking, transition: str) -> str:
    """Where `transition` takes the booking, as its state machine says; a move whose target is
    the booking's to say (`return_to_end`) takes it to the state its customer's booking is in."""
    target = next(t.target for t in booking.get_available_status_transitions() if t.name == transition)
    return booking.effective_state if isinstance(target, RETURN_VALUE) else target


def request_compensation(
    reservation_id: int,
    *,
    reason: str,
    booking: Booking | None,
    actor: Actor | str,
    actor_label: str = "",
) -> messages.Hint | None:
    """Mark a reservation to be cancelled at the partner and queue that after commit (the hint;
    None when it was decided before)."""
    changes: dict[str, object] = {
        "compensation_requested_at": timezone.now(),
        "compensation_reason": reason,
    }
    if reason == "duplicate":
        changes["role"] = ReservationRole.DUPLICATE
    elif booking is None:
        changes["role"] = ReservationRole.ORPHAN
    updated = PartnerReservation.objects.filter(
        pk=reservation_id, compensation_requested_at__isnull=True
    ).update(**changes)
    if not updated:
        return None  # already decided: running twice does nothing extra
    reservation = PartnerReservation.objects.get(pk=reservation_id)
    if booking is not None:
        record_event(
            booking,
            "partner.compensation.requested",
            actor=actor,
            actor_label=actor_label,
            summary=compensation_summary(reservation, "requested"),
            data=compensation_data(reservation),
        )
    # Due for the sweeper now (`compensation_requested_at`): the message is a hint.
    return messages.send_for_partner_on_commit(
        messages.COMPENSATE_RESERVATION, reservation.partner, reservation_id
    )


def orphan_cancel_withdrawn(reservation: PartnerReservation) -> bool:
    """Whether an orphan (locked by the caller) may be linked to the booking now found for it: no
    cancel of it decided, or one decided and withdrawn now, as no cancel of it has been sent yet.

    A cancel sent (an attempt opened: it may have been made) or verified cannot be taken back,
    and the reservation is not the booking's to keep: it stays an orphan, its cancel goes on, and
    the booking follows what the partner holds for it. One statement, conditional on no cancel
    attempt: the compensation opens its attempt under the same row lock and makes no call once
    the decision is withdrawn (`compensation._cancel_attempt_open`), so the two never both win."""
    if reservation.compensation_requested_at is None:
        return True
    sent = PartnerAttempt.objects.filter(reservation=OuterRef("pk"), operation=Operation.CANCEL)
    withdrawn = (
        PartnerReservation.objects.filter(
            pk=reservation.pk, compensation_requested_at__isnull=False, compensated_at__isnull=True
        )
        .exclude(Exists(sent))
        .update(compensation_requested_at=None, compensation_reason="")
    )
    if withdrawn:
        reservation.compensation_requested_at, reservation.compensation_reason = None, ""
    return bool(withdrawn)


def request_compensation_again(reservation: PartnerReservation) -> messages.Hint:
    """Support drives a cancel decided earlier again (stalled, or given up after its tries): a
    person's decision, so its tries count from now, and it is queued after commit (the hint)."""
    PartnerReservation.objects.filter(pk=reservation.pk, compensated_at__isnull=True).update(
        compensation_requested_at=timezone.now()
    )
    return messages.send_for_partner_on_commit(
        messages.COMPENSATE_RESERVATION, reservation.partner, reservation.pk
    )


def _handle_orphan(reservation: PartnerReservation, *, actor: Actor | str, actor_label: str) -> None:
    """A reservation no booking wants: a case for support while it is live, cancelled by
    automation unless PARTNER_COMPENSATE_ORPHANS is off."""
    if not reservation.is_live:
        if reservation.compensation_requested_at is None:  # ours is verified by the compensation
            orphan_case_settled(reservation, actor=actor, actor_label=actor_label)
        return
    logger.warning(
        "orphan partner reservation",
        extra={
            "partner_ref": reservation.partner_ref,
            "client_reference": reservation.client_reference,
        },
    )
    cancelling = settings.PARTNER_COMPENSATE_ORPHANS
    orphan_case_open(reservation, cancelling=cancelling, actor=actor, actor_label=actor_label)
    if cancelling:
        request_compensation(reservation.pk, reason="orphan", booking=None, actor=Actor.SYSTEM)
