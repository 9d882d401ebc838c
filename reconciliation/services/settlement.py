"""A day's settlement report: our payment ledger beside the provider's listing for that day, and
every place they disagree.

For a UTC day D, the provider's side is what its list calls return (through the connector's own
client): the PaymentIntents (with their charge) and the refunds created on D, listed with an hour's
margin either side so that a call made just before midnight and answered after it matches. Our
side is every payment an operation of ours touched on D (opened, tried or closed), and our refund
operations on the provider's clock: each refund the provider made on D is matched to our
operation by its id or the operation key in its metadata, whatever the operation's state and
whenever it was asked or closed (its answer may have been read hours later, or not yet), and an
operation of ours asked on D (`opened_at`, just before its call) and settled (succeeded, or
failed since) that the provider holds no refund for is reported that day; one still open is not
(its answer, and so whether a refund exists, is not known yet: it is judged once it settles).
A refund is reported and counted on the day the provider made
it. One that succeeded, or failed since (the card refused it after it was made, and the
provider's refund must say failed too; neither side counts it as given back), agrees. Each
intent of either side is compared (what our payment holds against what the provider holds now):
an intent only the provider has (no payment of ours names it) or only we have (the provider
answers 404), a status the provider's word does not mean, an authorized, captured or refunded
amount that differs. Each refund is compared too: made
at the provider with no operation of ours, an operation of ours the provider never made (not
in its listing, nor found by its id: one made later, its call asked again past the margin, is
that day's), or a different amount or status (an operation still open, or closed as not made,
beside a refund the provider made). A release of a hold
(the provider's own refund object when an intent is voided or partly captured, without a balance
transaction) moves no money and is not a refund here.

A mismatch on a payment whose operation is still open (a refund's too) is reported with
`open_operation`: the provider may be ahead of us until that operation settles.

Money support paid back another way that day (a refund the card refused, paid by bank transfer,
cash, a voucher: `payments/services/outside.py`) is listed in a section of its own, each
recording with how it was paid and who recorded (and approved) it. The provider never saw it, so
it is compared with nothing and is no mismatch; finance reconciles it against its own books.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q

from payments import connector, decisions
from payments.connector import REFUND_FAILED, IntentTruth
from payments.models import OperationKind, OperationState, Payment, PaymentOperation
from payments.money import RefusedAmount, from_minor
from payments.services.outside import OutsideRefund, outside_refunds

logger = logging.getLogger(__name__)

MARGIN = timedelta(hours=1)
PAGE = 100


class ProviderUnavailable(RuntimeError):
    """The provider's listing for the day (or an intent of ours by its id) could not be read, after
    `tries` tries: no report can be made."""

    def __init__(self, message: str, *, tries: int = 1) -> None:
        super().__init__(message)
        self.tries = tries

    @property
    def said(self) -> str:
        """The one line the command ends with."""
        tries = f"{self.tries} {'try' if self.tries == 1 else 'tries'}"
        return f"The provider could not be read after {tries}: {self}"


@dataclass(frozen=True)
class Mismatch:
    kind: str  # see KINDS
    detail: str
    booking: str = ""
    intent: str = ""
    refund: str = ""
    field: str = ""
    ours: str = ""
    theirs: str = ""
    open_operation: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


KINDS = {
    "intent_unknown_to_us": "the provider holds an intent no payment of ours names",
    "intent_missing_at_provider": "we hold an intent the provider does not",
    "status_differs": "our payment's status is not what the provider's word for the intent means",
    "amount_differs": "an authorized, captured or refunded amount differs",
    "refund_unknown_to_us": "the provider made a refund no operation of ours asked for",
    "refund_missing_at_provider": "an operation of ours succeeded that the provider never made",
    "refund_differs": "a refund's amount or status differs",
    "unreadable": "the provider's answer could not be read (another currency, out of range)",
}


@dataclass
class Totals:
    currency: str
    captured_ours: Decimal = Decimal("0.00")
    captured_provider: Decimal = Decimal("0.00")
    refunded_on_day_ours: Decimal = Decimal("0.00")
    refunded_on_day_provider: Decimal = Decimal("0.00")

    def as_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in self.__dict__.items()}


@dataclass
class Settlement:
    day: date
    intents_compared: int = 0
    refunds_compared: int = 0
    provider_intents_listed: int = 0
    provider_refunds_listed: int = 0
    totals: dict[str, Totals] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    # Recorded that day as paid back another way: not the provider's, compared with nothing.
    paid_outside: list[OutsideRefund] = field(default_factory=list)

    def total(self, currency: str) -> Totals:
        return self.totals.setdefault(currency, Totals(currency))

    @property
    def paid_outside_totals(self) -> dict[str, Decimal]:
        """What was paid back another way that day, per currency."""
        sums: dict[str, Decimal] = {}
        for recorded in self.paid_outside:
            sums[recorded.currency] = sums.get(recorded.currency, Decimal("0.00")) + recorded.amount
        return dict(sorted(sums.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "intents_compared": self.intents_compared,
            "refunds_compared": self.refunds_compared,
            "provider_intents_listed": self.provider_intents_listed,
            "provider_refunds_listed": self.provider_refunds_listed,
            "totals": {currency: t.as_dict() for currency, t in sorted(self.totals.items())},
            "mismatches": [m.as_dict() for m in self.mismatches],
            "paid_outside": [o.as_dict() for o in self.paid_outside],
            "paid_outside_totals": {currency: str(v) for currency, v in self.paid_outside_totals.items()},
        }


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


# --- the provider's listing ------------------------------------------------------------------------
def _list(resource: Any, params: dict[str, Any], *, operation: str) -> list[dict[str, Any]]:
    """Every object of a list call, page after page, each page asked again after a 5xx or a
    timeout (`connector.read_again`: a read changes nothing at the provider)."""
    found: list[dict[str, Any]] = []
    after = None
    while True:
        page_params = {**params, "limit": PAGE}
        if after:
            page_params["starting_after"] = after
        page = connector.read_again(functools.partial(resource.list, params=page_params), operation=operation)
        found += [item.to_dict() for item in page.data]
        if not page.has_more or not page.data:
            return found
        after = page.data[-1].id


def provider_listing(start: datetime, end: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(intents with their charge, refunds) the provider created in [start, end)."""
    created = {"gte": int(start.timestamp()), "lt": int(end.timestamp())}
    client = connector.client()
    try:
        intents = _list(
            client.v1.payment_intents,
            {"created": created, "expand": ["data.latest_charge"]},
            operation="list_intents",
        )
        refunds = _list(client.v1.refunds, {"created": created}, operation="list_refunds")
    except connector.ReadFailed as failed:  # on every try: the day cannot be settled
        logger.warning("payment provider listing failed", exc_info=True)
        raise ProviderUnavailable(str(failed), tries=failed.tries) from failed
    except Exception as exc:  # anything else the SDK raises
        logger.warning("payment provider listing failed", exc_info=True)
        raise ProviderUnavailable(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
    return intents, refunds


def _intent_read(intent_id: str) -> dict[str, Any] | None:
    """The intent as the provider holds it now (asked again after a 5xx or a timeout, as the
    listing is); None when it holds none (a 404)."""
    try:
        intent = connector.read_again(
            lambda: connector.client().v1.payment_intents.retrieve(
                intent_id, params={"expand": ["latest_charge"]}
            ),
            operation="retrieve",
        )
    except connector.ReadFailed as failed:
        if failed.http_status == 404:
            return None
        logger.warning("payment provider read failed", exc_info=True)
        raise ProviderUnavailable(f"intent {intent_id}: {failed}", tries=failed.tries) from failed
    return intent.to_dict()


def _created(obj: dict[str, Any]) -> datetime | None:
    value = obj.get("created")
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int) else None


# --- our ledger --------------------------------------------------------------------------------
def _touched(start: datetime, end: datetime) -> Q:
    return (
        Q(opened_at__gte=start, opened_at__lt=end)
        | Q(last_tried_at__gte=start, last_tried_at__lt=end)
        | Q(closed_at__gte=start, closed_at__lt=end)
    )


def settle_day(day: date) -> Settlement:
    """Our ledger for `day` beside the provider's listing for it (`ProviderUnavailable` when the
    provider cannot be listed)."""
    start, end = day_bounds(day)
    intents, refunds = provider_listing(start - MARGIN, end + MARGIN)
    report = Settlement(day=day)
    report.provider_intents_listed = sum(1 for i in intents if _in_day(i, start, end))
    money_refunds = [r for r in refunds if _moves_money(r)]
    report.provider_refunds_listed = sum(1 for r in money_refunds if _in_day(r, start, end))

    touched_ids = set(
        PaymentOperation.objects.filter(_touched(start, end)).values_list("payment_id", flat=True)
    )
    listed_by_id = {i.get("id"): i for i in intents if isinstance(i.get("id"), str)}
    named_payments = {
        (i.get("metadata") or {}).get("payment") for i in intents if (i.get("metadata") or {}).get("payment")
    }
    payments = {
        p.pk: p
        for p in Payment.objects.filter(
            Q(pk__in=touched_ids)
            | Q(provider_intent_id__in=list(listed_by_id))
            | Q(pk__in=[_uuid(v) for v in named_payments if _uuid(v)])
        ).select_related("booking")
    }
    open_ops = set(
        PaymentOperation.objects.filter(payment_id__in=list(payments), state=OperationState.OPEN).values_list(
            "payment_id", flat=True
        )
    )
    by_intent = {p.provider_intent_id: p for p in payments.values() if p.provider_intent_id}
    by_payment_ref = {str(p.pk): p for p in payments.values()}

    # Intents the provider listed.
    for intent in intents:
        intent_id = intent.get("id", "")
        payment = by_intent.get(intent_id)
        if payment is None:
            named = by_payment_ref.get((intent.get("metadata") or {}).get("payment") or "")
            if _in_day(intent, start, end):
                report.mismatches.append(
                    Mismatch(
                        "intent_unknown_to_us",
                        f"{KINDS['intent_unknown_to_us']}"
                        + (
                            f" (its metadata names payment of {named.booking.reference}, which holds "
                            f"{named.provider_intent_id or 'no intent'})"
                            if named
                            else ""
                        ),
                        booking=named.booking.reference if named else "",
                        intent=intent_id,
                        theirs=f"{intent.get('status')} {intent.get('amount')} {intent.get('currency')}",
                    )
                )
            continue
        if payment.pk not in touched_ids and not _in_day(intent, start, end):
            continue  # listed for the margin only, and not ours to settle today
        _compare(report, payment, intent, open_operation=payment.pk in open_ops)

    # Our payments touched today whose intent the listing did not show (made another day).
    for payment in payments.values():
        if payment.pk not in touched_ids or payment.provider_intent_id in listed_by_id:
            continue
        if not payment.provider_intent_id:
            continue  # nothing made at the provider (declined without an intent, abandoned)
        intent = _intent_read(payment.provider_intent_id)
        if intent is None:
            report.mismatches.append(
                Mismatch(
                    "intent_missing_at_provider",
                    KINDS["intent_missing_at_provider"],
                    booking=payment.booking.reference,
                    intent=payment.provider_intent_id,
                    ours=payment.status,
                    open_operation=payment.pk in open_ops,
                )
            )
        else:
            _compare(report, payment, intent, open_operation=payment.pk in open_ops)

    _compare_refunds(report, money_refunds, start, end, by_intent)
    report.paid_outside = outside_refunds(start=start, end=end)
    return report


def _uuid(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _in_day(obj: dict[str, Any], start: datetime, end: datetime) -> bool:
    created = _created(obj)
    return created is not None and start <= created < end


def _moves_money(refund: dict[str, Any]) -> bool:
    """A refund that gave money back (ours name their operation; a release has no balance
    transaction and names none)."""
    return bool(refund.get("balance_transaction") or (refund.get("metadata") or {}).get("operation"))


def _compare(report: Settlement, payment: Payment, intent: dict[str, Any], *, open_operation: bool) -> None:
    try:
        truth = connector.intent_truth(intent, payment.currency)
    except RefusedAmount as refused:
        report.mismatches.append(
            Mismatch(
                "unreadable",
                f"{KINDS['unreadable']}: {refused}",
                booking=payment.booking.reference,
                intent=str(intent.get("id", "")),
                open_operation=open_operation,
            )
        )
        return
    _compare_truth(report, payment, truth, open_operation=open_operation)


def _compare_truth(report: Settlement, payment: Payment, truth: IntentTruth, *, open_operation: bool) -> None:
    report.intents_compared += 1
    totals = report.total(payment.currency)
    totals.captured_ours += payment.captured_amount
    totals.captured_provider += truth.captured or Decimal("0.00")
    common = {
        "booking": payment.booking.reference,
        "intent": truth.intent_id,
        "open_operation": open_operation,
    }
    means = (
        decisions.status_of_intent(
            intent_status=truth.status, cancellation_reason=truth.cancellation_reason, declined=truth.declined
        )
        if truth.status
        else None
    )
    if means is not None and means != payment.status:
        report.mismatches.append(
            Mismatch(
                "status_differs",
                f"ours {payment.status}, the provider says {truth.status} (= {means})",
                field="status",
                ours=payment.status,
                theirs=str(truth.status),
                **common,
            )
        )
    for name, ours, theirs in (
        ("authorized", payment.amount, truth.amount),
        ("captured", payment.captured_amount, truth.captured),
        ("refunded", payment.refunded_amount, truth.refunded),
    ):
        if theirs is not None and ours != theirs:
            report.mismatches.append(
                Mismatch(
                    "amount_differs",
                    f"{name}: ours {ours}, the provider's {theirs} {payment.currency}",
                    field=name,
                    ours=str(ours),
                    theirs=str(theirs),
                    **common,
                )
            )


def _refund_read(refund_id: str) -> dict[str, Any] | None:
    """The refund as the provider holds it now (asked again as the listing is); None on a 404."""
    try:
        refund = connector.read_again(
            lambda: connector.client().v1.refunds.retrieve(refund_id), operation="retrieve_refund"
        )
    except connector.ReadFailed as failed:
        if failed.http_status == 404:
            return None
        logger.warning("payment provider read failed", exc_info=True)
        raise ProviderUnavailable(f"refund {refund_id}: {failed}", tries=failed.tries) from failed
    return refund.to_dict()


def _compare_refunds(
    report: Settlement,
    refunds: Iterable[dict[str, Any]],
    start: datetime,
    end: datetime,
    by_intent: dict[str, Payment],
) -> None:
    """Both sides on one clock, when the refund was made: the provider's by its `created` (what
    its listing filters on), ours by when we asked for it (`opened_at`: its call follows at once),
    and across a day's edge by the provider's id or our key a listed refund names, whatever the
    operation's state (an open one is flagged: the provider is ahead of us until it settles). A
    pair is reported and counted on the day the provider made it; a settled operation of ours
    the provider holds no refund for, on the day we asked for it (an open one is not judged yet)."""
    refunds = list(refunds)
    listed_ids = [str(r["id"]) for r in refunds if r.get("id")]
    listed_keys = [k for r in refunds if (k := (r.get("metadata") or {}).get("operation"))]
    # With the listing's margin, so that a refund asked just before midnight and made after it
    # is matched; only the day's own are reported or counted.
    ours = list(
        PaymentOperation.objects.filter(kind=OperationKind.REFUND)
        .filter(
            Q(opened_at__gte=start - MARGIN, opened_at__lt=end + MARGIN)
            | Q(provider_object_id__in=listed_ids)
            | Q(idempotency_key__in=listed_keys)
        )
        .select_related("payment__booking")
    )
    by_id = {op.provider_object_id: op for op in ours if op.provider_object_id}
    by_key = {op.idempotency_key: op for op in ours}
    # The payments of refunds no operation of ours names (one made in the provider's dashboard).
    unnamed = {str(r.get("payment_intent") or "") for r in refunds} - set(by_intent)
    strangers = Payment.objects.filter(provider_intent_id__in=unnamed - {""}).select_related("booking")
    payments_by_intent = {**{p.provider_intent_id: p for p in strangers}, **by_intent}
    open_payments = set(
        PaymentOperation.objects.filter(
            state=OperationState.OPEN,
            payment_id__in={op.payment_id for op in ours} | {p.pk for p in payments_by_intent.values()},
        ).values_list("payment_id", flat=True)
    )
    matched: set[int] = set()
    for refund in refunds:
        refund_id = str(refund.get("id", ""))
        op = by_id.get(refund_id) or by_key.get((refund.get("metadata") or {}).get("operation") or "")
        intent_id = str(refund.get("payment_intent") or "")
        payment = op.payment if op else payments_by_intent.get(intent_id)
        currency = payment.currency if payment else str(refund.get("currency", "")).upper()
        try:
            amount = from_minor(refund.get("amount"), currency)
        except RefusedAmount as refused:
            report.mismatches.append(
                Mismatch(
                    "unreadable", f"{KINDS['unreadable']}: {refused}", intent=intent_id, refund=refund_id
                )
            )
            continue
        if op is not None:
            matched.add(op.pk)
        if not _in_day(refund, start, end):
            continue  # made another day: that day's report compares and counts it
        open_operation = payment is not None and payment.pk in open_payments
        failed = refund.get("status") in REFUND_FAILED  # gave nothing back after all
        if not failed:
            report.total(currency).refunded_on_day_provider += amount
        if op is None:
            report.mismatches.append(
                Mismatch(
                    "refund_unknown_to_us",
                    f"{KINDS['refund_unknown_to_us']}: {amount} {currency}",
                    booking=payment.booking.reference if payment else "",
                    intent=intent_id,
                    refund=refund_id,
                    theirs=f"{amount} {refund.get('status')}",
                    open_operation=open_operation,
                )
            )
            continue
        report.refunds_compared += 1
        if op.state == OperationState.SUCCEEDED:
            report.total(currency).refunded_on_day_ours += op.amount or Decimal("0.00")
        # Ours succeeded: made (or on its way); ours failed: the provider's failed too. Any other
        # state (open: not known yet; not made) disagrees with a refund the provider made.
        if op.state == OperationState.FAILED:
            agrees = failed
        else:
            agrees = op.state == OperationState.SUCCEEDED and not failed
        if amount != op.amount or not agrees:
            report.mismatches.append(
                Mismatch(
                    "refund_differs",
                    f"ours {op.amount} {op.state}, the provider's {amount} {refund.get('status')}",
                    booking=op.payment.booking.reference,
                    intent=intent_id,
                    refund=refund_id,
                    field="refund",
                    ours=f"{op.amount} {op.state}",
                    theirs=f"{amount} {refund.get('status')}",
                    open_operation=open_operation,
                )
            )
    for op in ours:
        if op.pk in matched or op.state not in (OperationState.SUCCEEDED, OperationState.FAILED):
            continue
        if not start <= op.opened_at < end:
            continue  # asked another day
        if op.provider_object_id and _refund_read(op.provider_object_id) is not None:
            continue  # made later than the listing's margin (its call asked again): made that day
        if op.state == OperationState.SUCCEEDED:
            report.total(op.payment.currency).refunded_on_day_ours += op.amount or Decimal("0.00")
        report.mismatches.append(
            Mismatch(
                "refund_missing_at_provider",
                f"{KINDS['refund_missing_at_provider']}: {op.amount} {op.payment.currency} under "
                f"{op.idempotency_key}",
                booking=op.payment.booking.reference,
                intent=op.payment.provider_intent_id,
                refund=op.provider_object_id,
                ours=f"{op.amount} {op.state}",
                open_operation=op.payment_id in open_payments,
            )
        )
