"""When a create we stopped waiting for can no longer reach the partner (`sync.landed_by`), and how
long a worker may still be in a call (`sync.in_flight_budget`): both from the HTTP layer's own
bounds (`partners/connectors/http.py`), connect retries included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from partners.connectors.http import connect_phase_s, longest_call_s
from partners.models import Operation, Outcome, Partner, PartnerAttempt
from partners.services.sync import in_flight_budget, landed_by, sent_by

S0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
GRACE_S = 5.0


@pytest.fixture(autouse=True)
def grace(settings):
    settings.PARTNER_IN_FLIGHT_GRACE_S = GRACE_S


def attempt(connect_s: float, read_s: float, *, finished_after_s: float | None) -> PartnerAttempt:
    partner = Partner(code="bounds", connect_timeout_s=connect_s, read_timeout_s=read_s)
    return PartnerAttempt(
        partner=partner,
        operation=Operation.CREATE,
        outcome=Outcome.AMBIGUOUS if finished_after_s is not None else Outcome.IN_FLIGHT,
        started_at=S0,
        finished_at=None if finished_after_s is None else S0 + timedelta(seconds=finished_after_s),
    )


@pytest.mark.parametrize(("connect_s", "read_s"), [(2.0, 10.0), (3.0, 10.0), (5.0, 2.0), (0.5, 1.0)])
def test_a_create_that_left_after_its_connect_retries_is_waited_for(connect_s, read_s):
    # given a create whose first connects timed out, so that it left at the end of its connect
    # phase, and whose answer then did not come within the read timeout
    left = connect_phase_s(Partner(connect_timeout_s=connect_s, read_timeout_s=read_s))
    timed_out = attempt(connect_s, read_s, finished_after_s=left + read_s)

    # then an empty lookup proves nothing before the partner had its read timeout and the grace
    # from the moment it left (not from the moment the call began)
    assert landed_by(timed_out) == S0 + timedelta(seconds=left + read_s + GRACE_S)


def test_an_early_answer_bounds_when_the_request_left():
    # given a create answered at once with a 5xx (the partner, or a gateway, may still commit it)
    early = attempt(2.0, 10.0, finished_after_s=0.2)

    # then it left by then, and the partner gets a read timeout and the grace from that moment
    assert sent_by(early) == S0 + timedelta(seconds=0.2)
    assert landed_by(early) == S0 + timedelta(seconds=0.2 + 10.0 + GRACE_S)


def test_an_attempt_whose_worker_died_left_by_the_end_of_its_connect_phase():
    # given an attempt with no end recorded (its worker killed), or closed long after as abandoned
    for orphan in (attempt(3.0, 10.0, finished_after_s=None), attempt(3.0, 10.0, finished_after_s=600)):
        # then its request left within the connect phase, whenever the attempt was closed
        assert sent_by(orphan) == S0 + timedelta(seconds=3 * 3.0 + 2 * 1.0)


@pytest.mark.parametrize("connect_s", [0.5, 2.0, 3.0, 5.0])
def test_a_call_is_not_taken_for_orphaned_while_it_may_still_be_running(connect_s):
    running = attempt(connect_s, 10.0, finished_after_s=None)
    longest = timedelta(seconds=longest_call_s(running.partner))

    assert in_flight_budget(running) == longest + timedelta(seconds=GRACE_S)
