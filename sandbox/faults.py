"""Fault settings (exactly the keys of docs/partner-protocols.md) and the seeded dice that apply them.

Settings change at run time from other threads (`POST /_sandbox/faults`), so every read and
every roll goes through one lock; a roll never sees half of an update. A rate of 0 never rolls,
so faults left off do not shift the dice of those switched on.

A window (`[start, length]` seconds) is fixed in real time when it is set, or at process start
for a start option, using the `time_scale` in force then; setting it again starts it afresh.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

T = TypeVar("T")

RATE_KEYS = (
    "timeout_after_commit_rate",
    "error_5xx_rate",
    "error_500_saved_rate",
    "error_500_reconciled_rate",
    "rate_limit_rate",
    "reject_rate",
    "webhook_duplicate_rate",
    "webhook_reorder_rate",
    "webhook_early_rate",
    "partner_cancel_rate",
    "vanish_rate",
    "amend_rate",
    "garbage_values_rate",
    "refund_refused_rate",
    "void_refused_rate",
)
RANGE_KEYS = (
    "latency_ms",
    "webhook_delay_s",
    "partner_cancel_delay_s",
    "vanish_delay_s",
    "error_500_reconciled_delay_s",
)
WINDOW_KEYS = ("auth_failure_window_s", "outage_window_s")


class FaultSettingError(ValueError):
    """An unknown fault key or a value it cannot take."""


@dataclass(frozen=True)
class FaultSettings:
    """Defaults make a perfect partner: no latency, no errors, keys honoured, prompt webhooks."""

    latency_ms: tuple[float, float] = (0.0, 0.0)
    timeout_after_commit_rate: float = 0.0
    error_5xx_rate: float = 0.0
    error_500_saved_rate: float = 0.0
    error_500_reconciled_rate: float = 0.0
    error_500_reconciled_delay_s: tuple[float, float] = (5.0, 10.0)
    rate_limit_rate: float = 0.0
    reject_rate: float = 0.0
    async_confirm_delay_s: float | None = None
    webhook_duplicate_rate: float = 0.0
    webhook_reorder_rate: float = 0.0
    webhook_delay_s: tuple[float, float] = (0.0, 0.0)
    webhook_early_rate: float = 0.0
    clock_skew_s: float = 0.0
    honour_idempotency_keys: bool = True
    partner_cancel_rate: float = 0.0
    partner_cancel_delay_s: tuple[float, float] = (60.0, 600.0)
    vanish_rate: float = 0.0
    vanish_delay_s: tuple[float, float] = (60.0, 600.0)
    amend_rate: float = 0.0
    auth_failure_window_s: tuple[float, float] | None = None
    outage_window_s: tuple[float, float] | None = None
    garbage_values_rate: float = 0.0
    refund_refused_rate: float = 0.0
    void_refused_rate: float = 0.0
    time_scale: float = 1.0
    seed: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in (*RANGE_KEYS, *WINDOW_KEYS):
            data[key] = None if data[key] is None else list(data[key])
        return data


FAULT_KEYS: tuple[str, ...] = tuple(f.name for f in fields(FaultSettings))


def _number(key: str, value: object) -> float:
    # bool is an int subclass: `true` is not a rate.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultSettingError(f"{key} must be a number")
    return float(value)


def validate(key: str, value: object) -> Any:
    """Return the normalised value for `key`, or raise FaultSettingError."""
    if key not in FAULT_KEYS:
        raise FaultSettingError(f"unknown fault key {key!r}")
    if key in RATE_KEYS:
        rate = _number(key, value)
        if not 0.0 <= rate <= 1.0:
            raise FaultSettingError(f"{key} must be between 0 and 1")
        return rate
    if key in RANGE_KEYS:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise FaultSettingError(f"{key} must be [min, max]")
        low, high = (_number(key, v) for v in value)
        if not 0.0 <= low <= high:
            raise FaultSettingError(f"{key} must satisfy 0 <= min <= max")
        return (low, high)
    if key in WINDOW_KEYS:
        if value is None:
            return None
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise FaultSettingError(f"{key} must be [start, length] or null")
        start, length = (_number(key, v) for v in value)
        if start < 0 or length < 0:
            raise FaultSettingError(f"{key} must have start >= 0 and length >= 0")
        return (start, length)
    if key == "async_confirm_delay_s":
        if value is None:
            return None
        delay = _number(key, value)
        if delay < 0:
            raise FaultSettingError(f"{key} must be >= 0 or null")
        return delay
    if key == "clock_skew_s":
        return _number(key, value)
    if key == "honour_idempotency_keys":
        if not isinstance(value, bool):
            raise FaultSettingError(f"{key} must be true or false")
        return value
    if key == "time_scale":
        scale = _number(key, value)
        if scale <= 0:
            raise FaultSettingError(f"{key} must be > 0")
        return scale
    # seed
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSettingError(f"{key} must be an integer or null")
    return value


def parse_cli(key: str, text: str) -> Any:
    """Command-line spelling: ranges as `min,max`, windows as `start,length`, booleans as
    true/false, null as `null`."""
    raw: object
    lowered = text.strip().lower()
    if key in WINDOW_KEYS and lowered in ("null", "none", ""):
        raw = None
    elif key in WINDOW_KEYS:
        try:
            raw = [float(p) for p in text.replace(" ", "").split(",")]
        except ValueError as exc:
            raise FaultSettingError(f"{key} must be start,length") from exc
    elif key in RANGE_KEYS:
        parts = [p for p in text.replace(" ", "").split(",") if p]
        if len(parts) == 1:
            parts = parts * 2  # one number means a fixed value
        try:
            raw = [float(p) for p in parts]
        except ValueError as exc:
            raise FaultSettingError(f"{key} must be min,max") from exc
    elif key == "honour_idempotency_keys":
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise FaultSettingError(f"{key} must be true or false")
        raw = lowered in ("true", "1", "yes")
    elif lowered in ("null", "none", ""):
        raw = None
    elif key == "seed":
        try:
            raw = int(text)
        except ValueError as exc:
            raise FaultSettingError("seed must be an integer") from exc
    else:
        try:
            raw = float(text)
        except ValueError as exc:
            raise FaultSettingError(f"{key} must be a number") from exc
    return validate(key, raw)


class Faults:
    """Current settings plus a seeded Random; thread-safe."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        settings = settings or FaultSettings()
        # A run without a seed still gets one, shown by GET /_sandbox/faults, so it can be replayed.
        if settings.seed is None:
            settings = replace(settings, seed=secrets.randbelow(2**31))
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._windows = {key: self._fix_window(settings, key, time.time()) for key in WINDOW_KEYS}

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def update(self, changes: Mapping[str, object]) -> FaultSettings:
        """Validate every change first, then apply all of them at once (or none)."""
        clean = {key: validate(key, value) for key, value in changes.items()}
        with self._lock:
            if "seed" in clean and clean["seed"] is None:
                clean["seed"] = secrets.randbelow(2**31)
            self._settings = replace(self._settings, **clean)
            if "seed" in clean:
                self._rng.seed(self._settings.seed)
            now = time.time()
            for key in WINDOW_KEYS:
                if key in clean:
                    self._windows[key] = self._fix_window(self._settings, key, now)
            return self._settings

    @staticmethod
    def _fix_window(settings: FaultSettings, key: str, now: float) -> tuple[float, float] | None:
        window = getattr(settings, key)
        if window is None:
            return None
        start, length = (seconds / settings.time_scale for seconds in window)
        return (now + start, now + start + length)

    def window(self, key: str) -> tuple[float, float] | None:
        """The window under `key` as real epoch seconds [opens, closes), or None."""
        with self._lock:
            return self._windows[key]

    def window_open(self, key: str) -> bool:
        window = self.window(key)
        return window is not None and window[0] <= time.time() < window[1]

    def chance(self, key: str) -> bool:
        """True with the probability configured under `key` (a rate key)."""
        with self._lock:
            rate = getattr(self._settings, key)
            return rate > 0 and self._rng.random() < rate

    def coin(self) -> bool:
        with self._lock:
            return self._rng.random() < 0.5

    def uniform(self, low: float, high: float) -> float:
        with self._lock:
            return low if low == high else self._rng.uniform(low, high)

    def randint(self, low: int, high: int) -> int:
        with self._lock:
            return self._rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        with self._lock:
            return self._rng.choice(options)

    def scaled(self, seconds: float) -> float:
        """Every delay the partner takes is divided by time_scale."""
        return seconds / self.settings.time_scale

    def skew_s(self) -> float:
        return self.settings.clock_skew_s
