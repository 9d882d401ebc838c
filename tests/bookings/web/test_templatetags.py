"""The customer pages' template filters."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bookings.web.templatetags import duration


@pytest.mark.parametrize(
    ("span", "said"),
    [
        (timedelta(seconds=1), "1 second"),
        (timedelta(seconds=40.4), "40 seconds"),
        (timedelta(seconds=89), "89 seconds"),
        (timedelta(seconds=90), "2 minutes"),
        (timedelta(minutes=1, seconds=20), "80 seconds"),
        (timedelta(minutes=89), "89 minutes"),
        (timedelta(minutes=90), "2 hours"),
        (timedelta(hours=47), "47 hours"),
        (timedelta(hours=48), "2 days"),
    ],
)
def test_a_duration_is_said_to_the_unit_that_matters(span, said):
    assert duration(span) == said
