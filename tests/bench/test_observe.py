"""`bench.observe.wake_after_idle_us`: a real child process, a real round trip per sample."""

from __future__ import annotations

import psutil

from bench.observe import wake_after_idle_us


def test_the_wake_probe_measures_each_idle_time_and_leaves_no_child_behind():
    children_before = {child.pid for child in psutil.Process().children()}

    trips = wake_after_idle_us(idle_s=(0.0, 0.002), samples=5)

    assert list(trips) == ["after_0ms", "after_2ms"]
    assert all(0 < value < 1_000_000 for value in trips.values())  # µs: a round trip, not a timeout
    assert {child.pid for child in psutil.Process().children()} == children_before
