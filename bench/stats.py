"""The figures the benchmarks compute from their samples: percentiles, latency summaries, medians of
rounds, and a bootstrap interval for a change of a percentile."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = [value * 1000 for value in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else math.nan,
        "max_ms": round(max(ms), 2) if ms else math.nan,
    }


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile_change_interval(
    baseline: Sequence[Sequence[float]],
    other: Sequence[Sequence[float]],
    q: float,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """A bootstrap interval for `percentile(other, q) / percentile(baseline, q) - 1`, each side
    given as its rounds (lists of request latencies) and its percentile taken over them pooled.

    Each resample draws a side's rounds again with replacement, then each drawn round's requests
    (a two-stage bootstrap): the interval shows how far the two percentiles could differ by the
    luck of which requests happened to be slow, which a tail percentile of a few thousand
    requests is very sensitive to, and, given several rounds, by how the machine drifted from
    one round to the next. Given one round a side, it covers the requests' luck only.
    """
    if not any(baseline) or not any(other):
        return math.nan, math.nan
    rng = random.Random(seed)

    def resampled(rounds: Sequence[Sequence[float]]) -> float:
        pooled: list[float] = []
        for drawn in rng.choices(rounds, k=len(rounds)):
            pooled += rng.choices(drawn, k=len(drawn))
        return percentile(pooled, q)

    changes = [resampled(other) / resampled(baseline) - 1 for _ in range(resamples)]
    tail = (1 - confidence) / 2 * 100
    return percentile(changes, tail), percentile(changes, 100 - tail)
