"""Per-partner clock skew: partner clock minus ours, from `Date` headers and webhook timestamps.

A sample is a bound, not a point. The partner stamps its answer at some moment between our
request leaving and its answer arriving, and writes that moment truncated to its whole second
(HTTP dates and webhook timestamps carry no fraction). So the skew lies between the stamp minus
our receipt and the stamp plus one second minus our send: centred on the midpoint of our send
and receipt (and of the stamp's second), within half the round trip plus half a second. A slow
partner with a correct clock therefore shows a wide bound around zero, not a skew of half its
latency. A webhook has no round trip we can see: its transit (one way, a few milliseconds) is
taken as nothing, so its sample is only as wide as its second.

The estimate is an exponential moving average of the samples' centres, and its uncertainty the
same average of their half-widths: a weighted mean of errors each within its own bound is within
the weighted mean of the bounds. Both are kept on the Partner row. Every partner call yields a
sample, so the row is written at most every `PERSIST_EVERY` (or on a jump of a second or more): a
row that every call rewrote would be the hottest row of the database, contended by every worker.

A stamp more than `PLAUSIBLE_SKEW` (a day) from our clock is no sample: no clock drifts that far,
and the header that says 1970 was never a clock's reading. It is ignored, never an error: on a
call that would lose the partner's answer, on a delivery the delivery itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from partners.connectors.http import PLAUSIBLE_SKEW, plausible_stamp
from partners.models import Partner

SMOOTHING = 0.2  # one odd header does not swing the estimate
PERSIST_EVERY = timedelta(seconds=10)
JUMP_MS = 1000
# HTTP dates and webhook timestamps have whole seconds, truncated by the sender.
STAMP_RESOLUTION = timedelta(seconds=1)
# `Partner.clock_skew_ms` is an int4 of milliseconds (±24.8 days), which a stamp from 1970 would
# overflow (a DataError on PostgreSQL): the estimate is kept within the bound too.
PLAUSIBLE_SKEW_MS = round(PLAUSIBLE_SKEW.total_seconds() * 1000)


@dataclass(frozen=True)
class SkewSample:
    """One reading of the partner's clock minus ours: `centre_ms` ± `uncertainty_ms`."""

    centre_ms: int
    uncertainty_ms: int


def sample_from_call(
    partner_stamp: datetime, *, sent_at: datetime, received_at: datetime
) -> SkewSample | None:
    """From an answer's whole-second stamp, our request's send time and the answer's receipt;
    None for a stamp no clock would write (`PLAUSIBLE_SKEW`)."""
    if not plausible_stamp(partner_stamp, at=received_at):
        return None
    return _bounded(low=partner_stamp - received_at, high=partner_stamp + STAMP_RESOLUTION - sent_at)


def sample_from_delivery(partner_stamp: datetime, *, received_at: datetime) -> SkewSample | None:
    """From a delivery's whole-second stamp and our receipt (its transit taken as nothing); None
    for a stamp no clock would write."""
    return sample_from_call(partner_stamp, sent_at=received_at, received_at=received_at)


def _bounded(*, low: timedelta, high: timedelta) -> SkewSample:
    low_ms, high_ms = low.total_seconds() * 1000, high.total_seconds() * 1000
    return SkewSample(centre_ms=round((low_ms + high_ms) / 2), uncertainty_ms=round((high_ms - low_ms) / 2))


def record_skew_sample(partner: Partner, sample: SkewSample) -> SkewSample:
    """Fold one sample into the partner's estimate and its uncertainty; return the sample.

    A sample beyond PLAUSIBLE_SKEW (none the functions above make) counts as at that bound, and
    the estimate is kept within it: whatever a caller passes, the row fits its columns."""
    sample = SkewSample(
        centre_ms=_within(sample.centre_ms, -PLAUSIBLE_SKEW_MS, PLAUSIBLE_SKEW_MS),
        uncertainty_ms=_within(sample.uncertainty_ms, 0, PLAUSIBLE_SKEW_MS),
    )
    previous = partner.clock_skew_ms
    if previous is None or partner.clock_skew_uncertainty_ms is None:
        # The first sample (or the first since the bound was kept) is the estimate.
        estimate, uncertainty = sample.centre_ms, sample.uncertainty_ms
    else:
        estimate = round(previous + SMOOTHING * (sample.centre_ms - previous))
        uncertainty = round(
            partner.clock_skew_uncertainty_ms
            + SMOOTHING * (sample.uncertainty_ms - partner.clock_skew_uncertainty_ms)
        )
    # An estimate stored beyond the bound (SQLite's integers hold any) is brought within it.
    estimate = _within(estimate, -PLAUSIBLE_SKEW_MS, PLAUSIBLE_SKEW_MS)
    uncertainty = _within(uncertainty, 0, PLAUSIBLE_SKEW_MS)
    now = timezone.now()
    jumped = previous is None or abs(estimate - previous) >= JUMP_MS
    written_at = partner.clock_skew_measured_at
    # A copy that shows a write less than PERSIST_EVERY ago needs no round trip: the row can
    # only be newer, so the conditional update would match nothing.
    if jumped or written_at is None or written_at < now - PERSIST_EVERY:
        due = Q(clock_skew_measured_at__isnull=True) | Q(clock_skew_measured_at__lt=now - PERSIST_EVERY)
        if jumped:
            due |= Q(pk=partner.pk)
        if Partner.objects.filter(due, pk=partner.pk).update(
            clock_skew_ms=estimate, clock_skew_uncertainty_ms=uncertainty, clock_skew_measured_at=now
        ):
            partner.clock_skew_measured_at = now
    partner.clock_skew_ms, partner.clock_skew_uncertainty_ms = estimate, uncertainty
    return sample


def _within(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


@dataclass(frozen=True)
class SkewVerdict:
    """What the estimate lets us say: a skew only beyond its uncertainty is one."""

    estimate_ms: int | None
    uncertainty_ms: int | None

    @property
    def known(self) -> bool:
        return self.estimate_ms is not None

    @property
    def beyond_doubt_ms(self) -> int | None:
        """The estimate where it exceeds its uncertainty, 0 within it, None unmeasured. An
        estimate kept before its bound was (no uncertainty yet) is taken as it stands."""
        if self.estimate_ms is None:
            return None
        if self.uncertainty_ms is not None and abs(self.estimate_ms) <= self.uncertainty_ms:
            return 0
        return self.estimate_ms

    @property
    def text(self) -> str:
        """`clock within ±0.9 s`, `ahead by 600.2 s (±0.6)`, `behind by 3.1 s (±1.2)`, or
        `not measured`."""
        if self.estimate_ms is None:
            return "not measured"
        bound = "" if self.uncertainty_ms is None else _seconds(self.uncertainty_ms)
        if self.beyond_doubt_ms == 0 and bound:
            return f"clock within ±{bound} s"
        if _seconds(abs(self.estimate_ms)) == "0.0":
            # Kept before bounds were (no uncertainty yet) and too small to say a side.
            return "clock agrees to 0.1 s (no bound measured yet)"
        side = "ahead by" if self.estimate_ms > 0 else "behind by"
        return f"{side} {_seconds(abs(self.estimate_ms))} s" + (f" (±{bound})" if bound else "")


def skew_verdict(partner: Partner) -> SkewVerdict:
    return SkewVerdict(partner.clock_skew_ms, partner.clock_skew_uncertainty_ms)


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f}"


def skew_between(partner_time: datetime | None, our_time: datetime) -> int | None:
    """The partner's clock minus ours at one moment, in ms (None without the partner's time)."""
    if partner_time is None:
        return None
    return round((partner_time - our_time).total_seconds() * 1000)
