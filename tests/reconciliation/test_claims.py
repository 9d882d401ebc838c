"""The sweeper's window claims on the real Redis: each name claimed once per window, and with a
limit, claimed in order until that many are new (the audit's batch)."""

from __future__ import annotations

import uuid

import pytest

from reconciliation import claims


@pytest.fixture
def names() -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"test-claims:{run}:{i}" for i in range(6)]


def test_a_name_is_claimed_once_per_window(names):
    assert claims.claim_windows(names[:3], 30) == [True, True, True]
    assert claims.claim_windows(names[:4], 30) == [False, False, False, True]


def test_with_a_limit_names_are_claimed_in_order_until_that_many_are_new(names):
    claims.claim_windows([names[0], names[2]], 30)

    assert claims.claim_windows(names, 30, limit=2) == [False, True, False, True, False, False]
    # The names past the limit were left alone: free for the next call.
    assert claims.claim_windows(names[4:], 30) == [True, True]
