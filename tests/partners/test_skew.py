"""Clock skew estimate: centred samples, smoothed, and a Partner row that is not rewritten per call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from partners.models import Partner
from partners.services.skew import PERSIST_EVERY, record_skew_sample
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db
OURS = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_first_sample_is_the_estimate_and_is_stored():
    partner = PartnerFactory()

    sample = record_skew_sample(partner, partner_time=OURS + timedelta(seconds=90), our_time=OURS)

    assert sample == 90_000
    assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 90_000


def test_later_samples_are_smoothed_and_the_row_is_written_at_most_every_window():
    start = datetime.now(tz=UTC)
    with time_machine.travel(start, tick=False):
        partner = PartnerFactory()
        record_skew_sample(partner, partner_time=OURS + timedelta(seconds=10), our_time=OURS)
        record_skew_sample(
            partner, partner_time=OURS + timedelta(seconds=10, milliseconds=500), our_time=OURS
        )

        assert partner.clock_skew_ms == 10_100  # 10000 + 0.2 * 500, in memory
        assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 10_000  # not rewritten yet

    with time_machine.travel(start + PERSIST_EVERY + timedelta(seconds=1), tick=False):
        record_skew_sample(
            partner, partner_time=OURS + timedelta(seconds=10, milliseconds=100), our_time=OURS
        )
        assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 10_100


def test_a_jump_of_a_second_or_more_is_stored_at_once():
    partner = PartnerFactory()
    record_skew_sample(partner, partner_time=OURS, our_time=OURS)

    record_skew_sample(partner, partner_time=OURS + timedelta(seconds=30), our_time=OURS)

    assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 6_000


def test_a_fresh_copy_of_the_partner_skips_the_write_without_a_query(django_assert_num_queries):
    partner = PartnerFactory()
    record_skew_sample(partner, partner_time=OURS + timedelta(seconds=10), our_time=OURS)
    fresh = Partner.objects.get(pk=partner.pk)  # as each booking's lock loads it

    with django_assert_num_queries(0):
        record_skew_sample(fresh, partner_time=OURS + timedelta(seconds=10, milliseconds=200), our_time=OURS)

    assert fresh.clock_skew_ms == 10_040
    with django_assert_num_queries(1):  # a jump is written however recent the last write
        record_skew_sample(fresh, partner_time=OURS + timedelta(seconds=20), our_time=OURS)
    assert Partner.objects.get(pk=partner.pk).clock_skew_ms == 12_032
