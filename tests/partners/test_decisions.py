"""Table-driven tests of the recovery rules (partners/decisions.py): pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bookings.states import BookingState
from partners import decisions
from partners.decisions import (
    Held,
    NextStep,
    ReservationView,
    Strategy,
    after_failed_read,
    after_repeated_failures,
)
from partners.models import Capability, ObservationResult, Outcome

S = BookingState
APPLIED, STALE, DUPLICATE = ObservationResult.APPLIED, ObservationResult.STALE, ObservationResult.DUPLICATE
T0 = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)


# --- after_create: a create's outcome -> the next step -----------------------------------------
@pytest.mark.parametrize(
    ("outcome", "error_code", "http_status", "expected"),
    [
        (Outcome.OK, "", 201, NextStep.APPLY_RESPONSE),
        (Outcome.OK, "", 200, NextStep.APPLY_RESPONSE),  # idempotent replay of an earlier create
        (Outcome.REJECTED, "", 201, NextStep.APPLY_RESPONSE),  # the rejected reservation is truth
        (Outcome.TRANSIENT, "", None, NextStep.RETRY_LATER),  # connect refused: never sent
        (Outcome.TRANSIENT, "", 429, NextStep.RETRY_LATER),
        (Outcome.TRANSIENT, "request_in_progress", 409, NextStep.RETRY_LATER),
        (Outcome.TRANSIENT, "circuit_open", None, NextStep.RETRY_LATER),
        (Outcome.AMBIGUOUS, "", None, NextStep.RESOLVE_AMBIGUITY),  # read timeout / dropped
        (Outcome.AMBIGUOUS, "", 503, NextStep.RESOLVE_AMBIGUITY),  # 5xx on a write
        (Outcome.PERMANENT, "invalid_request", 400, NextStep.REJECT),
        (Outcome.PERMANENT, "unknown_product", 422, NextStep.REJECT),
        (Outcome.PERMANENT, "unauthorized", 401, NextStep.NEEDS_ATTENTION),  # our config is broken
        (Outcome.PERMANENT, "", 403, NextStep.NEEDS_ATTENTION),
        (Outcome.PERMANENT, "idempotency_key_reused", 422, NextStep.NEEDS_ATTENTION),
    ],
)
def test_after_create(outcome, error_code, http_status, expected):
    assert decisions.after_create(outcome, error_code=error_code, http_status=http_status) == expected


# --- ambiguity_strategy: capabilities -> how to learn what the partner holds --------------------
LOOKUP, KEYS, LISTING = (
    Capability.LOOKUP_BY_REFERENCE,
    Capability.IDEMPOTENCY_KEYS,
    Capability.CHANGE_LISTING,
)


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ([LOOKUP, KEYS, Capability.WEBHOOKS], Strategy.LOOKUP_BY_REFERENCE),  # reference default
        ([LOOKUP], Strategy.LOOKUP_BY_REFERENCE),
        ([KEYS], Strategy.REPLAY_IDEMPOTENT_CREATE),  # no lookup: retry with the same key
        ([KEYS, Capability.WEBHOOKS, Capability.ASYNC_CONFIRMATION], Strategy.REPLAY_IDEMPOTENT_CREATE),
        ([LISTING], Strategy.SEARCH_CHANGE_LISTING),  # legacy default
        ([KEYS, LISTING], Strategy.REPLAY_IDEMPOTENT_CREATE),
        ([LOOKUP, LISTING], Strategy.LOOKUP_BY_REFERENCE),
        ([Capability.WEBHOOKS], Strategy.ASK_SUPPORT),  # webhooks alone prove nothing
        ([], Strategy.ASK_SUPPORT),
    ],
)
def test_ambiguity_strategy_reads_capabilities_only(capabilities, expected):
    assert decisions.ambiguity_strategy(capabilities) == expected
    assert decisions.ambiguity_strategy(set(capabilities)) == expected


# --- order_observation: monotonic per reservation ---------------------------------------------
@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        pytest.param(None, Held("pending", 1, T0), APPLIED, id="first-news"),
        # reference: versions decide
        pytest.param(Held("pending", 1, T0), Held("confirmed", 2, T1), APPLIED, id="v1-then-v2"),
        pytest.param(Held("confirmed", 2, T1), Held("pending", 1, T0), STALE, id="v2-then-late-v1"),
        pytest.param(
            Held("confirmed", 3, T2), Held("confirmed", 2, T1), STALE, id="lower-version-same-status"
        ),
        pytest.param(Held("confirmed", 2, T1), Held("confirmed", 2, T1), DUPLICATE, id="same-version"),
        pytest.param(
            Held("confirmed", 2, T1), Held("cancelled", 3, T2), APPLIED, id="confirmed-then-cancelled"
        ),
        pytest.param(
            Held("cancelled", 3, T2), Held("confirmed", 2, T1), STALE, id="cancelled-then-late-confirm"
        ),
        pytest.param(Held("pending", 1, T0), Held("rejected", 2, T1), APPLIED, id="async-rejection"),
        # a status never regresses, whatever the versions or clocks claim
        pytest.param(
            Held("confirmed", 2, T1), Held("pending", 5, T2), STALE, id="regression-with-higher-version"
        ),
        pytest.param(Held("cancelled", None, T0), Held("confirmed", None, T2), STALE, id="regression-legacy"),
        # legacy: no version, order by partner modified time, then receipt order
        pytest.param(Held("pending", None, T0), Held("confirmed", None, T1), APPLIED, id="legacy-newer"),
        pytest.param(Held("confirmed", None, T1), Held("confirmed", None, T1), DUPLICATE, id="legacy-same"),
        pytest.param(
            Held("confirmed", None, T1), Held("confirmed", None, T2), DUPLICATE, id="legacy-later-same-status"
        ),
        pytest.param(
            Held("confirmed", None, T2), Held("confirmed", None, T1), STALE, id="legacy-older-modified"
        ),
        pytest.param(
            Held("cancelled", None, T2), Held("rejected", None, T1), STALE, id="legacy-older-same-rank"
        ),
        # a status further on applies whatever its time: the partner's clock went back (the hour
        # repeated in autumn, a clock stepped back) after it wrote the earlier one
        pytest.param(
            Held("confirmed", None, T2), Held("cancelled", None, T1), APPLIED, id="legacy-forward-older-time"
        ),
        pytest.param(
            Held("pending", None, T2), Held("confirmed", None, T1), APPLIED, id="legacy-settled-older-time"
        ),
        pytest.param(
            Held("pending", None, T1), Held("confirmed", None, T1), APPLIED, id="legacy-same-second"
        ),
        pytest.param(
            Held("pending", None, None),
            Held("confirmed", None, T1),
            APPLIED,
            id="legacy-create-response-then-get",
        ),
        pytest.param(
            Held("pending", None, None),
            Held("pending", None, T1),
            DUPLICATE,
            id="legacy-create-response-then-listing",
        ),
        pytest.param(
            Held("confirmed", None, T1),
            Held("cancelled", None, None),
            APPLIED,
            id="legacy-cancel-response-no-time",
        ),
    ],
)
def test_order_observation(current, incoming, expected):
    assert decisions.order_observation(current, incoming) == expected


# --- reconcile: booking state x what the partner holds -> transition and compensations --------
def res(pk: int, status: str, order: int | None = None, *, compensating: bool = False) -> ReservationView:
    return ReservationView(
        id=pk, status=status, linked_order=pk if order is None else order, compensating=compensating
    )


OPEN = [S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER]
TERMINAL = [S.REJECTED, S.FAILED, S.EXPIRED, S.CANCELLED]


def plan(state, reservations, *, fenced=False):
    result = decisions.reconcile(state, reservations, fenced=fenced)
    return result.transition, result.reason, result.primary, result.compensate


@pytest.mark.parametrize("state", [S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER, S.REQUESTED])
def test_open_booking_confirmed_at_partner_is_confirmed(state):
    assert plan(state, [res(1, "confirmed")]) == ("confirm", "partner_confirmed", 1, {})


@pytest.mark.parametrize("state", [S.SUBMITTING, S.UNKNOWN, S.REQUESTED])
def test_open_booking_pending_at_partner_waits_for_it(state):
    assert plan(state, [res(1, "pending")]) == ("mark_partner_pending", "partner_pending", 1, {})


def test_pending_partner_with_pending_reservation_stays():
    assert plan(S.PENDING_PARTNER, [res(1, "pending")]) == (None, "", 1, {})


@pytest.mark.parametrize("state", OPEN)
def test_open_booking_rejected_at_partner_is_rejected(state):
    assert plan(state, [res(1, "rejected")]) == ("reject", "partner_rejected", None, {})


@pytest.mark.parametrize(
    ("state", "transition"),
    [(S.SUBMITTING, "fail"), (S.UNKNOWN, "fail"), (S.PENDING_PARTNER, "fail"), (S.REQUESTED, None)],
)
def test_open_booking_whose_reservation_the_partner_cancelled_fails(state, transition):
    expected_reason = "partner_cancelled" if transition else ""
    assert plan(state, [res(1, "cancelled")]) == (transition, expected_reason, None, {})


@pytest.mark.parametrize(
    ("reservations", "primary", "compensate"),
    [
        pytest.param(
            [res(1, "pending"), res(2, "pending")], 1, {2: "duplicate"}, id="two-pending-keep-oldest"
        ),
        pytest.param(
            [res(1, "pending"), res(2, "confirmed")],
            2,
            {1: "duplicate"},
            id="keep-confirmed-over-older-pending",
        ),
        pytest.param(
            [res(1, "confirmed"), res(2, "confirmed")], 1, {2: "duplicate"}, id="two-confirmed-keep-oldest"
        ),
        pytest.param(
            [res(5, "pending", 2), res(9, "confirmed", 1), res(3, "confirmed", 0)],
            3,
            {9: "duplicate", 5: "duplicate"},
            id="order-by-learned-not-id",
        ),
        pytest.param(
            [res(1, "rejected"), res(2, "pending"), res(3, "pending")],
            2,
            {3: "duplicate"},
            id="settled-ones-are-not-duplicates",
        ),
        pytest.param(
            [res(1, "confirmed"), res(2, "pending", compensating=True)],
            1,
            {},
            id="already-compensating-not-again",
        ),
    ],
)
def test_duplicates_keep_the_confirmed_else_the_oldest_and_cancel_the_others(
    reservations, primary, compensate
):
    transition, _, chosen, to_cancel = plan(S.UNKNOWN, reservations)
    assert chosen == primary
    assert to_cancel == compensate
    primary_status = next(r.status for r in reservations if r.id == primary)
    assert transition == ("confirm" if primary_status == "confirmed" else "mark_partner_pending")


def test_confirmed_booking_with_a_late_duplicate_keeps_its_reservation_and_cancels_the_other():
    assert plan(S.CONFIRMED, [res(1, "confirmed"), res(2, "pending")]) == (None, "", 1, {2: "duplicate"})


@pytest.mark.parametrize(
    "reservations",
    [
        pytest.param([res(1, "cancelled")], id="cancelled"),
        pytest.param([res(1, "cancelled"), res(2, "rejected")], id="cancelled-then-rejected-duplicate"),
        pytest.param([res(1, "cancelled"), res(2, "pending")], id="cancelled-and-only-a-pending-one-left"),
    ],
)
def test_confirmed_then_cancelled_at_partner_goes_to_needs_attention(reservations):
    assert plan(S.CONFIRMED, reservations) == ("flag_for_attention", "partner_cancelled_confirmed", None, {})


def test_confirmed_booking_without_any_known_reservation_is_left_alone():
    assert plan(S.CONFIRMED, []) == (None, "", None, {})


@pytest.mark.parametrize("state", TERMINAL)
def test_terminal_booking_with_live_reservations_compensates_every_one(state):
    reservations = [
        res(1, "confirmed"),
        res(2, "pending"),
        res(3, "cancelled"),
        res(4, "pending", compensating=True),
    ]
    assert plan(state, reservations) == (None, "", None, {1: f"booking_{state}", 2: f"booking_{state}"})


@pytest.mark.parametrize("state", TERMINAL)
def test_terminal_booking_with_nothing_live_does_nothing(state):
    assert plan(state, [res(1, "cancelled"), res(2, "rejected")]) == (None, "", None, {})
    assert decisions.reconcile(state, [res(1, "cancelled")], fenced=False) == decisions.Reconciliation()


@pytest.mark.parametrize("state", TERMINAL)
def test_terminal_booking_compensates_even_while_fenced(state):
    assert plan(state, [res(1, "confirmed")], fenced=True)[3] == {1: f"booking_{state}"}


@pytest.mark.parametrize(
    ("reservations", "fenced", "expected"),
    [
        pytest.param(
            [], False, ("mark_cancelled", "nothing_live_at_partner", None, {}), id="never-at-partner"
        ),
        pytest.param([], True, (None, "", None, {}), id="fenced-never-concludes"),
        pytest.param(
            [res(1, "confirmed")], False, (None, "", 1, {1: "cancel_requested"}), id="live-cancel-it"
        ),
        # a live one is the answer to the fenced create: it lifts the fence, so the cancel goes on
        pytest.param(
            [res(1, "pending")], True, (None, "", 1, {1: "cancel_requested"}), id="fenced-live-cancel-it"
        ),
        pytest.param(
            [res(1, "confirmed", compensating=True)], False, (None, "", None, {}), id="cancel-under-way"
        ),
        pytest.param(
            [res(1, "cancelled")],
            False,
            ("mark_cancelled", "nothing_live_at_partner", None, {}),
            id="cancelled-at-partner",
        ),
        pytest.param(
            [res(1, "cancelled"), res(2, "rejected")],
            False,
            ("mark_cancelled", "nothing_live_at_partner", None, {}),
            id="all-settled",
        ),
        pytest.param([res(1, "cancelled")], True, (None, "", None, {}), id="settled-but-fenced"),
    ],
)
def test_cancel_requested(reservations, fenced, expected):
    assert plan(S.CANCEL_REQUESTED, reservations, fenced=fenced) == expected


@pytest.mark.parametrize("state", [S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER])
@pytest.mark.parametrize(
    "reservations",
    [
        pytest.param([], id="nothing-known"),
        pytest.param([res(1, "rejected")], id="rejected"),
        pytest.param([res(1, "cancelled")], id="cancelled"),
    ],
)
def test_fenced_booking_draws_no_conclusion_from_absence(state, reservations):
    """While a create's outcome is unknown another reservation may exist: no reject, no fail."""
    assert plan(state, reservations, fenced=True) == (None, "", None, {})


@pytest.mark.parametrize("state", [S.SUBMITTING, S.UNKNOWN])
def test_fenced_booking_still_follows_a_live_reservation(state):
    """A live reservation is the partner's answer: the fence does not hide it."""
    assert plan(state, [res(1, "confirmed")], fenced=True) == ("confirm", "partner_confirmed", 1, {})


@pytest.mark.parametrize(
    ("reservations", "compensate"),
    [
        pytest.param([res(1, "confirmed")], {}, id="confirmed"),
        pytest.param([res(1, "confirmed"), res(2, "pending")], {2: "duplicate"}, id="with-duplicate"),
        pytest.param([res(1, "cancelled")], {}, id="cancelled"),
        pytest.param([], {}, id="nothing"),
    ],
)
def test_needs_attention_is_left_to_support_apart_from_clear_duplicates(reservations, compensate):
    transition, _, _, to_cancel = plan(S.NEEDS_ATTENTION, reservations)
    assert transition is None
    assert to_cancel == compensate


@pytest.mark.parametrize("end", TERMINAL)
@pytest.mark.parametrize(
    ("reservations", "may_hold", "expected"),
    [
        # its stray's cancel verified (or none left): back to the end it had, and to nothing else
        pytest.param([res(1, "cancelled", compensating=True)], False, "back", id="stray-verified"),
        pytest.param([], False, "back", id="nothing-known"),
        # its stray's cancel not verified yet, or a create's outcome unknown: support keeps it
        pytest.param([res(1, "confirmed", compensating=True)], True, "stays", id="stray-cancel-under-way"),
        pytest.param([res(1, "cancelled", compensating=True)], True, "stays", id="cancel-not-verified"),
        pytest.param([], True, "stays", id="fenced"),
        # a reservation it holds live is cancelled as its end's would be; the first is the partner's
        # answer to our create (`primary`: what lifts a create's fence), never a move of the booking
        pytest.param([res(1, "confirmed"), res(2, "pending")], True, "cancels", id="live-cancelled"),
    ],
)
def test_an_end_support_took_up_returns_to_that_end_once_nothing_may_be_held(
    end, reservations, may_hold, expected
):
    result = decisions.reconcile(
        S.NEEDS_ATTENTION, reservations, fenced=False, ended_as=end, may_hold=may_hold
    )

    if expected == "back":
        assert (result.transition, result.reason, result.compensate) == (
            "return_to_end",
            "nothing_held_at_partner",
            {},
        )
    elif expected == "stays":
        assert (result.transition, result.compensate) == (None, {})
    else:
        assert (result.transition, result.primary) == (None, 1)
        assert result.compensate == {1: f"booking_{end}", 2: f"booking_{end}"}


def test_open_booking_with_settled_duplicates_decides_by_the_last_learned():
    # a compensated duplicate (cancelled by us) does not decide; the last own one (rejected) does
    reservations = [res(1, "rejected", 0), res(2, "cancelled", 1, compensating=True)]
    assert plan(S.UNKNOWN, reservations) == ("reject", "partner_rejected", None, {})


# --- stray_left_to_a_case: a duplicate whose cancel gave up -> support's case, or the booking's -----
@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("role", ["primary", "duplicate", "orphan"])
def test_only_a_duplicate_of_a_booking_that_keeps_its_own_reservation_is_left_to_a_case(state, role):
    # confirmed, or still waiting for the partner: the customer's booking is fine, it goes on as it
    # is; cancelling, ended or already with support: the stray holds the booking up, support gets it
    # awaiting its payment: nothing at the partner yet, so no duplicate either; counted as going ahead
    keeps_its_own = state in (
        S.CONFIRMED,
        S.REQUESTED,
        S.SUBMITTING,
        S.PENDING_PARTNER,
        S.UNKNOWN,
        S.AWAITING_PAYMENT,
    )
    assert decisions.stray_left_to_a_case(state, role) == (role == "duplicate" and keeps_its_own)


def test_reconciling_twice_gives_the_same_plan():
    reservations = [res(1, "pending"), res(2, "confirmed")]
    assert plan(S.UNKNOWN, reservations) == plan(S.UNKNOWN, reservations)


@pytest.mark.parametrize(
    ("outcome", "http_status", "step"),
    [
        (Outcome.PERMANENT, 404, NextStep.NEEDS_ATTENTION),  # a lookup the partner does not offer
        (Outcome.PERMANENT, 400, NextStep.NEEDS_ATTENTION),
        (Outcome.PERMANENT, None, NextStep.NEEDS_ATTENTION),  # refused without a call (not supported)
        (Outcome.PERMANENT, 401, NextStep.RETRY_LATER),  # a key is rotated back
        (Outcome.PERMANENT, 403, NextStep.RETRY_LATER),
        (Outcome.TRANSIENT, 503, NextStep.RETRY_LATER),
        (Outcome.TRANSIENT, 200, NextStep.RETRY_LATER),  # an answer refused at our edge
    ],
)
def test_after_failed_read(outcome, http_status, step):
    assert after_failed_read(outcome, http_status=http_status) == step


@pytest.mark.parametrize(
    ("failures", "step"),
    [
        (0, NextStep.RETRY_LATER),
        (2, NextStep.RETRY_LATER),
        (3, NextStep.NEEDS_ATTENTION),
        (4, NextStep.NEEDS_ATTENTION),
    ],
)
def test_after_repeated_failures(failures, step):
    assert after_repeated_failures(failures, max_tries=3) == step
