"""What a support action will do, shown before it runs: our state beside the partner's (asked
live), whether the action may run now and why not, and its effects step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from bookings.cancelling import CancelMoney, cancel_money
from bookings.models import Booking
from bookings.states import BookingState
from config.errors import NotFound, ValidationFailed
from partners.models import PartnerReservation
from reconciliation.services.support.checks import (
    Situation,
    ended_before_support,
    outcome_refusal,
    refusal,
    resolve_outcomes,
)
from reconciliation.services.support.once import new_token
from reconciliation.services.support.partner_side import (
    PartnerSide,
    ReservationPair,
    last_known,
    pair_up,
    partner_side,
)
from reconciliation.services.support.permissions import ACTIONS, CANCEL, COMPENSATE, RESOLVE, RETRY, SYNC


@dataclass
class Preview:
    action: str
    title: str
    booking: Booking
    allowed: bool
    refusal: str
    effects: list[str]
    pairs: list[ReservationPair]
    partner: PartnerSide
    fenced: bool
    token: str
    needs_note: bool = False
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (value, label, refusal)
    money: CancelMoney | None = None  # a cancel's: what it does to the customer's money

    def money_dict(self) -> dict[str, str] | None:
        money = self.money
        if money is None:
            return None
        return {
            "outcome": str(money.outcome),
            "text": money.text,
            "why": money.why,
            "currency": money.currency,
            "fee": f"{money.fee:.2f}",
            "refund": f"{money.refund:.2f}",
            "released": f"{money.released:.2f}",
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "title": self.title,
            "booking": self.booking.reference,
            "allowed": self.allowed,
            "refusal": self.refusal,
            "effects": self.effects,
            "ours": {
                "status": self.booking.status,
                "customer_status": str(self.booking.customer_status),
                "attention_reason": self.booking.attention_reason,
                "deadline": self.booking.deadline.isoformat(),
                "fenced": self.fenced,
            },
            "partner": {
                "live": self.partner.live,
                "method": self.partner.method,
                "checked_at": self.partner.checked_at.isoformat(),
                "note": self.partner.note,
                "reservations": self.partner.reservations,
            },
            "reservations": [
                {
                    "partner_ref": p.partner_ref,
                    "ours": p.ours,
                    "theirs": p.theirs,
                    "version_ours": p.version_ours,
                    "version_theirs": p.version_theirs,
                    "role": p.role,
                    "compensation": p.compensation,
                    "mismatch": p.mismatch,
                }
                for p in self.pairs
            ],
            "outcomes": [{"value": v, "label": lbl, "refusal": r} for v, lbl, r in self.outcomes],
            "money": self.money_dict(),
            "token": self.token,
        }


def _sync(situation: Situation) -> list[str]:
    booking = situation.booking
    return [
        f"Queue a partner sync on {booking.partner.queue_name}: ask {booking.partner.code} what it holds "
        f"for {booking.reference} and apply it through the one door.",
        "The booking moves only if the partner's answer says so (e.g. confirmed, rejected, cancelled).",
    ]


def _retry(situation: Situation) -> list[str]:
    booking = situation.booking
    steps = []
    if booking.status == BookingState.NEEDS_ATTENTION:
        steps.append("needs_attention → requested (the attention reason is cleared).")
    steps.append(
        f"Queue a submission on {booking.partner.queue_name}: one create with our key "
        f"{booking.partner_key}, recorded before the call."
    )
    return steps


def _cancels_again(stalled: list[PartnerReservation]) -> list[str]:
    """The cancels decided earlier and never verified that the action drives again."""
    return [
        f"Cancel {r.partner_ref} ({r.status}) again: the cancel decided "
        f"{r.compensation_requested_at:%Y-%m-%d %H:%M} UTC ({r.compensation_reason}) was never verified."
        for r in stalled
    ]


# What the customer sees of a booking that had ended before support took it up, whatever support does.
_ENDED_STAYS = (
    "The customer's booking had ended ({end}) before support took it up: what they are shown, "
    "their money and their mail stay those of {end}."
)


def _compensate(situation: Situation) -> list[str]:
    live, stalled = situation.uncompensated_live, situation.stalled_compensations
    end = ended_before_support(situation)
    if end:
        back = f"needs_attention → {end} (its end, not failed)"
        held = live or situation.unverified_compensations or situation.fenced
        steps = [f"{back} once the partner holds nothing of it." if held else f"{back}: nothing is held."]
        steps.append(_ENDED_STAYS.format(end=end))
    else:
        steps = [f"{situation.booking.status} → failed."]
    steps += [f"Cancel {r.partner_ref} ({r.status}) at the partner, then verify by a lookup." for r in live]
    steps += _cancels_again(stalled)
    # Of an ended booking, a cancel the partner made since (no longer live) is verified too.
    let_go = [r for r in situation.unverified_compensations if r not in stalled] if end else []
    steps += [
        f"Verify {r.partner_ref} ({r.status}) by a lookup: the cancel decided "
        f"{r.compensation_requested_at:%Y-%m-%d %H:%M} UTC was never verified."
        for r in let_go
    ]
    if not live and not stalled and not let_go:
        steps.append("We know of no live reservation at the partner: nothing to cancel there.")
    if situation.fenced:
        steps.append(
            "An earlier create's outcome is unknown: queue a sync; whatever it finds is cancelled too."
        )
    return steps


def _cancel(situation: Situation) -> list[str]:
    steps = [f"{situation.booking.status} → cancel_requested (the customer sees 'cancelling')."]
    steps += [
        f"Queue the cancellation: cancel {r.partner_ref} at the partner and verify."
        for r in situation.uncompensated_live
    ]
    steps += _cancels_again(situation.stalled_compensations)
    steps.append("→ cancelled once the partner holds nothing live for it.")
    return steps


def _resolve(situation: Situation) -> list[str]:
    end = ended_before_support(situation)
    if end:
        return [
            f"needs_attention → {end}, the end it had, with your note on the timeline; no other outcome.",
            "Only when the partner holds nothing live for it.",
            _ENDED_STAYS.format(end=end),
        ]
    return [
        "needs_attention → the outcome you choose, with your note on the timeline.",
        "confirmed: only when the partner confirmed the reservation we hold.",
        "failed / cancelled: only when the partner holds nothing live for it.",
    ]


_EFFECTS: dict[str, Callable[[Situation], list[str]]] = {
    SYNC: _sync,
    RETRY: _retry,
    COMPENSATE: _compensate,
    CANCEL: _cancel,
    RESOLVE: _resolve,
}


def booking_by_reference(reference: str) -> Booking:
    booking = Booking.objects.select_related("partner", "offer", "customer").with_reference(reference).first()
    if booking is None:
        raise NotFound(f"No booking {reference!r}.")
    return booking


def preview(action: str, booking: Booking, *, live: bool = True, token: str | None = None) -> Preview:
    """What `action` will do to `booking`: our state beside the partner's (asked live)."""
    if action not in ACTIONS:
        raise ValidationFailed(f"Unknown support action {action!r}; known: {', '.join(ACTIONS)}.")
    situation = Situation(Booking.objects.select_related("partner").get(pk=booking.pk))
    side = (
        partner_side(situation.booking, situation.held)
        if live
        else last_known(situation.held, note="Not asked live; showing the last known state.")
    )
    why_not = refusal(action, situation)
    shown = Preview(
        action=action,
        title=ACTIONS[action]["title"],
        booking=situation.booking,
        allowed=not why_not,
        refusal=why_not,
        effects=_EFFECTS[action](situation),
        pairs=pair_up(situation.held, side),
        partner=side,
        fenced=situation.fenced,
        token=token or new_token(),
        needs_note=action == RESOLVE,
    )
    if action == CANCEL:
        # What the customer's own cancel page tells them, by its one rule (`cancel_money`, the fee
        # by `fee_if_cancelled`): the refund, the fee kept, the hold released, or no payment at all.
        shown.money = cancel_money(situation.booking, at=timezone.now())
        shown.effects.append(f"Money: {shown.money.text} {shown.money.why}".rstrip())
    if action == RESOLVE:
        shown.outcomes = [
            (value, BookingState(value).label, outcome_refusal(value, situation))
            for value in resolve_outcomes(situation)
        ]
        if shown.allowed and all(why for _, _, why in shown.outcomes):
            shown.allowed = False
            shown.refusal = "No outcome fits what the partner holds yet: " + shown.outcomes[0][2]
    if side.live:
        unknown = [p.partner_ref for p in shown.pairs if p.theirs and not p.ours]
        if unknown:
            shown.effects.append(
                f"The partner holds {', '.join(unknown)} that we have not recorded yet: a sync records it "
                "(and cancels it when it is an extra)."
            )
    return shown
