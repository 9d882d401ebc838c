"""The sandbox fault plan: what each partner is told to do wrong (docs/partner-protocols.md keys).

`--fault-rate` scales every rate (0 makes perfect partners: no delays, no skew either);
`--fault [PROFILE.]KEY=VALUE` overrides one key, its value read as JSON: unscoped, at every
partner; `payments.KEY=VALUE` at the payment provider alone (its plan is `chaos.payments`). The
plan is sent to each sandbox through `POST /_sandbox/faults`, which validates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RATE_KEYS = frozenset(
    {
        "timeout_after_commit_rate",
        "error_5xx_rate",
        "rate_limit_rate",
        "reject_rate",
        "webhook_duplicate_rate",
        "webhook_reorder_rate",
        "webhook_early_rate",
        "partner_cancel_rate",
        "vanish_rate",
        "amend_rate",
        "garbage_values_rate",
    }
)
WINDOW_KEYS = frozenset({"auth_failure_window_s", "outage_window_s"})
# What only the payment provider does wrong: set with `payments.KEY=VALUE`.
PAYMENT_KEYS = frozenset({"error_500_saved_rate", "refund_refused_rate", "void_refused_rate"})
PAYMENTS = "payments"
KNOWN_KEYS = (
    RATE_KEYS
    | WINDOW_KEYS
    | {
        "latency_ms",
        "async_confirm_delay_s",
        "webhook_delay_s",
        "clock_skew_s",
        "honour_idempotency_keys",
        "partner_cancel_delay_s",
        "vanish_delay_s",
        "time_scale",
        "seed",
    }
)

# Every fault on. Delays are in partner seconds, divided by `time_scale` (60 by default), so
# "webhooks up to 10 minutes late" take up to 10 real seconds. What a partner does on its own
# comes at rates a real one shows: an overbooked hotel cancels 1 in 50 confirmed reservations
# within minutes to hours, 1 in 100 is amended (a re-priced rate, a date moved), 1 in 500 is
# lost, 1 answer in 500 carries a value out of range; a key rotation locks us out for 10 minutes
# and the partner is down for 10 more (both windows start 90 real seconds after the plan is set,
# inside the load).
_COMMON: dict[str, Any] = {
    "latency_ms": [0, 1500],
    "timeout_after_commit_rate": 0.04,
    "error_5xx_rate": 0.04,
    "rate_limit_rate": 0.03,
    "reject_rate": 0.05,
    "async_confirm_delay_s": 180,
    "partner_cancel_rate": 0.02,
    "partner_cancel_delay_s": [60, 600],
    "vanish_rate": 0.002,
    "vanish_delay_s": [60, 600],
    "amend_rate": 0.01,
    "garbage_values_rate": 0.002,
    "auth_failure_window_s": [5400, 600],
    "outage_window_s": [7200, 600],
}
_PER_PROFILE: dict[str, dict[str, Any]] = {
    "reference": {
        "webhook_duplicate_rate": 0.2,
        "webhook_reorder_rate": 0.1,
        "webhook_delay_s": [0, 600],
        "webhook_early_rate": 0.1,
        "clock_skew_s": 75,
    },
    "legacy": {"clock_skew_s": -50},
}
_OFF: dict[str, Any] = {
    "latency_ms": [0, 0],
    "async_confirm_delay_s": None,
    "webhook_delay_s": [0, 0],
    "clock_skew_s": 0,
    "auth_failure_window_s": None,
    "outage_window_s": None,
}


class FaultOptionError(ValueError):
    pass


def parse_override(text: str) -> tuple[str | None, str, Any]:
    """`KEY=VALUE` or `PROFILE.KEY=VALUE`; VALUE is JSON (`0.2`, `[0, 5]`, `null`, `true`).
    PROFILE `payments` is the payment provider, the one that knows `PAYMENT_KEYS`."""
    name, sep, raw = text.partition("=")
    if not sep:
        raise FaultOptionError(f"--fault {text!r}: want [PROFILE.]KEY=VALUE")
    profile, dot, key = name.strip().rpartition(".")
    if dot and profile not in ("reference", "legacy", PAYMENTS):
        raise FaultOptionError(f"--fault {text!r}: profile must be reference, legacy or payments")
    known = KNOWN_KEYS | PAYMENT_KEYS if profile == PAYMENTS else KNOWN_KEYS
    if key not in known:
        hint = f"; {key} is the payment provider's: payments.{key}" if key in PAYMENT_KEYS else ""
        raise FaultOptionError(
            f"--fault {text!r}: unknown key {key!r}{hint} (known: {', '.join(sorted(known))})"
        )
    try:
        value = json.loads(raw)
    except ValueError:
        raise FaultOptionError(f"--fault {text!r}: the value must be JSON, e.g. 0.2, [0, 5], null") from None
    return (profile or None), key, value


@dataclass(frozen=True)
class FaultPlan:
    profile: str
    settings: dict[str, Any]

    @property
    def async_delay(self) -> float | None:
        return self.settings.get("async_confirm_delay_s")

    @property
    def clock_skew_s(self) -> float:
        return float(self.settings.get("clock_skew_s") or 0.0)

    @property
    def outage_s(self) -> float:
        """Real seconds the partner's port stays closed in its outage window (control included)."""
        window = self.settings.get("outage_window_s")
        if not window:
            return 0.0
        return float(window[1]) / float(self.settings.get("time_scale") or 1.0)

    @property
    def latest_initiative_s(self) -> float:
        """Real seconds after a confirmation (or creation) by which the partner has done what it
        does on its own (cancel, lose); an amendment follows the confirmation at once."""
        scale = float(self.settings.get("time_scale") or 1.0)
        delays = [
            self.settings.get(key, [0, 0])[1]
            for key, rate in (
                ("partner_cancel_delay_s", "partner_cancel_rate"),
                ("vanish_delay_s", "vanish_rate"),
            )
            if self.settings.get(rate)
        ]
        return max(delays, default=0) / scale


def build_plan(
    profile: str,
    *,
    fault_rate: float,
    time_scale: float,
    seed: int,
    overrides: tuple[tuple[str | None, str, Any], ...] = (),
) -> FaultPlan:
    settings: dict[str, Any] = {**_COMMON, **_PER_PROFILE.get(profile, {})}
    for key in RATE_KEYS & settings.keys():
        settings[key] = round(min(1.0, max(0.0, settings[key] * fault_rate)), 4)
    if fault_rate <= 0:
        settings.update(_OFF)
    if profile == "legacy":  # no webhooks: their keys would be harmless noise
        settings = {k: v for k, v in settings.items() if not k.startswith("webhook_")}
    settings["time_scale"] = time_scale
    settings["seed"] = seed
    for scope, key, value in overrides:
        if scope in (None, profile):
            settings[key] = value
    return FaultPlan(profile=profile, settings=settings)
