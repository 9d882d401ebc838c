"""The run's payment provider: the sandbox's `payments` profile as one more unreliable partner.

Started beside the sandbox partners (`manage.py run_sandbox_partner --profile payments`) on a free
port with its own store, its signed webhooks sent to our webhook process's `/payments/webhooks/`;
our processes point at it through `STRIPE_API_BASE` and friends (`env`). It is told its faults
through `POST /_sandbox/faults` (the partners' keys, docs/partner-protocols.md section 3), and
read back at the end through `GET /_sandbox/ground_truth`, beside our payment rows
(`money_truth`), for the money checks (chaos/checks/money.py).

A share of the run's bookings pays (`PAYMENT_SHARE`), with the sandbox's test cards: most are
authorized, some declined (`METHODS`).
"""

from __future__ import annotations

import base64
import random
import secrets
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from django.db.models import Q
from django.utils import timezone

from chaos.faults import PAYMENTS
from chaos.money_truth import REFUSED_MAX_TRIES, MoneyTruth, PaymentRow
from chaos.procs import ManagedProcess, free_port, wait_until

HTTP_TIMEOUT = (3.0, 60.0)
# A look due within this long is work the settle waits for (retries, a run's grace); a hold's
# look (HOLD_RECHECK_S scaled: 60 s at the default scale) is not.
DUE_SOON_S = 30.0
# The product's defaults (config/settings), in provider time.
LAPSE_MARGIN_S = 24 * 3600.0
HOLD_RECHECK_S = 3600.0
# How long an operation whose key replays a 5xx is read before an empty read concludes "not
# made" (the product waits an hour: Stripe may still make such a request). This provider never
# makes anything after a 500 of its run's plan (`error_500_saved_rate` makes nothing, a 5xx after
# commit made it already; `error_500_reconciled_rate` is not in the plan), so waiting the hour
# would only keep those payments from rest past the settle; a few seconds keep the path taken.
SERVER_ERROR_GRACE_S = 5.0
PAYMENT_SHARE = 0.4
# The test cards, with their weights: most pay, some are declined.
METHODS = (
    ("pm_card_visa", 0.8),
    ("pm_card_chargeDeclined", 0.1),
    ("pm_card_chargeDeclinedInsufficientFunds", 0.1),
)
# Every fault the provider has (delays in provider seconds, divided by time_scale), at rates
# scaled by the run's --fault-rate like the partners'.
#
# `refund_refused_rate`: each ask of a refund is refused whole (400 charge_not_refundable, nothing
# made) at this rate, and a refund refused REFUSED_MAX_TRIES times in a row is left to support and
# owed to the customer. A real provider refuses few refunds, and then every time (a disputed
# charge), but the sandbox rolls its dice at every ask, so for good is the rate squared: at a
# realistic 0.02, 1 refund in 2,500, none in a default run's ~27 refunds (0.01 expected). At 0.3,
# ~27 x 0.09 = 2.4 are refused for good and ~27 x 0.21 = 5.7 refused once and made when asked
# again (the chance that a run sees none for good: 0.91^27 = 8 %): rare in production, but the
# run should see the path in almost every run (the report counts those it judged).
#
# `void_refused_rate`: each ask to release a hold (a cancel of the intent) is refused whole (400
# payment_intent_unexpected_state, nothing changed), and a release refused REFUSED_MAX_TRIES times
# in a row is left to support: the customer is told the hold ends when it lapses. For good is the
# rate squared again, and a default run releases about four times as many holds as it refunds
# (~115 of its ~650 holds: bookings rejected, failed, expired or cancelled before the partner
# confirmed), so a lower rate suffices: at 0.2, ~115 x 0.04 = 4.6 refused for good and
# ~115 x 0.16 = 18 refused once and made when asked again (none for good in 1 % of runs).
_FAULTS: dict[str, Any] = {
    "latency_ms": [0, 800],
    "timeout_after_commit_rate": 0.04,
    "error_5xx_rate": 0.04,
    "error_500_saved_rate": 0.02,
    "rate_limit_rate": 0.03,
    "refund_refused_rate": 0.3,
    "void_refused_rate": 0.2,
    "webhook_duplicate_rate": 0.2,
    "webhook_reorder_rate": 0.1,
    "webhook_delay_s": [0, 180],
}
_RATES = frozenset(k for k in _FAULTS if k.endswith("_rate"))
_OFF: dict[str, Any] = {"latency_ms": [0, 0], "webhook_delay_s": [0, 0]}


def provider_faults(
    *,
    fault_rate: float,
    time_scale: float,
    seed: int,
    overrides: tuple[tuple[str | None, str, Any], ...] = (),
) -> dict[str, Any]:
    """The provider's plan; of the run's `--fault` overrides, those scoped `payments.` are its."""
    faults = dict(_FAULTS)
    for key in _RATES:
        faults[key] = round(min(1.0, max(0.0, faults[key] * fault_rate)), 4)
    if fault_rate <= 0:
        faults.update(_OFF)
    faults.update(time_scale=time_scale, seed=seed)
    faults.update({key: value for scope, key, value in overrides if scope == PAYMENTS})
    return faults


def payment_method(seed: int, index: int) -> str | None:
    """The card booking `index` pays with, or None (no payment): decided by the seed, apart from
    the draws that plan the rest of the booking."""
    rng = random.Random(f"{seed}-payment-{index}")
    if rng.random() >= PAYMENT_SHARE:
        return None
    methods, weights = zip(*METHODS, strict=True)
    return rng.choices(methods, weights=weights)[0]


@dataclass
class PaymentProvider:
    faults: dict[str, Any]
    port: int = field(default_factory=free_port)
    api_key: str = field(default_factory=lambda: "sk_test_chaos" + secrets.token_hex(12))
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )
    host: str = "127.0.0.1"  # where it listens (a cluster: the partners host)
    process: ManagedProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, *, store: Path, webhook_url: str, hang_s: float) -> list[str]:
        return [
            sys.executable,
            "manage.py",
            "run_sandbox_partner",
            "--profile",
            "payments",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--store",
            str(store),
            "--api-key",
            self.api_key,
            "--webhook-url",
            webhook_url,
            "--webhook-secret",
            self.webhook_secret,
            "--hang-s",
            str(hang_s),
            "--threads",
            "64",
            "--seed",
            str(self.faults.get("seed", 0)),
        ]

    def env(self, *, read_timeout_s: float, retry_max_s: float, run_grace_s: float) -> dict[str, str]:
        """What points our processes at it, and the payment timings that fit the run's window.

        Its holds lapse after 7 days divided by its `time_scale`, so the margin before a lapse at
        which we void a hold nobody decided on (24 h) and the look at a hold (1 h) are divided
        too: unscaled, the margin is longer than the hold, and every hold is voided the moment
        it is made, before the partner confirms (the money checks then find the confirmed
        bookings charged nothing)."""
        scale = float(self.faults.get("time_scale") or 1.0)
        return {
            "STRIPE_API_KEY": self.api_key,
            "STRIPE_API_BASE": self.base_url,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "PAYMENTS_READ_TIMEOUT_S": f"{read_timeout_s:g}",
            "PAYMENTS_CONNECT_TIMEOUT_S": "2",
            "PAYMENTS_RETRY_BASE_S": "0.5",
            "PAYMENTS_RETRY_MAX_S": f"{retry_max_s:g}",
            "PAYMENTS_RUN_GRACE_S": f"{run_grace_s:g}",
            "PAYMENTS_LAPSE_MARGIN_S": f"{LAPSE_MARGIN_S / scale:g}",
            "PAYMENTS_HOLD_RECHECK_S": f"{HOLD_RECHECK_S / scale:g}",
            "PAYMENTS_REFUSED_MAX_TRIES": str(REFUSED_MAX_TRIES),
            "PAYMENTS_SERVER_ERROR_GRACE_S": f"{SERVER_ERROR_GRACE_S:g}",
        }

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/_sandbox/info", headers=self._headers(), timeout=2).ok
        except requests.RequestException:
            return False

    def wait_ready(self, *, timeout_s: float) -> bool:
        return wait_until(self.ready, timeout_s=timeout_s, interval_s=0.2)

    def set_faults(self) -> None:
        url = f"{self.base_url}/_sandbox/faults"
        response = requests.post(url, json=self.faults, headers=self._headers(), timeout=HTTP_TIMEOUT)
        if not response.ok:
            raise RuntimeError(
                f"payments: faults {self.faults} refused: {response.status_code} {response.text}"
            )

    def ground_truth(self) -> dict[str, Any]:
        response = requests.get(
            f"{self.base_url}/_sandbox/ground_truth", headers=self._headers(), timeout=HTTP_TIMEOUT
        )
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        url = f"{self.base_url}/_sandbox/stats"
        response = requests.get(url, headers=self._headers(), timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        data = dict(response.json())
        webhooks = dict(data.get("webhooks") or {})
        webhooks.pop("attempt_log", None)
        data["webhooks"] = webhooks
        return data


# --- our side ----------------------------------------------------------------------------------
def payments_owed(partner_codes: list[str]) -> int:
    """Payments of the run's bookings with work still owed: an operation whose outcome is not
    known, or a look due within `DUE_SOON_S` (a hold nobody has decided on yet is looked at much
    later, before it lapses: not work the run waits for; the checks count it undecided)."""
    from payments.models import OperationState, Payment

    due_soon = timezone.now() + timedelta(seconds=DUE_SOON_S)
    return (
        Payment.objects.filter(booking__partner__code__in=partner_codes)
        .filter(Q(next_check_at__lte=due_soon) | Q(operations__state=OperationState.OPEN))
        .distinct()
        .count()
    )


def money_truth(partner_codes: list[str], provider: PaymentProvider) -> MoneyTruth:
    """Our payment rows of the run's bookings, with the facts that decide what each owes, beside
    the provider's ground truth."""
    from bookings.models import BookingEvent
    from payments.models import OperationKind, OperationState, Payment, PaymentOperation

    payments = list(
        Payment.objects.filter(booking__partner__code__in=partner_codes)
        .select_related("booking")
        .order_by("id")
    )
    confirmed = set(
        BookingEvent.objects.filter(
            booking__in=[p.booking_id for p in payments], to_state="confirmed"
        ).values_list("booking_id", flat=True)
    )
    # Where each booking with support came from: its latest move into needs_attention, read off
    # the timeline (not the product's `attention_from`: the oracle keeps its own account).
    attention_from: dict[Any, str] = {}
    for booking_id, from_state in (
        BookingEvent.objects.filter(
            booking__in=[p.booking_id for p in payments if p.booking.status == "needs_attention"],
            to_state="needs_attention",
        )
        .exclude(from_state="needs_attention")
        .order_by("occurred_at", "id")
        .values_list("booking_id", "from_state")
    ):
        attention_from[booking_id] = from_state  # the latest wins
    refusals: dict[tuple[Any, str], list[str]] = {}
    for payment, kind, key in (
        PaymentOperation.objects.filter(
            payment__in=payments,
            kind__in=(OperationKind.REFUND, OperationKind.VOID),
            state=OperationState.REFUSED,
        )
        .order_by("seq")
        .values_list("payment_id", "kind", "idempotency_key")
    ):
        refusals.setdefault((payment, kind), []).append(key)
    rows = [
        PaymentRow(
            booking=p.booking.reference,
            payment=str(p.pk),
            status=p.status,
            amount=p.amount,
            currency=p.currency,
            captured=p.captured_amount,
            refunded=p.refunded_amount,
            refunded_outside=p.refunded_outside,
            provider_intent=p.provider_intent_id,
            booking_status=p.booking.status,
            attention_reason=p.booking.attention_reason or "",
            confirmed_ever=p.booking_id in confirmed,
            cancellation_fee=p.booking.cancellation_fee,
            attention_from=attention_from.get(p.booking_id, ""),
            next_check_at=p.next_check_at,
            refused_refunds_owed=p.refused_refunds_owed,
            refund_refusals=tuple(refusals.get((p.pk, OperationKind.REFUND.value), ())),
            release_refused=p.release_refused,
            void_refusals=tuple(refusals.get((p.pk, OperationKind.VOID.value), ())),
        )
        for p in payments
    ]
    return MoneyTruth.from_ground_truth(rows, provider.ground_truth())
