"""Out-of-range values a partner may send: versions at or past 2^63 or negative, timestamps in
year 1 or 9999, amounts that are not numbers. Each protocol maps its fields to such values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.faults import Faults

VERSIONS = (2**63, 2**64 + 1, -1, -(2**63))
AMOUNTS = ("N/A", "NaN", "1.2.3", "")


def garble(obj: dict[str, Any], candidates: Mapping[str, Sequence[object]], faults: Faults) -> bool:
    """Replace one of `obj`'s fields with an out-of-range value; False if it has none to spoil."""
    present = [name for name in candidates if name in obj]
    if not present:
        return False
    name = faults.choice(present)
    obj[name] = faults.choice(candidates[name])
    return True
