"""Properties of `order_observation` (invariant 1), over sequences of observations folded as the
one door folds them: what we hold is replaced only by an APPLIED observation, its partner time
kept when the observation carries none (partners.services.observations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from partners.decisions import Held, order_observation
from partners.models import ObservationResult, ReservationStatus

P = ReservationStatus
# The partner's statuses only move forward: pending, then confirmed, then a final one.
RANK = {P.PENDING: 0, P.CONFIRMED: 1, P.REJECTED: 2, P.CANCELLED: 2}
# Every way a reservation's statuses can follow one another at a partner (each may repeat: an
# amendment is a new version in the same status).
LIFECYCLES = [
    [P.PENDING],
    [P.PENDING, P.CONFIRMED],
    [P.PENDING, P.CONFIRMED, P.CANCELLED],
    [P.PENDING, P.REJECTED],
    [P.PENDING, P.CANCELLED],
    [P.CONFIRMED],
    [P.CONFIRMED, P.CANCELLED],
]
START = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)

statuses = st.sampled_from(list(RANK))
versions = st.none() | st.integers(min_value=1, max_value=6)
times = st.none() | st.integers(min_value=0, max_value=5).map(lambda s: START + timedelta(seconds=s))
any_held = st.builds(Held, statuses, versions, times)


def fold(held: Held | None, incoming: Held) -> tuple[Held, ObservationResult]:
    """One observation through the one door: the result, and what we hold afterwards."""
    result = order_observation(held, incoming)
    if result != ObservationResult.APPLIED:
        assert held is not None  # the first observation of a reservation is always applied
        return held, result
    modified_at = incoming.modified_at or (held.modified_at if held else None)
    return Held(incoming.status, incoming.version, modified_at), result


@given(st.lists(any_held, min_size=1, max_size=12))
@settings(max_examples=400, deadline=None)
def test_no_sequence_of_observations_moves_what_we_hold_backwards(observations: list[Held]) -> None:
    # given any observations at all, in any order, with or without versions and times
    held: Held | None = None
    for incoming in observations:
        # when each goes through the one door
        before = held
        held, result = fold(held, incoming)

        # then an applied one never lowers the status, and never goes back in version, nor (where
        # versions cannot say) in partner time unless it moves the status on
        if before is None or result != ObservationResult.APPLIED:
            continue
        assert RANK[held.status] >= RANK[before.status]
        if before.version is not None and incoming.version is not None:
            assert incoming.version > before.version
        elif before.modified_at is not None and incoming.modified_at is not None:
            assert incoming.modified_at >= before.modified_at or RANK[held.status] > RANK[before.status]


@dataclass(frozen=True)
class Change:
    """One version of a reservation in the partner's own history."""

    index: int
    status: str
    version: int
    modified_at: datetime


@st.composite
def partner_histories(draw: st.DrawFn) -> list[Change]:
    """A reservation's history at one partner: statuses forward (amendments repeat one),
    versions up by one, partner times never back (several changes may share a second)."""
    lifecycle = draw(st.sampled_from(LIFECYCLES))
    repeats = draw(st.lists(st.integers(1, 3), min_size=len(lifecycle), max_size=len(lifecycle)))
    path = [status for status, times in zip(lifecycle, repeats, strict=True) for _ in range(times)]
    gaps = draw(st.lists(st.integers(0, 90), min_size=len(path), max_size=len(path)))
    history, at = [], START
    for index, (status, gap) in enumerate(zip(path, gaps, strict=True)):
        at += timedelta(seconds=gap)
        history.append(Change(index, status, index + 1, at))
    return history


@st.composite
def observations_of_a_history(draw: st.DrawFn) -> list[tuple[Change, Held]]:
    """What reaches us: changes of the history late, twice or never, in any order, some without
    their version (listings) or their time."""
    history = draw(partner_histories())
    seen = draw(st.lists(st.sampled_from(history), min_size=1, max_size=15))
    observed = []
    for change in seen:
        version = draw(st.sampled_from([change.version, None]))
        modified_at = draw(st.sampled_from([change.modified_at, None]))
        observed.append((change, Held(change.status, version, modified_at)))
    return observed


@given(observations_of_a_history())
@settings(max_examples=400, deadline=None)
def test_what_we_hold_never_goes_back_in_the_partners_history(
    observed: list[tuple[Change, Held]],
) -> None:
    # given a partner's history of one reservation, observed late, twice, out of order, partly
    held: Held | None = None
    newest_applied: Change | None = None
    highest_version: int | None = None
    latest_time: datetime | None = None

    for change, incoming in observed:
        # when each observation goes through the one door
        before = held
        held, result = fold(held, incoming)
        if result != ObservationResult.APPLIED:
            continue

        # then only news applies: a later change than any applied before
        if newest_applied is not None:
            assert change.index > newest_applied.index, f"{change} applied after {newest_applied}"
        newest_applied = change
        # and so the status rank, the version and the partner time we hold never decrease
        assert before is None or RANK[held.status] >= RANK[before.status]
        if held.version is not None:
            assert highest_version is None or held.version > highest_version
            highest_version = held.version
        if held.modified_at is not None:
            assert latest_time is None or held.modified_at >= latest_time
            latest_time = held.modified_at


@given(
    st.lists(st.tuples(statuses, st.integers(min_value=-7200, max_value=7200)), min_size=1, max_size=12).map(
        lambda seen: sorted(seen, key=lambda s: RANK[s[0]])
    )
)
@settings(max_examples=200, deadline=None)
def test_a_status_further_on_is_never_lost_to_a_clock_gone_back(seen: list[tuple[str, int]]) -> None:
    # given a partner without versions whose clock may go back (the hour repeated in autumn, a
    # clock stepped back): statuses reached in their order, each written at any wall time
    held: Held | None = None
    for status, offset_s in seen:
        # when each is observed in the order the partner reached them
        held, _ = fold(held, Held(status, None, START + timedelta(seconds=offset_s)))

    # then what we hold is as far on as the partner's last status, whatever the times said
    assert held is not None and RANK[held.status] == RANK[seen[-1][0]]
