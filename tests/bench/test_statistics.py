"""The statistics the benchmarks report: percentiles and how far two tail percentiles could
differ by sampling luck alone."""

from __future__ import annotations

import math
import random

import pytest

from bench import docs, independence, stats


def _latencies(seed: int, n: int = 1600, scale: float = 1.0) -> list[float]:
    """Request latencies with a long tail, like the customer path's: mostly ~15 ms, a few slow."""
    rng = random.Random(seed)
    return [scale * (0.012 + rng.lognormvariate(-6.0, 0.9)) for _ in range(n)]


def test_two_samples_of_one_distribution_get_an_interval_around_no_change():
    low, high = stats.percentile_change_interval([_latencies(1)], [_latencies(2)], 99, resamples=500)

    assert low < 0 < high
    # A p99 of 1,600 requests moves by several percent on luck alone: the reason for reporting it.
    assert high - low > 0.05


def test_a_real_change_of_the_tail_gets_an_interval_that_excludes_no_change():
    low, high = stats.percentile_change_interval(
        [_latencies(1)], [_latencies(2, scale=1.5)], 99, resamples=500
    )

    assert 0.2 < low < 0.5 < high < 0.8


def test_the_interval_repeats_with_its_seed_and_narrows_with_more_requests():
    baseline, other = [_latencies(1)], [_latencies(2)]
    first = stats.percentile_change_interval(baseline, other, 99, resamples=300, seed=7)

    assert stats.percentile_change_interval(baseline, other, 99, resamples=300, seed=7) == first
    big_low, big_high = stats.percentile_change_interval(
        [_latencies(1, n=16_000)], [_latencies(2, n=16_000)], 99, resamples=300, seed=7
    )
    assert big_high - big_low < (first[1] - first[0]) / 2


def test_rounds_that_drifted_widen_the_interval_beyond_the_requests_luck():
    # Four rounds a side, the machine 30% slower in some of them than in others.
    scales = (0.8, 1.1, 0.9, 1.2)
    baseline = [_latencies(seed, n=400, scale=scale) for seed, scale in enumerate(scales)]
    other = [_latencies(10 + seed, n=400, scale=scale) for seed, scale in enumerate(reversed(scales))]
    pooled = [[value for rounds in baseline for value in rounds]], [[v for rounds in other for v in rounds]]

    by_round = stats.percentile_change_interval(baseline, other, 99, resamples=400)
    requests_only = stats.percentile_change_interval(*pooled, 99, resamples=400)

    assert by_round[0] < requests_only[0] and by_round[1] > requests_only[1]


@pytest.mark.parametrize("empty", [[], [[]]])
def test_an_empty_side_has_no_interval(empty):
    interval = stats.percentile_change_interval(empty, [[0.01]], 99)

    assert all(math.isnan(bound) for bound in interval)


@pytest.mark.parametrize(
    ("row", "text"),
    [
        (
            {"p99_0s_ms": 58.23, "p99_3s_ms": 63.99, "change_interval": [-0.061, 0.248]},
            "+9.9% (-6.1% to +24.8%)",
        ),
        ({"p99_0s_ms": 47.10, "p99_3s_ms": 36.23}, "-23.1%"),  # recorded before intervals were
    ],
)
def test_the_change_reads_signed_with_its_interval_when_measured(row, text):
    assert independence.change_text(row) == text


def test_the_docs_explain_the_interval_only_for_runs_that_measured_it():
    comparison = {
        "p99_0s_ms": 58.23,
        "p99_3s_ms": 63.99,
        "spread": 0.099,
        "change_interval": [-0.061, 0.248],
        "target_met": True,
    }
    phase = {"by_concurrency": {}}
    data = {
        "variants": {"co-located": {"comparison": {"paced": comparison}, "phases": {"0": phase}}},
        "target_met": True,
    }

    section = docs._independence(data)

    assert "| co-located, paced | 58.23 | 63.99 | 9.9% | +9.9% (-6.1% to +24.8%) | yes |" in section
    assert docs.CHANGE_NOTE in section
    del comparison["change_interval"]
    assert docs.CHANGE_NOTE not in docs._independence(data)
