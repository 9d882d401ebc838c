"""The payment provider's connector: the only module that imports `stripe`.

PaymentIntents in manual capture through the official SDK (pinned in pyproject.toml):
authorize (create and confirm), capture, void (cancel), refund, retrieve, and a search of the
intents made since a time. Every write carries the idempotency key of its operation
(`PaymentOperation.idempotency_key`, ours, never the customer's); the SDK's own retries are off,
so each call is one try on the timeline. A report's read (the day's settlement) is asked again
instead by `read_again`: it changes nothing at the provider. `STRIPE_API_KEY` and `STRIPE_API_BASE` name the
provider: Stripe for a real operator, the sandbox (docs/partner-protocols.md, section 3) under
`make run` and the tests.

Every answer is read here, at the edge, into `IntentTruth`: amounts from minor units to Decimal
in the payment's currency, another currency or an amount out of range refused whole. How a call
ended is classified once (`CallOutcome`): a decline, a refusal that changes nothing if asked
again, a try that provably did nothing (429, a key not accepted), and everything that may have
happened (a timeout, a dropped connection, a 5xx, a key still in flight): ambiguous. Each call
made is counted here too, by operation and outcome, with its duration (`/metrics`,
`bookings_payment_calls_total`); an amount that cannot be sent is no call, and is not counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

import stripe
from django.conf import settings

from config.metrics import events as metrics
from config.text import storable
from payments.models import CallOutcome
from payments.money import RefusedAmount, charge_minor, from_minor, same_currency, to_minor

logger = logging.getLogger(__name__)
T = TypeVar("T")

INTENT_STATUSES = frozenset(
    {
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "processing",
        "requires_capture",
        "succeeded",
        "canceled",
    }
)
# How far a search for an authorization's intent reaches back before the call was made (the
# provider's clock may be behind ours).
SEARCH_MARGIN_S = 300
SEARCH_PAGE = 100
# The error code of a key the provider binds to another request.
IDEMPOTENCY_ERROR = "idempotency_error"
# Why we cancel an intent: the same on every try of one operation (its key binds its parameters).
VOID_REASON = "abandoned"


@dataclass(frozen=True)
class IntentTruth:
    """What the provider says of one intent. A field it did not say (a charge's event says
    nothing of its intent's status; an intent without its charge expanded, nothing of refunds)
    is None."""

    intent_id: str
    currency: str
    payment_ref: str = ""  # our payment's id, from the intent's metadata
    status: str | None = None
    amount: Decimal | None = None
    captured: Decimal | None = None
    refunded: Decimal | None = None  # money given back (releases of a hold are not refunds)
    cancellation_reason: str = ""
    decline_code: str = ""
    decline_message: str = ""
    authorization_expires_at: datetime | None = None
    card_brand: str = ""
    card_last4: str = ""
    in_review: bool = False

    @property
    def declined(self) -> bool:
        return bool(self.decline_code or self.decline_message)


# A refund's statuses by what they mean for the money: failed after it was made (the card refused
# it, or it was cancelled before it settled), or made: given back (`succeeded`), or on its way and
# not final, until it settles either way (`pending`; `requires_action`, an action awaited from the
# customer; any status Stripe adds). Read as made, a refund not final is counted, and its webhook
# or a later read tells a failure; refused as unreadable, it was a call in doubt every time it was
# read, the same refund refused again until its key's window passed.
REFUND_FAILED = frozenset({"failed", "canceled"})


@dataclass(frozen=True)
class RefundTruth:
    """What the provider says of one refund (a Refund object: a refund's answer or read, or a
    `refund.failed`, `refund.updated` or `charge.refund.updated` delivery)."""

    refund_id: str
    intent_id: str
    currency: str
    amount: Decimal
    status: str
    operation: str = ""  # our operation's key, from the refund's metadata
    failure_reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status in REFUND_FAILED


@dataclass(frozen=True)
class CallResult:
    outcome: CallOutcome
    truth: IntentTruth | None = None
    http_status: int | None = None
    error_code: str = ""
    error: str = ""
    # The provider answered from what it saved under the key (Idempotent-Replayed).
    replayed: bool = False
    # The provider's id of what the call made (an intent, a refund).
    object_id: str = ""
    latency_ms: int | None = None
    # A refund's answer or read: the refund as the provider holds it (made, or failed since).
    refund: RefundTruth | None = None


@dataclass(frozen=True)
class AuthorizeRequest:
    payment_id: str
    booking_reference: str
    amount: Decimal
    currency: str
    payment_method: str


# --- reading answers ---------------------------------------------------------------------------
def _text(value: object, name: str, *, limit: int = 255) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit or not storable(value):
        raise RefusedAmount(f"{name} is not text: {value!r:.80}")
    return value


def _object(value: object, name: str) -> Mapping[str, Any]:
    """A nested object of the provider's answer ({} when absent), refused when it is not one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RefusedAmount(f"{name} is not an object: {value!r:.80}")
    return value


def _timestamp(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**33:
        raise RefusedAmount(f"{name} is not a time: {value!r:.80}")
    return datetime.fromtimestamp(value, tz=UTC)


def _held_as_ours(held: Decimal, amount: Decimal | None) -> None:
    """An intent or charge of our payment holds exactly the payment's amount (we asked for it)."""
    if amount is not None and held != amount:
        raise RefusedAmount(f"it holds {held}, the payment is {amount}")


def _charge_money(
    charge: Mapping[str, Any], currency: str, *, amount: Decimal | None = None
) -> tuple[Decimal, Decimal]:
    """(captured, refunded) of a charge. A hold's release is counted in `amount_refunded` too
    (the rest of a partial capture, a void, a lapse), yet moved no money: refunds are what was
    given back of what was captured. Neither can exceed what was authorized."""
    if not charge.get("captured"):
        return Decimal("0.00"), Decimal("0.00")
    authorized = from_minor(charge.get("amount"), currency)
    _held_as_ours(authorized, amount)
    captured = from_minor(charge.get("amount_captured"), currency)
    released_or_refunded = from_minor(charge.get("amount_refunded"), currency)
    if captured > authorized or released_or_refunded > authorized:
        raise RefusedAmount(
            f"charge captures {captured} and gives back {released_or_refunded} of {authorized} authorized"
        )
    refunded = released_or_refunded - (authorized - captured)
    if refunded < 0:
        raise RefusedAmount(f"charge refunds {released_or_refunded} of {authorized}, {captured} captured")
    return captured, refunded


def intent_truth(data: Mapping[str, Any], currency: str, *, amount: Decimal | None = None) -> IntentTruth:
    """A PaymentIntent as the provider rendered it (its charge expanded or not); refused whole
    (`RefusedAmount`) if any value breaks the protocol, is in another currency, receives more
    than the intent's amount, or (given our payment's `amount`) holds another amount than ours."""
    intent_id = _text(data.get("id"), "id")
    status = _text(data.get("status"), "status")
    if not intent_id.startswith("pi_") or status not in INTENT_STATUSES:
        raise RefusedAmount(f"not a payment intent: {intent_id!r}, {status!r}")
    ours = same_currency(currency, data.get("currency"))
    metadata = _object(data.get("metadata"), "metadata")
    error = _object(data.get("last_payment_error"), "last_payment_error")
    held = from_minor(data.get("amount"), ours)
    _held_as_ours(held, amount)
    received = from_minor(data.get("amount_received"), ours)
    if received > held:
        raise RefusedAmount(f"intent received {received} of {held}")
    fields: dict[str, Any] = {
        "intent_id": intent_id,
        "currency": ours,
        "payment_ref": _text(metadata.get("payment"), "metadata.payment"),
        "status": status,
        "amount": held,
        "captured": received,
        "cancellation_reason": _text(data.get("cancellation_reason"), "cancellation_reason"),
        "decline_code": _text(error.get("decline_code") or error.get("code"), "decline_code"),
        "decline_message": _text(error.get("message"), "decline message", limit=5000)[:500],
    }
    charge = data.get("latest_charge")
    if isinstance(charge, Mapping):
        same_currency(ours, charge.get("currency"))
        _, fields["refunded"] = _charge_money(charge, ours, amount=amount)
        details = _object(charge.get("payment_method_details"), "payment_method_details")
        card = _object(details.get("card"), "card")
        fields["authorization_expires_at"] = _timestamp(card.get("capture_before"), "capture_before")
        fields["card_brand"] = _text(card.get("brand"), "brand")[:20]
        fields["card_last4"] = _text(card.get("last4"), "last4")[:4]
        fields["in_review"] = _object(charge.get("outcome"), "outcome").get("type") == "manual_review"
    return IntentTruth(**fields)


def refund_truth(data: Mapping[str, Any], currency: str) -> RefundTruth:
    """A Refund as the provider rendered it; refused whole (`RefusedAmount`) if it is no refund
    of a payment intent, is in another currency, or has no status. Any status but a failure's
    (`REFUND_FAILED`) is made (final, or on its way)."""
    refund_id = _text(data.get("id"), "refund id")
    intent_id = _text(data.get("payment_intent"), "payment_intent")
    status = _text(data.get("status"), "refund status")
    if not refund_id.startswith("re_") or not intent_id.startswith("pi_"):
        raise RefusedAmount(f"not a refund of a payment intent: {refund_id!r}, {intent_id!r}")
    if not status:
        raise RefusedAmount(f"refund {refund_id} has no status")
    ours = same_currency(currency, data.get("currency"))
    metadata = _object(data.get("metadata"), "metadata")
    return RefundTruth(
        refund_id=refund_id,
        intent_id=intent_id,
        currency=ours,
        amount=from_minor(data.get("amount"), ours),
        status=status,
        operation=_text(metadata.get("operation"), "metadata.operation"),
        failure_reason=_text(data.get("failure_reason"), "failure_reason")[:64],
    )


def charge_truth(data: Mapping[str, Any], currency: str, *, amount: Decimal | None = None) -> IntentTruth:
    """What a Charge says of its intent: the money captured and refunded, nothing of its status;
    refused whole as `intent_truth` is."""
    intent_id = _text(data.get("payment_intent"), "payment_intent")
    if not intent_id.startswith("pi_"):
        raise RefusedAmount(f"charge of no payment intent: {intent_id!r}")
    ours = same_currency(currency, data.get("currency"))
    captured, refunded = _charge_money(data, ours, amount=amount)
    return IntentTruth(intent_id=intent_id, currency=ours, captured=captured, refunded=refunded)


# --- calling ---------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str, timeouts: tuple[float, float]) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=0,  # our operations retry, under their own keys, on the timeline
        http_client=stripe.RequestsClient(timeout=timeouts),
    )


def client() -> stripe.StripeClient:
    return _client(
        settings.STRIPE_API_KEY,
        settings.STRIPE_API_BASE,
        (settings.PAYMENTS_CONNECT_TIMEOUT_S, settings.PAYMENTS_READ_TIMEOUT_S),
    )


# --- reads that may simply be asked again ------------------------------------------------------
# An operation makes one try per call (max_network_retries=0) and is asked again under its key, on
# the timeline. A report's read (the day's settlement listing the provider) changes nothing at the
# provider, so it is asked again at once after a failure another try may not meet: a few tries, a
# short backoff apart, so that a flaky provider does not fail the report.
READ_TRIES = 3
READ_BACKOFF_S = 0.5  # before the second try, doubled before each next


class ReadFailed(RuntimeError):
    """A read that failed on its last try: `error` is that try's, after `tries` tries."""

    def __init__(self, error: stripe.StripeError, tries: int) -> None:
        self.error, self.tries, self.http_status = error, tries, error.http_status
        words = " ".join(str(error).split())[:200]  # one line
        super().__init__(f"{type(error).__name__}: {words}")


def _worth_again(error: stripe.StripeError) -> bool:
    """A read's failure another try may not meet: a 5xx, a timeout or a dropped connection, a
    429. Any other answer (a key refused, a bad request, a 404) would be the same again."""
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    return (error.http_status or 0) >= 500


def read_again(read: Callable[[], T], *, operation: str, tries: int = READ_TRIES) -> T:
    """`read()` (one call of the SDK that changes nothing at the provider), asked again up to
    `tries` times in all while it fails in a way worth another try; `ReadFailed` otherwise.
    Each try is counted as a call of `operation`."""
    for tried in range(1, tries + 1):
        started = time.monotonic()
        try:
            answer = read()
        except stripe.StripeError as error:
            metrics.payment_call(
                operation=operation, outcome=_read_outcome(error), seconds=time.monotonic() - started
            )
            if tried == tries or not _worth_again(error):
                raise ReadFailed(error, tried) from error
            said = " ".join(str(error).split())[:200]
            logger.info("provider read failed (try %d of %d), asking again: %s", tried, tries, said)
            time.sleep(READ_BACKOFF_S * 2 ** (tried - 1))
        else:
            metrics.payment_call(
                operation=operation, outcome=CallOutcome.OK, seconds=time.monotonic() - started
            )
            return answer
    raise AssertionError("unreachable")  # pragma: no cover


def _read_outcome(error: stripe.StripeError) -> CallOutcome:
    """How a failed read ended, as a call's failure is classified (a card's refusal, which no read
    meets, is said as declined without reading the intent it may carry)."""
    if isinstance(error, stripe.CardError):
        return CallOutcome.DECLINED
    return _error_result(error, "").outcome


def _replayed(headers: Mapping[str, str] | None) -> bool:
    return (headers or {}).get("Idempotent-Replayed") == "true"


def _error_result(error: stripe.StripeError, currency: str) -> CallResult:
    status = error.http_status
    code = error.code or getattr(error.error, "code", None) or ""
    message = (error.user_message or str(error))[:500]
    replayed = _replayed(error.headers)
    if isinstance(error, stripe.CardError):
        declined = (error.json_body or {}).get("error", {}).get("payment_intent")
        truth = None
        if isinstance(declined, Mapping):
            try:
                truth = intent_truth(declined, currency)
            except RefusedAmount:
                logger.warning("declined intent refused at the edge", exc_info=True)
        decline = getattr(error.error, "decline_code", None) or code
        return CallResult(CallOutcome.DECLINED, truth, status, decline, message, replayed)
    if isinstance(error, stripe.RateLimitError | stripe.AuthenticationError | stripe.PermissionError):
        # Refused before anything ran (a 429, a key being rotated): the key stays free.
        return CallResult(CallOutcome.TRANSIENT, None, status, code or str(status), message, replayed)
    if isinstance(error, stripe.InvalidRequestError):
        return CallResult(CallOutcome.REFUSED, None, status, code or "invalid_request", message, replayed)
    if isinstance(error, stripe.IdempotencyError):
        # The key is bound to another request: whatever its first request did is not told by
        # asking again (the operation reads instead).
        return CallResult(CallOutcome.AMBIGUOUS, None, status, IDEMPOTENCY_ERROR, message, replayed)
    # A 5xx (before or after the change committed), 409 key in flight, a timeout, a dropped
    # connection: it may have happened.
    return CallResult(CallOutcome.AMBIGUOUS, None, status, code or type(error).__name__, message, replayed)


def _call(
    make: Callable[[], Any], read: Callable[[Any], CallResult], *, currency: str, operation: str
) -> CallResult:
    started = time.monotonic()
    try:
        answer = make()
        result = read(answer)
        result = _with(
            result, replayed=_replayed(answer.last_response.headers if answer.last_response else None)
        )
    except stripe.StripeError as error:
        result = _error_result(error, currency)
    except RefusedAmount as refused:
        # A 2xx we cannot read tells us nothing: as if it had not answered.
        result = CallResult(CallOutcome.AMBIGUOUS, error=f"refused at our edge: {refused}"[:500])
    return _timed(result, operation=operation, started=started)


def _timed(result: CallResult, *, operation: str, started: float) -> CallResult:
    """The call's result with its latency, counted in the provider's call figures."""
    seconds = time.monotonic() - started
    metrics.payment_call(operation=operation, outcome=result.outcome, seconds=seconds)
    return _with(result, latency_ms=int(seconds * 1000))


def _unsendable(refused: RefusedAmount) -> CallResult:
    """An amount that cannot be sent exactly: nothing was asked, and asking again would not
    change that (a step of its own, refused, where an exception would leave it open for ever)."""
    return CallResult(CallOutcome.REFUSED, error=f"not sent: {refused}"[:500], error_code="amount_unsendable")


def _with(result: CallResult, **changes: Any) -> CallResult:
    return replace(result, **changes)


def _intent(currency: str) -> Callable[[Any], CallResult]:
    def read(intent: Any) -> CallResult:
        truth = intent_truth(intent.to_dict(), currency)
        return CallResult(CallOutcome.OK, truth, 200, object_id=truth.intent_id)

    return read


def _options(key: str) -> dict[str, str]:
    return {"idempotency_key": key}


def authorize(request: AuthorizeRequest, *, key: str) -> CallResult:
    """Create and confirm a manual-capture intent: the amount is held, or declined (402)."""
    try:
        minor = charge_minor(request.amount, request.currency)
    except RefusedAmount as refused:
        return _unsendable(refused)
    params = {
        "amount": minor,
        "currency": request.currency.lower(),
        "capture_method": "manual",
        "confirm": True,
        "payment_method": request.payment_method,
        "payment_method_types": ["card"],
        "description": f"Booking {request.booking_reference}",
        "metadata": {"payment": request.payment_id, "booking": request.booking_reference},
        "expand": ["latest_charge"],
    }
    return _call(
        lambda: client().v1.payment_intents.create(params=params, options=_options(key)),
        _intent(request.currency),
        currency=request.currency,
        operation="authorize",
    )


def capture(intent_id: str, *, amount: Decimal, currency: str, key: str) -> CallResult:
    """Take `amount` of the hold (all of it or part: the rest is released)."""
    try:
        params = {"amount_to_capture": to_minor(amount, currency), "expand": ["latest_charge"]}
    except RefusedAmount as refused:
        return _unsendable(refused)
    return _call(
        lambda: client().v1.payment_intents.capture(intent_id, params=params, options=_options(key)),
        _intent(currency),
        currency=currency,
        operation="capture",
    )


def void(intent_id: str, *, currency: str, key: str, reason: str = VOID_REASON) -> CallResult:
    """Cancel the intent: a hold is released, nothing is taken."""
    params = {"cancellation_reason": reason, "expand": ["latest_charge"]}
    return _call(
        lambda: client().v1.payment_intents.cancel(intent_id, params=params, options=_options(key)),
        _intent(currency),
        currency=currency,
        operation="void",
    )


def refund(intent_id: str, *, amount: Decimal, currency: str, key: str) -> CallResult:
    """Give back `amount` of what was captured. The answer is the refund alone: the intent's
    totals come from a `retrieve` after it."""
    try:
        minor = to_minor(amount, currency)
    except RefusedAmount as refused:
        return _unsendable(refused)
    params = {
        "payment_intent": intent_id,
        "amount": minor,
        "reason": "requested_by_customer",
        "metadata": {"operation": key},
    }

    return _call(
        lambda: client().v1.refunds.create(params=params, options=_options(key)),
        lambda answer: _refund_made(answer.to_dict(), amount=amount, currency=currency),
        currency=currency,
        operation="refund",
    )


def _refund_made(made: Mapping[str, Any], *, amount: Decimal, currency: str) -> CallResult:
    """A refund as the provider rendered it: OK only if it is the amount asked for, with its
    status (made: succeeded or pending; or failed since it was made, read later)."""
    refund = refund_truth(made, currency)
    if refund.amount != amount:
        raise RefusedAmount(f"refund {refund.refund_id} is not the {amount} {currency} asked for")
    return CallResult(CallOutcome.OK, None, 200, object_id=refund.refund_id, refund=refund)


def find_refund(intent_id: str, *, amount: Decimal, currency: str, key: str) -> CallResult:
    """The refund our operation `key` made of the intent (its metadata names the operation): OK
    with its id, OK without one when the provider holds none, or how the read failed. For a
    refund whose only answer was a 5xx saved under its key."""

    def search() -> Any:
        after = None
        while True:
            params: dict[str, Any] = {"payment_intent": intent_id, "limit": SEARCH_PAGE}
            if after:
                params["starting_after"] = after
            page = client().v1.refunds.list(params=params)
            for made in page.data:
                if (made.to_dict().get("metadata") or {}).get("operation") == key:
                    return made
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id

    def read(found: Any) -> CallResult:
        if found is None:
            return CallResult(CallOutcome.OK, None, 200)
        return _refund_made(found.to_dict(), amount=amount, currency=currency)

    return _search(search, read, currency=currency, operation="find_refund")


def retrieve(intent_id: str, *, currency: str) -> CallResult:
    return _call(
        lambda: client().v1.payment_intents.retrieve(intent_id, params={"expand": ["latest_charge"]}),
        _intent(currency),
        currency=currency,
        operation="retrieve",
    )


def find_authorization(payment_id: str, *, currency: str, since: datetime) -> CallResult:
    """The intent made for our payment since `since` (its metadata names the payment), newest
    first through the list: OK with its truth, OK without one when there is none, or how the
    read failed. For an authorization whose only answer was a 5xx saved under its key."""
    created = {"gte": int(since.timestamp()) - SEARCH_MARGIN_S}

    def search() -> Any:
        after = None
        while True:
            params: dict[str, Any] = {
                "created": created,
                "limit": SEARCH_PAGE,
                "expand": ["data.latest_charge"],
            }
            if after:
                params["starting_after"] = after
            page = client().v1.payment_intents.list(params=params)
            for intent in page.data:
                if (intent.to_dict().get("metadata") or {}).get("payment") == payment_id:
                    return intent
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id

    def read(found: Any) -> CallResult:
        if found is None:
            return CallResult(CallOutcome.OK, None, 200)
        return _intent(currency)(found)

    return _search(search, read, currency=currency, operation="find_authorization")


def _search(
    search: Callable[[], Any], read: Callable[[Any], CallResult], *, currency: str, operation: str
) -> CallResult:
    """A read of several pages, classified (and counted) as one call."""
    started = time.monotonic()
    try:
        result = read(search())
    except stripe.StripeError as error:
        result = _error_result(error, currency)
    except RefusedAmount as refused:
        result = CallResult(CallOutcome.AMBIGUOUS, error=f"refused at our edge: {refused}"[:500])
    return _timed(result, operation=operation, started=started)


# --- webhooks ----------------------------------------------------------------------------------
class UnverifiedEvent(ValueError):
    """A delivery whose Stripe-Signature does not verify, or was made too long ago or ahead."""


class StaleEvent(UnverifiedEvent):
    """A delivery whose Stripe-Signature verifies but was made more than the tolerance before or
    after our clock: a replay, or clocks apart. Said apart from a bad signature, so that ops can
    tell skew from a wrong STRIPE_WEBHOOK_SECRET."""


class MalformedEvent(ValueError):
    """A delivery whose signature verifies, but that is not an event we can store: not a JSON
    object, or an `id` or `type` that is not short text (ids are never cut: two events whose ids
    share a prefix must not become one)."""


# How far from our clock a delivery's signature may have been made, either way (the SDK's 300 s).
WEBHOOK_TOLERANCE_S = stripe.Webhook.DEFAULT_TOLERANCE
# The longest event id and type we store (PaymentEvent's columns).
EVENT_ID_CHARS = 255
EVENT_TYPE_CHARS = 64


def verify_event(body: bytes, signature: str) -> dict[str, Any]:
    """The event, if its signature verifies over the raw body with our endpoint secret and was
    made within the SDK's tolerance (300 s) of now, either way; else `UnverifiedEvent`, or
    `MalformedEvent` for a verified body that is no event."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise UnverifiedEvent("no webhook secret is configured")
    tolerance = WEBHOOK_TOLERANCE_S
    if not _utf8(body):
        # The SDK decodes the body as UTF-8 before it signs it, and would call this a bad
        # signature; the scheme signs the bytes, so whether the signature verifies is ours to say.
        if _verifies_over_bytes(body, signature, secret, tolerance):
            raise MalformedEvent("not UTF-8 text")
        raise UnverifiedEvent("the signature does not verify over the body")
    try:
        # The SDK's own check of the scheme, the signature only (no tolerance): when it was made
        # is ours to judge, both ways, and to say apart. The body is then read as plain JSON (its
        # event object tree, built and flattened again for every delivery, told us nothing more).
        stripe.WebhookSignature.verify_header(body, signature, secret, tolerance=None)
    except (stripe.SignatureVerificationError, ValueError) as error:
        raise UnverifiedEvent(str(error)[:300]) from error
    skew = _signed_at(signature) - int(time.time())  # whole seconds: a t= of 400 digits is no float
    if abs(skew) > tolerance:
        apart = f"{abs(skew)} s" if abs(skew) < 10**12 else "more than 10^12 s"
        raise StaleEvent(f"made {apart} {'ahead of' if skew > 0 else 'before'} our clock")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise MalformedEvent(f"not JSON: {str(error)[:200]}") from error
    if not isinstance(data, dict):
        raise MalformedEvent("not a JSON object")
    for name, limit in (("id", EVENT_ID_CHARS), ("type", EVENT_TYPE_CHARS)):
        value = data.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= limit or not storable(value):
            raise MalformedEvent(f"its {name} is not text of 1 to {limit} characters")
    return data


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _verifies_over_bytes(body: bytes, signature: str, secret: str, tolerance: int) -> bool:
    """Stripe's scheme over the raw bytes (`t=<seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
    keyed with the secret as UTF-8), for a body the SDK cannot take: signed within the tolerance
    either way of now, by one of the `v1` signatures."""
    items = [item.split("=", 1) for item in signature.split(",")]
    stamps = [item[1] for item in items if len(item) == 2 and item[0] == "t"]
    if not stamps or not stamps[0].isascii() or not stamps[0].isdigit():
        return False
    if abs(int(stamps[0]) - time.time()) > tolerance:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, item[1]) for item in items if len(item) == 2 and item[0] == "v1")


def _signed_at(signature: str) -> int:
    """The `t=` of a Stripe-Signature that verified, read as the SDK reads it (so it is there,
    and a number)."""
    items = [item.split("=", 2) for item in signature.split(",")]
    return int(next(item[1] for item in items if item[0] == "t"))
