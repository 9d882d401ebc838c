"""The chaos run's invariant checks on hand-made snapshots: each one must see what it claims to.

A checker that passes everything proves nothing, so every violation kind is provoked here once,
next to a clean snapshot that must pass every check.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bookings.timeline import record_event
from chaos.checks import Limits, allowed_transitions, run_all
from chaos.checks.consistency import check_confirmed_matches_partner
from chaos.checks.disagreements import check_partner_disagreements
from chaos.checks.ending import check_everything_ends
from chaos.checks.latency import check_latency
from chaos.checks.lost import check_no_booking_lost
from chaos.checks.reservations import check_partner_reservations
from chaos.checks.retries import check_tries_bounded
from chaos.checks.timelines import check_observations, check_timelines
from chaos.model import (
    BookingRow,
    ClientKey,
    EventRow,
    IdempotencyRow,
    ObservationRow,
    OurReservation,
    PartnerChange,
    Snapshot,
    TruthReservation,
)
from chaos.snapshot import unanswered_read_share
from tests.factories import BookingFactory

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
SKEW_S = 75.0
ALLOWED = allowed_transitions()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def events(*moves: tuple[str, str, float], actor: str = "worker") -> tuple[EventRow, ...]:
    return tuple(
        EventRow(id=i + 1, kind=f"booking.{to}", actor=actor, from_state=src, to_state=to, occurred_at=at(t))
        for i, (src, to, t) in enumerate(moves)
    )


def confirmed_booking(reference: str = "BK-AAAAAA", *, confirmed_at: float = 2.0) -> BookingRow:
    return BookingRow(
        reference=reference,
        partner_code="ref",
        customer="c1",
        status="confirmed",
        attention_reason="",
        attention_detail="",
        deadline=at(120),
        created_at=at(0),
        events=events(
            ("", "requested", 0),
            ("requested", "submitting", 0.5),
            ("submitting", "confirmed", confirmed_at),
        ),
    )


def truth(
    ref: str = "R-1", client_reference: str = "BK-AAAAAA", status: str = "confirmed", *, at_s: float = 1.0
) -> TruthReservation:
    history = [
        PartnerChange(
            version=1,
            status="confirmed" if status != "pending" else "pending",
            at=at(at_s + SKEW_S),
            cause="create",
        )
    ]
    if status in ("cancelled", "rejected"):
        history = [
            PartnerChange(version=1, status="pending", at=at(at_s + SKEW_S), cause="create"),
            PartnerChange(version=2, status=status, at=at(at_s + 1 + SKEW_S), cause="settle"),
        ]
    return TruthReservation(
        partner_code="ref",
        partner_ref=ref,
        client_reference=client_reference,
        status=status,
        history=tuple(history),
    )


def ours(
    ref: str = "R-1", booking: str | None = "BK-AAAAAA", status: str = "confirmed", **changes
) -> OurReservation:
    row = OurReservation(
        partner_code="ref",
        partner_ref=ref,
        booking_reference=booking,
        role="primary",
        status=status,
        version=1,
        compensation_requested_at=None,
        compensation_reason="",
        compensated_at=None,
    )
    return replace(row, **changes)


def clean_snapshot() -> Snapshot:
    return Snapshot(
        profiles={"ref": "reference"},
        skew_s={"ref": SKEW_S},
        bookings={"BK-AAAAAA": confirmed_booking()},
        idempotency=[IdempotencyRow(customer="c1", key="k1", booking_reference="BK-AAAAAA")],
        reservations=[ours()],
        observations=[
            ObservationRow(
                id=1,
                partner_code="ref",
                partner_ref="R-1",
                source="response",
                status="confirmed",
                version=1,
                partner_modified_at=at(1 + SKEW_S),
                received_at=at(2),
                result="applied",
            )
        ],
        truth=[truth()],
        clients=[
            ClientKey(
                key="k1",
                customer="c1",
                outcome="accepted",
                references=("BK-AAAAAA",),
                responses=("202 BK-AAAAAA",),
            )
        ],
    )


def kinds(result) -> list[str]:
    return sorted(v.kind for v in result.violations)


LIMITS = Limits(
    allowance_s=7, detection_window_s=30, max_retries=5, refused_max_tries=3, compensation_max_tries=8
)


def test_a_clean_run_passes_every_check():
    results = run_all(clean_snapshot(), allowed=ALLOWED, limits=LIMITS, checked_at=at(300))
    assert {r.name: kinds(r) for r in results} == {r.name: [] for r in results}


# --- no booking lost ---------------------------------------------------------------------------
def test_an_accepted_request_without_a_booking_is_lost():
    snapshot = clean_snapshot()
    snapshot.clients.append(
        ClientKey(
            key="k2",
            customer="c1",
            outcome="accepted",
            references=("BK-BBBBBB",),
            responses=("202 BK-BBBBBB",),
        )
    )
    assert kinds(check_no_booking_lost(snapshot)) == ["accepted_but_lost"]


def test_one_key_answered_with_two_references_is_a_violation():
    snapshot = clean_snapshot()
    snapshot.clients[0] = replace(snapshot.clients[0], references=("BK-AAAAAA", "BK-CCCCCC"))
    assert kinds(check_no_booking_lost(snapshot)) == ["same_key_different_bookings"]


def test_a_booking_no_request_made_is_a_violation():
    snapshot = clean_snapshot()
    snapshot.bookings["BK-DDDDDD"] = confirmed_booking("BK-DDDDDD")
    snapshot.idempotency.append(IdempotencyRow(customer="c9", key="stranger", booking_reference="BK-DDDDDD"))
    assert kinds(check_no_booking_lost(snapshot)) == ["booking_from_unknown_request"]


def test_a_refused_request_that_left_a_booking_is_half_written():
    snapshot = clean_snapshot()
    snapshot.clients[0] = replace(snapshot.clients[0], outcome="refused", references=(), refusal="400 x")
    assert kinds(check_no_booking_lost(snapshot)) == ["refused_but_stored"]


# --- partner reservations ----------------------------------------------------------------------
def test_two_live_reservations_for_one_booking_are_a_violation_and_counted():
    snapshot = clean_snapshot()
    snapshot.truth.append(truth("R-2", status="confirmed"))
    snapshot.reservations.append(ours("R-2", role="duplicate"))
    result = check_partner_reservations(snapshot)
    assert kinds(result) == ["duplicate_created", "more_than_one_live"]
    assert (result.figures["duplicates_created"], result.figures["duplicates_left_live"]) == (1, 1)


def test_a_stray_duplicate_support_has_in_an_open_case_is_counted_apart_not_left_live():
    # A duplicate whose cancel the partner refused through every try, its booking left confirmed:
    # support's case (invariant 5's hand-over), not a second live reservation nobody is on.
    snapshot = clean_snapshot()
    snapshot.truth.append(truth("R-2", status="confirmed"))
    stray = ours(
        "R-2",
        role="duplicate",
        compensation_requested_at=at(3),
        compensation_reason="duplicate",
        case_state="open",
        case_automation="cancel_failed",
    )
    snapshot.reservations.append(stray)
    result = check_partner_reservations(snapshot)
    assert kinds(result) == ["duplicate_created"]  # the second create itself still broke the rule
    assert (result.figures["duplicates_left_live"], result.figures["duplicates_left_with_support"]) == (1, 1)

    # a case closed while the partner still holds it live is nobody's: left live again
    snapshot.reservations[-1] = replace(stray, case_state="closed")
    result = check_partner_reservations(snapshot)
    assert kinds(result) == ["duplicate_created", "more_than_one_live"]
    assert result.figures["duplicates_left_with_support"] == 0


def test_a_compensated_duplicate_still_broke_the_no_second_create_rule():
    snapshot = clean_snapshot()
    snapshot.truth.append(truth("R-2", status="cancelled"))
    snapshot.reservations.append(
        ours(
            "R-2", status="cancelled", role="duplicate", compensation_requested_at=at(3), compensated_at=at(4)
        )
    )
    result = check_partner_reservations(snapshot)
    assert kinds(result) == ["duplicate_created"]
    assert (result.figures["duplicates_left_live"], result.figures["cancelled_by_compensation"]) == (0, 1)


def test_a_live_reservation_we_never_learned_of_is_a_violation():
    snapshot = clean_snapshot()
    snapshot.truth.append(truth("R-9", status="pending"))
    assert kinds(check_partner_reservations(snapshot)) == [
        "duplicate_created",
        "live_unknown_to_us",
        "more_than_one_live",
    ]


def test_a_live_reservation_for_an_expired_booking_is_a_violation():
    snapshot = clean_snapshot()
    booking = snapshot.bookings["BK-AAAAAA"]
    snapshot.bookings["BK-AAAAAA"] = replace(
        booking,
        status="expired",
        events=events(("", "requested", 0), ("requested", "submitting", 1), ("submitting", "expired", 121)),
    )
    assert kinds(check_partner_reservations(snapshot)) == ["live_for_unwanting_booking"]


def test_a_reservation_we_hold_but_the_partner_never_had_is_a_phantom():
    snapshot = clean_snapshot()
    snapshot.reservations.append(ours("R-404", status="pending"))
    assert kinds(check_partner_reservations(snapshot)) == ["phantom_reservation"]


# --- confirmed means confirmed -----------------------------------------------------------------
def test_confirmed_here_but_cancelled_at_the_partner_is_a_violation():
    snapshot = clean_snapshot()
    snapshot.truth = [truth(status="cancelled")]
    assert kinds(check_confirmed_matches_partner(snapshot)) == ["confirmed_but_not_at_partner"]


def test_confirmed_at_the_partner_but_still_pending_here_is_a_violation():
    snapshot = clean_snapshot()
    booking = snapshot.bookings["BK-AAAAAA"]
    snapshot.bookings["BK-AAAAAA"] = replace(
        booking,
        status="pending_partner",
        events=events(
            ("", "requested", 0), ("requested", "submitting", 1), ("submitting", "pending_partner", 2)
        ),
    )
    assert kinds(check_confirmed_matches_partner(snapshot)) == ["partner_confirmed_not_reflected"]


def test_partner_confirmed_for_a_booking_with_support_is_a_counted_case():
    snapshot = clean_snapshot()
    booking = snapshot.bookings["BK-AAAAAA"]
    snapshot.bookings["BK-AAAAAA"] = replace(booking, status="needs_attention", attention_reason="x")
    result = check_confirmed_matches_partner(snapshot)
    assert (kinds(result), result.figures["partner_confirmed_needs_attention"]) == ([], 1)


# --- timelines and observations ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("moves", "status", "expected"),
    [
        (
            (("", "requested", 0), ("submitting", "confirmed", 1)),
            "confirmed",
            ["broken_chain"],
        ),
        (
            (("", "requested", 0), ("requested", "confirmed", 1), ("confirmed", "requested", 2)),
            "requested",
            ["transition_not_allowed"],
        ),
        ((("", "requested", 0), ("requested", "submitting", 1)), "confirmed", ["state_not_on_timeline"]),
        ((("requested", "submitting", 1),), "submitting", ["no_creation_event"]),
    ],
)
def test_a_timeline_must_be_a_chain_of_declared_transitions(moves, status, expected):
    snapshot = clean_snapshot()
    booking = snapshot.bookings["BK-AAAAAA"]
    snapshot.bookings["BK-AAAAAA"] = replace(booking, status=status, events=events(*moves))
    assert kinds(check_timelines(snapshot, allowed=ALLOWED)) == expected


def test_an_older_version_applied_after_a_newer_one_is_a_regression():
    snapshot = clean_snapshot()
    first = snapshot.observations[0]
    snapshot.truth = [
        replace(
            truth(),
            history=(
                PartnerChange(1, "pending", at(1), "create"),
                PartnerChange(2, "confirmed", at(2), "settle"),
            ),
        )
    ]
    snapshot.observations = [
        replace(first, id=1, status="confirmed", version=2),
        replace(first, id=2, status="pending", version=1),
    ]
    assert kinds(check_observations(snapshot)) == ["applied_older"]


def test_an_applied_observation_the_partner_never_said_is_untrue():
    snapshot = clean_snapshot()
    snapshot.observations = [replace(snapshot.observations[0], status="rejected")]
    assert kinds(check_observations(snapshot)) == ["applied_untrue"]


def test_stale_observations_ignored_are_no_violation():
    snapshot = clean_snapshot()
    snapshot.observations.append(replace(snapshot.observations[0], id=2, status="pending", result="stale"))
    assert kinds(check_observations(snapshot)) == []


# --- everything ends ---------------------------------------------------------------------------
def test_an_open_booking_at_the_end_is_not_at_rest():
    snapshot = clean_snapshot()
    booking = snapshot.bookings["BK-AAAAAA"]
    snapshot.bookings["BK-AAAAAA"] = replace(
        booking, status="submitting", events=events(("", "requested", 0), ("requested", "submitting", 1))
    )
    assert kinds(check_everything_ends(snapshot, allowance_s=7, checked_at=at(300))) == ["not_at_rest"]


def test_reaching_rest_after_deadline_plus_allowance_is_late():
    snapshot = clean_snapshot()
    snapshot.bookings["BK-AAAAAA"] = confirmed_booking(confirmed_at=128)
    assert kinds(check_everything_ends(snapshot, allowance_s=7, checked_at=at(300))) == ["at_rest_too_late"]
    snapshot.bookings["BK-AAAAAA"] = confirmed_booking(confirmed_at=126)
    assert kinds(check_everything_ends(snapshot, allowance_s=7, checked_at=at(300))) == []


def test_needs_attention_needs_a_reason_and_reasons_are_listed_with_the_partner_view():
    snapshot = clean_snapshot()
    booking = snapshot.bookings["BK-AAAAAA"]
    moves = (("", "requested", 0), ("requested", "submitting", 1), ("submitting", "needs_attention", 2))
    snapshot.bookings["BK-AAAAAA"] = replace(booking, status="needs_attention", events=events(*moves))
    result = check_everything_ends(snapshot, allowance_s=7, checked_at=at(300))
    assert kinds(result) == ["needs_attention_without_reason"]
    assert result.figures["needs_attention"] == {"(none)": {"count": 1, "partner_holds": {"1 confirmed": 1}}}


# --- latency -----------------------------------------------------------------------------------
def test_latency_runs_from_the_partner_change_on_our_clock_to_our_transition():
    result = check_latency(clean_snapshot())  # partner confirmed at 1 s (skewed by 75 s), we at 2 s
    assert result.figures["booking_state"]["reference confirmed"] == {
        "n": 1,
        "p50": 1.0,
        "p95": 1.0,
        "p99": 1.0,
        "max": 1.0,
    }
    assert result.figures["observation_received"]["reference via response"]["p50"] == 1.0


# --- partner disagreements ---------------------------------------------------------------------
def the_partner(initiative: str, at_s: float, **fields) -> TruthReservation:
    """The clean snapshot's reservation, then something the partner did to it on its own."""
    reservation = truth()
    status = "cancelled" if initiative == "partner_cancel" else "confirmed"
    change = PartnerChange(2, status, at(at_s + SKEW_S), initiative, fields.pop("changes", {}))
    return replace(reservation, status=status, history=(*reservation.history, change), **fields)


def handed_over(reason: str, at_s: float) -> BookingRow:
    booking = confirmed_booking()
    move = EventRow(
        id=9,
        kind="booking.needs_attention",
        actor="sweeper",
        from_state="confirmed",
        to_state="needs_attention",
        occurred_at=at(at_s),
    )
    return replace(booking, status="needs_attention", attention_reason=reason, events=(*booking.events, move))


DISAGREEMENTS = [
    ("partner_cancel", {}, "cancelled", "partner_cancelled_confirmed"),
    ("vanish", {"vanished_at": at(10 + SKEW_S)}, "lost", "partner_lost_reservation"),
    (
        "amend",
        {"changes": {"guests": {"old": 2, "new": 3}}, "terms": {"guests": "3"}},
        "changed",
        "partner_mismatch",
    ),
]


@pytest.mark.parametrize(("initiative", "fields", "kind", "reason"), DISAGREEMENTS)
def test_a_booking_left_confirmed_past_the_window_after_the_partner_disagreed_is_a_violation(
    initiative, fields, kind, reason
):
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner(initiative, 10, **fields)]

    result = check_partner_disagreements(snapshot, window_s=30, checked_at=at(41))

    assert kinds(result) == [f"confirmed_but_partner_{kind}"]
    assert result.figures[f"partner_{kind}"] == 1


@pytest.mark.parametrize(("initiative", "fields", "kind", "reason"), DISAGREEMENTS)
def test_still_confirmed_within_the_window_at_the_end_is_counted_not_judged(initiative, fields, kind, reason):
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner(initiative, 10, **fields)]

    result = check_partner_disagreements(snapshot, window_s=30, checked_at=at(39))

    assert (kinds(result), result.figures["still_within_window_at_end"]) == ([], 1)


@pytest.mark.parametrize(("initiative", "fields", "kind", "reason"), DISAGREEMENTS)
def test_a_hand_over_within_the_window_passes_and_is_timed_by_kind_and_reason(
    initiative, fields, kind, reason
):
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner(initiative, 10, **fields)]
    snapshot.bookings["BK-AAAAAA"] = handed_over(reason, 25)

    result = check_partner_disagreements(snapshot, window_s=30, checked_at=at(300))

    assert kinds(result) == []
    assert result.figures["seconds_to_hand_over"][kind]["max"] == 15.0  # on our clock, skew removed
    assert result.figures["reasons"] == {kind: {reason: 1}}


def test_a_hand_over_after_the_window_is_too_late():
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner("partner_cancel", 10)]
    snapshot.bookings["BK-AAAAAA"] = handed_over("partner_cancelled_confirmed", 41)

    assert kinds(check_partner_disagreements(snapshot, window_s=30, checked_at=at(300))) == [
        "handed_over_too_late"
    ]


def test_a_disagreement_before_our_confirmation_counts_from_the_confirmation():
    # The partner amended it at 1 s; our confirmation (from an answer sent before) came at 2 s.
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner("amend", 1, changes={"guests": {"old": 2, "new": 3}})]
    snapshot.bookings["BK-AAAAAA"] = handed_over("partner_mismatch", 32)

    result = check_partner_disagreements(snapshot, window_s=30, checked_at=at(300))

    assert (kinds(result), result.figures["seconds_to_hand_over"]["changed"]["max"]) == ([], 30.0)


def test_a_reservation_the_booking_was_letting_go_is_not_judged():
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner("vanish", 10, vanished_at=at(10 + SKEW_S))]
    snapshot.reservations = [ours(compensation_requested_at=at(5))]

    assert check_partner_disagreements(snapshot, window_s=30, checked_at=at(300)).figures["partner_lost"] == 0


def test_a_lost_reservation_is_not_live_for_the_other_checks():
    snapshot = clean_snapshot()
    snapshot.truth = [the_partner("vanish", 10, vanished_at=at(10 + SKEW_S))]

    assert kinds(check_confirmed_matches_partner(snapshot)) == ["confirmed_but_not_at_partner"]
    assert "is lost at the partner" in check_confirmed_matches_partner(snapshot).violations[0].message
    assert kinds(check_partner_reservations(snapshot)) == []


def test_applying_lost_is_true_only_for_a_reservation_the_partner_lost():
    snapshot = clean_snapshot()
    lost = replace(snapshot.observations[0], id=2, source="lookup", status="lost", version=None)
    snapshot.observations.append(lost)
    assert kinds(check_observations(snapshot)) == ["applied_untrue"]

    snapshot.truth = [the_partner("vanish", 10, vanished_at=at(10 + SKEW_S))]
    assert kinds(check_observations(snapshot)) == []


def test_creating_again_after_the_partner_lost_the_first_is_no_duplicate():
    snapshot = clean_snapshot()
    first = replace(truth("R-0", at_s=0.5), vanished_at=at(0.8 + SKEW_S))
    snapshot.truth.append(first)
    snapshot.reservations.append(ours("R-0", status="lost"))

    result = check_partner_reservations(snapshot)

    assert (kinds(result), result.figures["created_again_after_the_partner_lost_it"]) == ([], 1)


# --- tries bounded -----------------------------------------------------------------------------
def tries(snapshot: Snapshot):
    return check_tries_bounded(snapshot, max_retries=5, refused_max_tries=3, compensation_max_tries=8)


def test_a_message_retried_more_than_its_actor_allows_is_a_violation_with_the_log_lines():
    snapshot = clean_snapshot()
    snapshot.retried = {"m-ok": ["worker-1: retry"] * 5, "m-loop": [f"worker-1: retry {n}" for n in range(6)]}

    result = tries(snapshot)

    assert kinds(result) == ["message_retried_past_its_tries"]
    assert result.violations[0].evidence["log"][-1] == "worker-1: retry 5"
    assert (result.figures["messages_retried"], result.figures["most_retries_of_a_message"]) == (2, 6)


def test_refused_answers_past_their_tries_and_cancels_past_theirs_are_violations():
    snapshot = clean_snapshot()
    snapshot.refused_in_a_row = {"BK-AAAAAA": 4, "BK-BBBBBB": 3}
    snapshot.cancel_calls = {("ref", "R-1"): 9, ("ref", "R-2"): 8}

    assert kinds(tries(snapshot)) == ["cancelled_past_its_tries", "read_past_its_refusals"]


def test_a_reservation_cancelled_past_its_tries_names_its_booking_and_the_partners_cancels():
    snapshot = clean_snapshot()
    duplicate = truth("R-2")
    cancelled = PartnerChange(version=2, status="cancelled", at=at(30 + SKEW_S), cause="cancel")
    snapshot.truth.append(replace(duplicate, status="cancelled", history=(*duplicate.history, cancelled)))
    snapshot.reservations.append(
        ours("R-2", role="duplicate", compensation_requested_at=at(3), compensation_reason="duplicate")
    )
    snapshot.reservations.append(
        ours("R-9", booking=None, role="orphan", case_state="open", case_automation="cancelling")
    )
    snapshot.cancel_calls = {("ref", "R-2"): 17, ("ref", "R-9"): 9}

    by_ref = {v.message.split()[0]: v for v in tries(snapshot).violations}

    duplicate_cancels = by_ref["ref:R-2"]
    assert duplicate_cancels.booking == "BK-AAAAAA"
    assert duplicate_cancels.message == (
        "ref:R-2 (BK-AAAAAA) was cancelled 17 times (PARTNER_COMPENSATION_MAX_TRIES 8)"
    )
    evidence = duplicate_cancels.evidence
    assert evidence["state"] == "confirmed" and evidence["timeline"]  # the booking's, as other checks give
    assert evidence["ours"]["role"] == "duplicate"
    assert evidence["ours"]["compensation_requested_at"] == at(3).isoformat(timespec="milliseconds")
    assert evidence["partner_cancels"] == [
        f"v2 cancelled @{at(30 + SKEW_S).isoformat(timespec='milliseconds')} (cancel)"
    ]
    assert evidence["partner_reservation"].startswith("ref:R-2 ref=BK-AAAAAA now=cancelled")
    # an orphan has no booking: our record of it, and no partner truth when the partner has none
    orphan = by_ref["ref:R-9"]
    assert orphan.booking is None and "(no booking)" in orphan.message
    assert orphan.evidence == {
        "ours": {
            "role": "orphan",
            "status": "confirmed",
            "compensation_reason": "",
            "compensation_requested_at": None,
            "compensated_at": None,
            "orphan_case": "open",
            "orphan_automation": "cancelling",
        }
    }


@pytest.mark.django_db
def test_the_unanswered_read_share_counts_the_runs_partners_failed_syncs_only():
    ours, other = BookingFactory(), BookingFactory()
    assert unanswered_read_share([ours.partner.code]) == 0.0  # no read yet: nothing refused
    for kind in ("sync.completed", "sync.completed", "sync.completed", "sync.failed"):
        record_event(ours, kind, actor="worker")
    record_event(ours, "booking.confirmed", actor="worker")  # not a read
    for _ in range(3):
        record_event(other, "sync.failed", actor="worker")  # another run's partner
    assert unanswered_read_share([ours.partner.code]) == 0.25
