"""The partner's clock: real time plus the configured skew, and the formats it writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from werkzeug.http import http_date

LEGACY_FORMAT = "%Y-%m-%d %H:%M:%S"


class PartnerClock:
    """Every timestamp the partner writes comes from here, so a skew shifts all of them."""

    def __init__(self, skew_s: Callable[[], float], tz: ZoneInfo) -> None:
        self._skew_s = skew_s
        self.tz = tz

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._skew_s())

    def http_date(self) -> str:
        return http_date(self.now())

    def rfc3339(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).isoformat(timespec="milliseconds")

    def local_naive(self, moment: datetime) -> str:
        """Legacy partners write local wall-clock time without an offset."""
        return moment.astimezone(self.tz).strftime(LEGACY_FORMAT)

    def parse_local_naive(self, text: str) -> datetime:
        """Read a legacy local time back as an aware UTC instant (ValueError if malformed)."""
        naive = datetime.strptime(text, LEGACY_FORMAT)  # noqa: DTZ007 - local by contract
        return naive.replace(tzinfo=self.tz).astimezone(UTC)


def to_store(moment: datetime) -> str:
    """Stored times are fixed-width UTC ISO strings, so they sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def from_store(text: str) -> datetime:
    return datetime.fromisoformat(text)
