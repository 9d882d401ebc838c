"""What the payment provider holds for a payment, asked live when support opens the booking or an
action's preview, beside what we hold.

A live answer is only shown: it enters our records through the one door when automation or an
action runs. The read is the connector's own (`retrieve`, outside any transaction, within the
provider's timeouts), and the console waits for it at most `PAYMENTS_CONSOLE_READ_WAIT_S`: a
provider that is down or slow costs the page that long, then the last state the provider told us
is shown with the reason. A read left running finishes on its own within the connector's
timeouts; it changes nothing at the provider.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitTimeout
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from payments import connector, decisions
from payments.connector import CallResult
from payments.models import Payment

logger = logging.getLogger(__name__)

# A few reads at a time: a provider that hangs holds these threads until its timeouts, and the
# pages asking meanwhile wait their bound and show the last known state.
_READS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="provider-read")


@dataclass
class MoneyPair:
    """One fact of the payment, ours beside the provider's."""

    name: str
    ours: str
    theirs: str

    @property
    def mismatch(self) -> bool:
        return bool(self.theirs) and self.ours != self.theirs


@dataclass
class ProviderSide:
    live: bool  # True: asked just now; False: the last state it told us
    checked_at: datetime
    note: str = ""
    intent_id: str = ""
    status: str = ""  # the provider's own word for the intent
    our_status_for_it: str = ""  # the payment status that word means
    amount: Decimal | None = None
    captured: Decimal | None = None
    refunded: Decimal | None = None
    authorization_expires_at: datetime | None = None
    latency_ms: int | None = None
    pairs: list[MoneyPair] = field(default_factory=list)

    def as_dict(self, *, with_ids: bool) -> dict[str, Any]:
        return {
            "live": self.live,
            "checked_at": self.checked_at.isoformat(),
            "note": self.note,
            "intent": self.intent_id if with_ids else None,
            "status": self.status,
            "means": self.our_status_for_it,
            "amount": _text(self.amount),
            "captured": _text(self.captured),
            "refunded": _text(self.refunded),
            "authorization_expires_at": (
                self.authorization_expires_at.isoformat() if self.authorization_expires_at else None
            ),
            "latency_ms": self.latency_ms,
            "pairs": [
                {"name": p.name, "ours": p.ours, "theirs": p.theirs, "mismatch": p.mismatch}
                for p in self.pairs
            ],
        }


def _text(amount: Decimal | None) -> str:
    return "" if amount is None else str(amount)


def last_known(payment: Payment, *, note: str) -> ProviderSide:
    """What the provider told us last (as the one door applied it), without asking it."""
    side = ProviderSide(
        live=False,
        checked_at=timezone.now(),
        note=note,
        intent_id=payment.provider_intent_id,
        status=payment.provider_status,
    )
    side.pairs = _pairs(payment, side)
    return side


def _failure(result: CallResult) -> str:
    detail = result.error_code or result.error[:200] or str(result.outcome)
    status = f" (HTTP {result.http_status})" if result.http_status else ""
    return f"Live read failed, {result.outcome}{status}: {detail}. Showing the last state it told us."


def _read(intent_id: str, currency: str) -> CallResult:
    return connector.retrieve(intent_id, currency=currency)


def provider_side(payment: Payment, *, live: bool = True) -> ProviderSide:
    """Ask the provider what it holds for the payment's intent (never inside a transaction: the
    caller is a view or a command); on any failure, the last state it told us, with why."""
    if not live:
        return last_known(payment, note="Not asked live; showing the last state the provider told us.")
    if not payment.provider_intent_id:
        return last_known(
            payment,
            note="The provider has not named an intent for this payment yet: nothing to ask it about.",
        )
    wait_s = settings.PAYMENTS_CONSOLE_READ_WAIT_S
    try:
        result = _READS.submit(_read, payment.provider_intent_id, payment.currency).result(timeout=wait_s)
    except WaitTimeout:
        return last_known(
            payment,
            note=f"The provider did not answer within {wait_s:g} s. Showing the last state it told us.",
        )
    except Exception as exc:
        logger.warning("payment provider live read failed", exc_info=True)
        return last_known(
            payment, note=f"Live read failed ({type(exc).__name__}). Showing the last state it told us."
        )
    truth = result.truth
    if truth is None:
        return last_known(payment, note=_failure(result))
    side = ProviderSide(
        live=True,
        checked_at=timezone.now(),
        intent_id=truth.intent_id,
        status=truth.status or "",
        our_status_for_it=(
            decisions.status_of_intent(
                intent_status=truth.status,
                cancellation_reason=truth.cancellation_reason,
                declined=truth.declined,
            )
            or ""
            if truth.status
            else ""
        ),
        amount=truth.amount,
        captured=truth.captured,
        refunded=truth.refunded,
        authorization_expires_at=truth.authorization_expires_at,
        latency_ms=result.latency_ms,
    )
    side.pairs = _pairs(payment, side)
    return side


def _pairs(payment: Payment, side: ProviderSide) -> list[MoneyPair]:
    """Our facts beside the provider's: only a live answer has amounts to compare."""
    theirs_status = side.our_status_for_it if side.live else ""
    return [
        MoneyPair("status", payment.status, theirs_status),
        MoneyPair("provider status", payment.provider_status, side.status if side.live else ""),
        MoneyPair("captured", str(payment.captured_amount), _text(side.captured)),
        MoneyPair("refunded", str(payment.refunded_amount), _text(side.refunded)),
    ]


@dataclass
class Reachability:
    """Whether the provider answers us: one read, timed. Any HTTP answer (a 404 for a probe id
    too) is an answer; 401/403 say it refuses our key."""

    asked: bool
    reachable: bool | None = None
    http_status: int | None = None
    latency_ms: int | None = None
    outcome: str = ""
    error: str = ""
    probe: str = ""
    checked_at: datetime | None = None

    @property
    def key_refused(self) -> bool:
        return self.http_status in (401, 403)

    @property
    def slow(self) -> bool:
        """Asked, and our wait ended first: not known to be down (the call may still be answered)."""
        return self.asked and self.reachable is None and self.outcome == "slow"

    @property
    def said(self) -> str:
        """The one line the command, the page and the problems say of it."""
        if not self.asked:
            return "not asked"
        if self.reachable:
            refused = ", but refuses our key" if self.key_refused else ""
            return f"answers{refused} (HTTP {self.http_status}, {self.latency_ms} ms)"
        if self.slow:
            return f"slow: {self.error}, not known to be down"
        return f"does not answer: {self.outcome} {self.error}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "reachable": self.reachable,
            "key_refused": self.key_refused,
            "http_status": self.http_status,
            "latency_ms": self.latency_ms,
            "outcome": self.outcome,
            "error": self.error,
            "probe": self.probe,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


PROBE_INTENT = "pi_health_probe"


def provider_reachability(*, wait_s: float | None = None) -> Reachability:
    """Read our newest intent (or a probe id nobody holds) and say how the provider answered;
    the console waits at most `wait_s` (None: the connector's own timeouts)."""
    newest = (
        Payment.objects.exclude(provider_intent_id="")
        .order_by("-created_at")
        .values_list("provider_intent_id", "currency")
        .first()
    )
    intent_id, currency = newest or (PROBE_INTENT, "EUR")
    started = timezone.now()
    try:
        if wait_s is None:
            result = _read(intent_id, currency)
        else:
            result = _READS.submit(_read, intent_id, currency).result(timeout=wait_s)
    except WaitTimeout:
        # Our wait, not the provider's answer: a provider answering in 5 s is slow, not down.
        return Reachability(
            asked=True,
            reachable=None,
            outcome="slow",
            error=f"no answer within {wait_s:g} s",
            probe=intent_id,
            checked_at=started,
        )
    except Exception as exc:
        logger.warning("payment provider probe failed", exc_info=True)
        return Reachability(
            asked=True,
            reachable=False,
            outcome="error",
            error=type(exc).__name__,
            probe=intent_id,
            checked_at=started,
        )
    return Reachability(
        asked=True,
        reachable=result.http_status is not None,
        http_status=result.http_status,
        latency_ms=result.latency_ms,
        outcome=str(result.outcome),
        error=result.error_code or result.error[:200],
        probe=intent_id,
        checked_at=started,
    )
