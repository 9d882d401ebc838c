"""Clock skew estimate: bounded samples, smoothed with their bound, a Partner row that is not
rewritten per call, and a skew said only beyond its uncertainty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from partners.connectors.base import CallResult
from partners.models import Operation, Outcome, Partner
from partners.services.calls import attempt_open, call_opened_and_close
from partners.services.skew import (
    PERSIST_EVERY,
    PLAUSIBLE_SKEW,
    PLAUSIBLE_SKEW_MS,
    SkewSample,
    SkewVerdict,
    record_skew_sample,
    sample_from_call,
    sample_from_delivery,
)
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db
OURS = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def ms(value: int) -> timedelta:
    return timedelta(milliseconds=value)


def sample(centre_ms: int, uncertainty_ms: int = 500) -> SkewSample:
    return SkewSample(centre_ms=centre_ms, uncertainty_ms=uncertainty_ms)


# --- one sample ----------------------------------------------------------------------------------
def test_a_call_sample_is_centred_on_our_midpoint_within_half_the_round_trip_and_the_second():
    # sent at 12:00:00.000, answered at 12:00:01.600; the partner wrote "12:00:01" (truncated)
    got = sample_from_call(OURS + timedelta(seconds=1), sent_at=OURS, received_at=OURS + ms(1600))

    # its clock minus ours lies in [1.0 - 1.6, 2.0 - 0.0] s
    assert got == SkewSample(centre_ms=700, uncertainty_ms=1300)


@pytest.mark.parametrize("stamped_after_ms", [0, 400, 1000, 1599])
def test_a_right_clock_is_within_every_call_samples_bound_wherever_the_partner_stamped(stamped_after_ms):
    # a slow answer (1.6 s) from a partner whose clock is ours, stamped anywhere in the call
    stamped = OURS + ms(stamped_after_ms)
    whole_second = stamped.replace(microsecond=0)

    got = sample_from_call(whole_second, sent_at=OURS, received_at=OURS + ms(1600))

    assert abs(got.centre_ms) <= got.uncertainty_ms


def test_a_delivery_sample_is_as_wide_as_its_second():
    got = sample_from_delivery(OURS + timedelta(seconds=90), received_at=OURS)

    assert got == SkewSample(centre_ms=90_500, uncertainty_ms=500)


# --- a stamp no clock writes -------------------------------------------------------------------
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # a second added to it overflows


@pytest.mark.parametrize(
    "stamp",
    [EPOCH, LAST, OURS - PLAUSIBLE_SKEW - timedelta(seconds=1), OURS + PLAUSIBLE_SKEW + timedelta(seconds=1)],
    ids=["1970", "9999", "a-day-behind", "a-day-ahead"],
)
def test_a_stamp_further_off_than_a_clock_drifts_is_no_sample(stamp):
    assert sample_from_call(stamp, sent_at=OURS - ms(300), received_at=OURS) is None
    assert sample_from_delivery(stamp, received_at=OURS) is None


def test_a_clock_a_day_off_is_still_a_clock():
    got = sample_from_delivery(OURS - PLAUSIBLE_SKEW, received_at=OURS)

    assert got == SkewSample(centre_ms=-PLAUSIBLE_SKEW_MS + 500, uncertainty_ms=500)


@pytest.mark.parametrize("centre_ms", [-(10**12), 10**12], ids=["behind", "ahead"])
def test_a_sample_past_the_bound_is_kept_at_it_so_the_column_holds_it(centre_ms):
    # whatever a caller passes: the column is an int4 of milliseconds (±24.8 days)
    partner = PartnerFactory()

    record_skew_sample(partner, sample(centre_ms, 10**12))

    stored = Partner.objects.get(pk=partner.pk)
    bound = PLAUSIBLE_SKEW_MS if centre_ms > 0 else -PLAUSIBLE_SKEW_MS
    assert (stored.clock_skew_ms, stored.clock_skew_uncertainty_ms) == (bound, PLAUSIBLE_SKEW_MS)


def test_an_estimate_stored_past_the_bound_is_brought_within_it():
    # kept before the bound was: a partner measured 23 days behind
    partner = PartnerFactory(clock_skew_ms=-2_000_000_000, clock_skew_uncertainty_ms=500)

    record_skew_sample(partner, sample(0))

    assert Partner.objects.get(pk=partner.pk).clock_skew_ms == -PLAUSIBLE_SKEW_MS


@pytest.mark.django_db(transaction=True)  # a partner call is never made inside a transaction
@pytest.mark.parametrize("partner_time", [EPOCH, LAST], ids=["1970", "9999"])
def test_a_call_answered_with_a_date_no_clock_writes_keeps_its_answer(partner_time, reset_guard):
    # given a partner whose answer says it is 1970 (or the last second a datetime holds)
    partner = PartnerFactory()
    reset_guard(partner)
    attempt = attempt_open(partner=partner, operation=Operation.GET)
    answer = CallResult(outcome=Outcome.OK, http_status=200, partner_time=partner_time)

    # when the call is made and closed, as every worker's call is
    result = call_opened_and_close(attempt, lambda: answer)

    # then its answer is kept, the Date with it as the partner's word, and taken for no clock
    assert result is answer
    attempt.refresh_from_db()
    assert (attempt.outcome, attempt.partner_time) == (Outcome.OK, partner_time)
    assert Partner.objects.get(pk=partner.pk).clock_skew_ms is None


# --- the estimate --------------------------------------------------------------------------------
def test_first_sample_is_the_estimate_and_is_stored():
    partner = PartnerFactory()

    record_skew_sample(partner, sample(90_000, 700))

    stored = Partner.objects.get(pk=partner.pk)
    assert (stored.clock_skew_ms, stored.clock_skew_uncertainty_ms) == (90_000, 700)


def test_later_samples_are_smoothed_with_their_bound_and_the_row_is_written_at_most_every_window():
    start = datetime.now(tz=UTC)
    with time_machine.travel(start, tick=False):
        partner = PartnerFactory()
        record_skew_sample(partner, sample(10_000, 500))
        record_skew_sample(partner, sample(10_500, 1500))

        assert (partner.clock_skew_ms, partner.clock_skew_uncertainty_ms) == (10_100, 700)  # in memory
        assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 10_000  # not rewritten yet

    with time_machine.travel(start + PERSIST_EVERY + timedelta(seconds=1), tick=False):
        record_skew_sample(partner, sample(10_100, 700))
        stored = Partner.objects.get(pk=partner.pk)
        assert (stored.clock_skew_ms, stored.clock_skew_uncertainty_ms) == (10_100, 700)


def test_an_estimate_kept_without_a_bound_starts_again_from_the_next_sample():
    partner = PartnerFactory(clock_skew_ms=800, clock_skew_uncertainty_ms=None)

    record_skew_sample(partner, sample(100, 900))

    assert (partner.clock_skew_ms, partner.clock_skew_uncertainty_ms) == (100, 900)


def test_a_jump_of_a_second_or_more_is_stored_at_once():
    partner = PartnerFactory()
    record_skew_sample(partner, sample(0))

    record_skew_sample(partner, sample(30_000))

    assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 6_000


def test_a_fresh_copy_of_the_partner_skips_the_write_without_a_query(django_assert_num_queries):
    partner = PartnerFactory()
    record_skew_sample(partner, sample(10_000))
    fresh = Partner.objects.get(pk=partner.pk)  # as each booking's lock loads it

    with django_assert_num_queries(0):
        record_skew_sample(fresh, sample(10_200))

    assert fresh.clock_skew_ms == 10_040
    with django_assert_num_queries(1):  # a jump is written however recent the last write
        record_skew_sample(fresh, sample(20_000))
    assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 12_032


# --- what it lets us say -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("estimate", "bound", "beyond_doubt", "text"),
    [
        (None, None, None, "not measured"),
        (750, 1300, 0, "clock within ±1.3 s"),  # a slow partner with a right clock
        (-1300, 1300, 0, "clock within ±1.3 s"),
        (600_200, 600, 600_200, "ahead by 600.2 s (±0.6)"),
        (-3_100, 1_200, -3_100, "behind by 3.1 s (±1.2)"),
        (750, None, 750, "ahead by 0.8 s"),  # measured before bounds were kept
        (0, None, 0, "clock agrees to 0.1 s (no bound measured yet)"),
        (-40, None, -40, "clock agrees to 0.1 s (no bound measured yet)"),
    ],
)
def test_a_skew_is_said_only_beyond_its_uncertainty(estimate, bound, beyond_doubt, text):
    verdict = SkewVerdict(estimate, bound)

    assert (verdict.beyond_doubt_ms, verdict.text) == (beyond_doubt, text)
