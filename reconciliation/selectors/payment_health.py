"""Payment health for support and ops, beside partner health: whether the provider answers us
(one timed read), the operations whose outcome is not known yet (open, oldest first), the
unknown-outcome fences on authorizations, the holds near their lapse, the payments whose run is
overdue or that automation left to support, the confirmed bookings whose payment holds no money,
the refunds the card refused after they were made (money owed to the customer: support's), the
holds the provider would not release (nothing owed: support's to void), the refund proposals
waiting for a second person, and the provider's webhook deliveries over the window by what came
of them. Thirteen queries, and the read of the provider unless told not to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, Exists, Max, Min, OuterRef, Q
from django.utils import timezone

from bookings.models import BookingEvent
from bookings.states import BookingState
from payments.models import (
    AUTHORIZATION_UNANSWERED,
    EventState,
    OperationState,
    Payment,
    PaymentEvent,
    PaymentOperation,
    PaymentStatus,
)
from reconciliation.models import ProposalState, RefundProposal
from reconciliation.services.support.payments.provider_side import Reachability, provider_reachability
from reconciliation.services.support.payments.situation import SUPPORT_REFUND_KINDS

P = PaymentStatus
LIST_LIMIT = 20


@dataclass
class OpenOperation:
    booking: str
    key: str
    kind: str
    amount: str | None
    tries: int
    last_outcome: str
    answer_lost: bool
    opened_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "opened_at": self.opened_at.isoformat()}


@dataclass
class HoldNearLapse:
    booking: str
    booking_status: str
    amount: str
    currency: str
    expires_at: datetime
    guard_passed: bool  # automation should have voided it by now (PAYMENTS_LAPSE_MARGIN_S)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "expires_at": self.expires_at.isoformat()}


@dataclass
class RefundFailed:
    """A payment whose refunds the card refused after they were made, and not given back since:
    the customer is owed `owed`; automation never asks the card again (support refunds again, or
    reaches the customer)."""

    booking: str
    owed: str
    currency: str
    failed_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "failed_at": self.failed_at.isoformat() if self.failed_at else None}


@dataclass
class ReleaseRefused:
    """A hold the booking owes nothing of, whose release (a void) the provider refused every time
    it was asked: automation asks no more; it lapses at the provider at `expires_at`, unless
    support voids it sooner. The customer is told so (`release_refused`)."""

    booking: str
    amount: str
    currency: str
    expires_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "expires_at": self.expires_at.isoformat() if self.expires_at else None}


@dataclass
class PaymentHealth:
    window: timedelta
    horizon: timedelta
    provider: Reachability
    open_operations: dict[str, int] = field(default_factory=dict)  # by kind
    oldest_open: list[OpenOperation] = field(default_factory=list)
    answers_lost: int = 0  # open operations only a read can settle
    fenced: int = 0  # payments whose authorization's outcome is unknown
    oldest_fence_at: datetime | None = None
    near_lapse: list[HoldNearLapse] = field(default_factory=list)
    lapsed: int = 0  # holds that lapsed at the provider within the window
    overdue_runs: int = 0  # payments due longer than the run grace ago
    left_to_support: int = 0  # within the window
    # Confirmed, and nothing held or kept (released, lapsed, refunded in full): automation never
    # asks for money again, so support decides (cancel, or take it another way).
    unpaid_confirmed: list[str] = field(default_factory=list)
    # Refunds the card refused, owed to the customer (oldest failure first), and how many in all.
    refunds_failed: list[RefundFailed] = field(default_factory=list)
    refunds_failed_count: int = 0
    # Holds the provider would not release, owed nothing (soonest lapse first), and how many in all.
    releases_refused: list[ReleaseRefused] = field(default_factory=list)
    releases_refused_count: int = 0
    pending_proposals: int = 0
    deliveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EventState.values, 0))
    last_delivery_at: datetime | None = None
    stale_deliveries: int = 0  # stored, not processed, older than RECONCILE_INBOUND_STALE_S
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_minutes": int(self.window.total_seconds() // 60),
            "lapse_horizon_hours": round(self.horizon.total_seconds() / 3600, 2),
            "provider": self.provider.as_dict(),
            "open_operations": self.open_operations,
            "oldest_open": [o.as_dict() for o in self.oldest_open],
            "answers_lost": self.answers_lost,
            "unknown_fences": self.fenced,
            "oldest_fence_at": self.oldest_fence_at.isoformat() if self.oldest_fence_at else None,
            "near_lapse": [h.as_dict() for h in self.near_lapse],
            "lapsed": self.lapsed,
            "overdue_runs": self.overdue_runs,
            "left_to_support": self.left_to_support,
            "unpaid_confirmed": self.unpaid_confirmed,
            "refunds_failed": [r.as_dict() for r in self.refunds_failed],
            "refunds_failed_count": self.refunds_failed_count,
            "releases_refused": [r.as_dict() for r in self.releases_refused],
            "releases_refused_count": self.releases_refused_count,
            "pending_refund_proposals": self.pending_proposals,
            "deliveries": self.deliveries,
            "last_delivery_at": self.last_delivery_at.isoformat() if self.last_delivery_at else None,
            "stale_deliveries": self.stale_deliveries,
            "problems": self.problems,
        }


def payment_health(
    *,
    window: timedelta = timedelta(hours=1),
    horizon: timedelta | None = None,
    probe: bool = True,
    probe_wait_s: float | None = None,
    now: datetime | None = None,
) -> PaymentHealth:
    """Payment health now; deliveries, lapses and hand-overs to support over `window`; holds that
    lapse within `horizon` (default: twice the lapse margin automation voids them at)."""
    now = now or timezone.now()
    since = now - window
    horizon = horizon or timedelta(seconds=2 * settings.PAYMENTS_LAPSE_MARGIN_S)
    wait = settings.PAYMENTS_CONSOLE_READ_WAIT_S if probe_wait_s is None else probe_wait_s
    health = PaymentHealth(
        window=window,
        horizon=horizon,
        provider=provider_reachability(wait_s=wait) if probe else Reachability(asked=False),
    )
    open_ops = PaymentOperation.objects.filter(state=OperationState.OPEN)
    health.open_operations = dict(
        open_ops.values_list("kind").annotate(n=Count("id")).order_by("kind").values_list("kind", "n")
    )
    health.answers_lost = open_ops.filter(answer_lost=True).count()
    health.oldest_open = [
        OpenOperation(
            booking=op.payment.booking.reference,
            key=op.idempotency_key,
            kind=op.kind,
            amount=None if op.amount is None else str(op.amount),
            tries=op.tries,
            last_outcome=op.last_outcome,
            answer_lost=op.answer_lost,
            opened_at=op.opened_at,
        )
        for op in open_ops.select_related("payment__booking").order_by("opened_at", "id")[:LIST_LIMIT]
    ]
    fences = Payment.objects.filter(status__in=AUTHORIZATION_UNANSWERED).aggregate(
        n=Count("id"), oldest=Min("status_changed_at")
    )
    health.fenced, health.oldest_fence_at = fences["n"], fences["oldest"]
    margin = timedelta(seconds=settings.PAYMENTS_LAPSE_MARGIN_S)
    health.near_lapse = [
        HoldNearLapse(
            booking=p.booking.reference,
            booking_status=p.booking.status,
            amount=str(p.amount),
            currency=p.currency,
            expires_at=p.authorization_expires_at,
            guard_passed=p.authorization_expires_at - margin <= now,
        )
        for p in Payment.objects.filter(status=P.AUTHORIZED, authorization_expires_at__lte=now + horizon)
        .select_related("booking")
        .order_by("authorization_expires_at")[:LIST_LIMIT]
    ]
    health.lapsed = Payment.objects.filter(status=P.LAPSED, status_changed_at__gte=since).count()
    grace = timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S)
    health.overdue_runs = Payment.objects.filter(next_check_at__lte=now - grace).count()
    health.left_to_support = BookingEvent.objects.filter(
        kind="payment.left_to_support", occurred_at__gte=since
    ).count()
    # Support refunding a confirmed stay in full is a decision (goodwill), not money gone missing.
    support_refunded = BookingEvent.objects.filter(booking=OuterRef("booking"), kind__in=SUPPORT_REFUND_KINDS)
    holds_nothing = Q(status__in=(P.VOIDED, P.LAPSED, P.ABANDONED, P.DECLINED)) | Q(
        ~Exists(support_refunded),
        status=P.CAPTURED,
        captured_amount__lte=models.F("refunded_amount") + models.F("refunded_outside"),
    )
    health.unpaid_confirmed = list(
        Payment.objects.filter(holds_nothing, booking__status=BookingState.CONFIRMED)
        .order_by("status_changed_at")
        .values_list("booking__reference", flat=True)[:LIST_LIMIT]
    )
    # Refunds the card refused after they were made, and those the provider refused for good.
    owed_back = Payment.objects.filter(Q(failed_refunds_owed__gt=0) | Q(refused_refunds_owed__gt=0))
    health.refunds_failed_count = owed_back.count()
    health.refunds_failed = [
        RefundFailed(
            booking=p.booking.reference,
            owed=str(p.owed_back),
            currency=p.currency,
            failed_at=p.failed_at,
        )
        for p in owed_back.select_related("booking")
        .annotate(failed_at=Max("operations__failed_at"))
        .order_by("failed_at", "id")[:LIST_LIMIT]
    ]
    releases_refused = Payment.objects.filter(status=P.AUTHORIZED, release_refused=True)
    health.releases_refused_count = releases_refused.count()
    health.releases_refused = [
        ReleaseRefused(
            booking=p.booking.reference,
            amount=str(p.amount),
            currency=p.currency,
            expires_at=p.authorization_expires_at,
        )
        for p in releases_refused.select_related("booking").order_by("authorization_expires_at", "id")[
            :LIST_LIMIT
        ]
    ]
    health.pending_proposals = RefundProposal.objects.filter(state=ProposalState.PENDING).count()
    deliveries = PaymentEvent.objects.filter(received_at__gte=since)
    for state, n in deliveries.values_list("state").annotate(n=Count("id")).values_list("state", "n"):
        health.deliveries[state] = n
    health.last_delivery_at = PaymentEvent.objects.aggregate(last=Max("received_at"))["last"]
    stale_before = now - timedelta(seconds=settings.RECONCILE_INBOUND_STALE_S)
    health.stale_deliveries = PaymentEvent.objects.filter(
        state=EventState.RECEIVED, received_at__lte=stale_before
    ).count()
    health.problems = _problems(health, now)
    return health


def _problems(h: PaymentHealth, now: datetime) -> list[str]:
    problems = []
    provider = h.provider
    if provider.slow:
        problems.append(f"The provider is {provider.said}; payments may take longer.")
    elif provider.asked and not provider.reachable:
        problems.append(f"The provider {provider.said}.")
    elif provider.key_refused:
        problems.append(f"The provider refuses our API key (HTTP {provider.http_status}).")
    if h.fenced:
        problems.append(
            f"{h.fenced} authorization(s) with an unknown outcome (fenced until the provider answers)."
        )
    if h.answers_lost:
        problems.append(
            f"{h.answers_lost} operation(s) whose answer was lost: only a read of the provider settles them."
        )
    passed = [hold for hold in h.near_lapse if hold.guard_passed]
    if passed:
        problems.append(
            f"{len(passed)} hold(s) past the time automation voids them, still held: "
            + ", ".join(hold.booking for hold in passed[:5])
        )
    if h.lapsed:
        problems.append(f"{h.lapsed} hold(s) lapsed at the provider in the window: none should.")
    if h.overdue_runs:
        problems.append(f"{h.overdue_runs} payment run(s) overdue: is a worker or the scheduler down?")
    if h.left_to_support:
        problems.append(
            f"{h.left_to_support} payment(s) left to support in the window (the provider refused a step)."
        )
    if h.unpaid_confirmed:
        problems.append(
            f"{len(h.unpaid_confirmed)} confirmed booking(s) whose payment holds no money (support's "
            "decision: cancel, or take it another way): " + ", ".join(h.unpaid_confirmed[:5])
        )
    if h.refunds_failed_count:
        problems.append(
            f"{h.refunds_failed_count} payment(s) with a refund the card refused after it was made: "
            "the money is owed to the customer and automation never asks the card again (support: "
            "refund again, or reach the customer): "
            + ", ".join(f"{r.booking} ({r.owed} {r.currency})" for r in h.refunds_failed[:5])
        )
    if h.releases_refused_count:
        problems.append(
            f"{h.releases_refused_count} hold(s) the provider refused to release every time it was "
            "asked, though nothing is owed: automation asks no more and the hold stays until it lapses "
            "(support: void it once the provider takes it): "
            + ", ".join(f"{r.booking} ({r.amount} {r.currency})" for r in h.releases_refused[:5])
        )
    if h.pending_proposals:
        # A customer's money waits on a second person: not automation's to settle.
        problems.append(f"{h.pending_proposals} refund proposal(s) waiting for a second person's approval.")
    if h.stale_deliveries:
        problems.append(f"{h.stale_deliveries} webhook delivery(ies) stored and not processed.")
    if h.deliveries.get(EventState.FAILED):
        problems.append(
            f"{h.deliveries[EventState.FAILED]} webhook delivery(ies) set aside as failed in the window."
        )
    return problems
