"""A rate limit's setting, `600/min` (DRF's notation): how many, per second, minute, hour or day.

One parser for the settings, which refuse a malformed rate at start (config/env_values.py), and
for what counts against it (config/throttling.py, partners/services/webhook_limits.py), which can
then never meet one. It imports nothing of Django's: the settings use it while they load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PERIODS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The count, a slash and the period: s, sec, second, m, min, minute, h, hour, d, day (plural too).
_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*", re.IGNORECASE)
EXAMPLE = "600/min"


@dataclass(frozen=True)
class Rate:
    limit: int
    period_ms: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`600/min`, `20/s`, `5000/hour`, `100000/day`; a count of 1 or more. Anything else
        raises ValueError (DRF's own parser took `10/w` or `lots` as far as a KeyError or a
        ValueError in the middle of a request)."""
        match = _RATE.fullmatch(text)
        if match is None or int(match[1]) < 1:
            raise ValueError(
                f"a rate is a count of 1 or more per s, min, hour or day, e.g. {EXAMPLE}; not {text!r}"
            )
        return cls(limit=int(match[1]), period_ms=_PERIODS_S[match[2][0].lower()] * 1000)
