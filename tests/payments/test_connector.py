"""The connector against a real payment provider process (the sandbox's `payments` profile),
through the pinned official SDK: every call's answer read at the edge, every way a call can end
classified once (ok, declined, refused, transient, ambiguous), amounts in minor units on the
wire and Decimal here, another currency refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import stripe

from payments import connector
from payments.connector import AuthorizeRequest, UnverifiedEvent
from payments.models import CallOutcome
from payments.money import RefusedAmount
from tests.helpers import wait_until
from tests.payments.conftest import WEBHOOK_SECRET, seed_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
EUR = "EUR"


def request(method: str = "pm_card_visa", amount: str = "360.00", currency: str = EUR) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=str(uuid.uuid4()),
        booking_reference="BK-TEST42",
        amount=Decimal(amount),
        currency=currency,
        payment_method=method,
    )


def key() -> str:
    return f"{uuid.uuid4()}:authorize:1"


def authorized(provider, amount: str = "360.00"):
    made = request(amount=amount)
    result = connector.authorize(made, key=key())
    assert result.outcome == CallOutcome.OK, result
    return made, result.truth


# --- authorize -----------------------------------------------------------------------------------
def test_authorize_holds_the_amount_and_reads_the_card_and_lapse_time(provider):
    made = request()

    result = connector.authorize(made, key=key())

    truth = result.truth
    assert (result.outcome, result.http_status, result.replayed) == (CallOutcome.OK, 200, False)
    assert result.object_id == truth.intent_id and truth.intent_id.startswith("pi_")
    assert (truth.status, truth.amount, truth.captured, truth.refunded) == (
        "requires_capture",
        Decimal("360.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    assert (truth.currency, truth.payment_ref, truth.card_brand, truth.card_last4) == (
        EUR,
        made.payment_id,
        "visa",
        "4242",
    )
    lapse = truth.authorization_expires_at - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < lapse <= timedelta(days=7)
    [held] = provider.intents()
    assert (held["amount"], held["currency"], held["capture_method"]) == (36000, "eur", "manual")
    assert held["metadata"] == {"payment": made.payment_id, "booking": "BK-TEST42"}


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_a_declined_card_is_declined_with_its_code_and_the_intent(provider, method, code):
    result = connector.authorize(request(method), key=key())

    assert (result.outcome, result.http_status, result.error_code) == (CallOutcome.DECLINED, 402, code)
    assert result.truth.status == "requires_payment_method" and result.truth.declined
    assert result.truth.decline_code == code


def test_a_card_placed_in_review_is_authorized_and_flagged(provider):
    result = connector.authorize(request("pm_card_riskLevelElevated"), key=key())

    assert (result.outcome, result.truth.status, result.truth.in_review) == (
        CallOutcome.OK,
        "requires_capture",
        True,
    )


def test_an_unknown_payment_method_is_refused_and_nothing_is_made(provider):
    result = connector.authorize(request("pm_card_doesNotExist"), key=key())

    assert (result.outcome, result.http_status, result.error_code) == (
        CallOutcome.REFUSED,
        400,
        "resource_missing",
    )
    assert provider.intents() == []


def test_amounts_cross_the_edge_in_the_currencys_minor_units(provider):
    result = connector.authorize(request(amount="1500", currency="JPY"), key=key())

    assert result.truth.amount == Decimal("1500.00")
    assert provider.intents()[0]["amount"] == 1500  # yen have no minor unit


# --- capture, void, refund, retrieve --------------------------------------------------------------
def test_a_partial_capture_takes_part_and_releases_the_rest_which_is_no_refund(provider):
    _, truth = authorized(provider, "100.00")

    result = connector.capture(truth.intent_id, amount=Decimal("60.00"), currency=EUR, key=key())

    assert (result.outcome, result.truth.status) == (CallOutcome.OK, "succeeded")
    assert (result.truth.captured, result.truth.refunded) == (Decimal("60.00"), Decimal("0.00"))
    assert result.truth.authorization_expires_at is None


def test_void_releases_the_hold(provider):
    _, truth = authorized(provider)

    result = connector.void(truth.intent_id, currency=EUR, key=key())

    assert (result.outcome, result.truth.status, result.truth.cancellation_reason) == (
        CallOutcome.OK,
        "canceled",
        "abandoned",
    )
    assert (result.truth.captured, result.truth.refunded) == (Decimal("0.00"), Decimal("0.00"))


def test_a_refund_answers_the_refund_and_a_read_tells_the_totals(provider):
    _, truth = authorized(provider, "100.00")
    connector.capture(truth.intent_id, amount=Decimal("100.00"), currency=EUR, key=key())
    refund_key = f"{uuid.uuid4()}:refund:1"

    result = connector.refund(truth.intent_id, amount=Decimal("30.00"), currency=EUR, key=refund_key)
    read = connector.retrieve(truth.intent_id, currency=EUR)
    found = connector.find_refund(truth.intent_id, amount=Decimal("30.00"), currency=EUR, key=refund_key)

    assert (result.outcome, result.truth) == (CallOutcome.OK, None)
    assert result.object_id.startswith("re_") and found.object_id == result.object_id
    assert (read.truth.captured, read.truth.refunded) == (Decimal("100.00"), Decimal("30.00"))
    [made] = provider.refunds(truth.intent_id)
    assert (made["amount"], made["metadata"]) == (3000, {"operation": refund_key})


def test_a_refund_the_card_refuses_later_is_read_as_made_then_failed(provider):
    made = request("pm_card_refundFail", amount="100.00")
    truth = connector.authorize(made, key=key()).truth
    connector.capture(truth.intent_id, amount=Decimal("100.00"), currency=EUR, key=key())
    provider.set_faults(time_scale=30)  # the refund fails one second on
    refund_key = f"{uuid.uuid4()}:refund:1"

    result = connector.refund(truth.intent_id, amount=Decimal("100.00"), currency=EUR, key=refund_key)
    assert (result.outcome, result.refund.status, result.refund.failed) == (
        CallOutcome.OK,
        "succeeded",
        False,
    )
    assert (result.refund.refund_id, result.refund.operation) == (result.object_id, refund_key)
    found = wait_until(
        lambda: (
            (
                r := connector.find_refund(
                    truth.intent_id, amount=Decimal("100.00"), currency=EUR, key=refund_key
                )
            ).refund.failed
            and r
        ),
        what="the refund to fail",
    )
    replayed = connector.refund(truth.intent_id, amount=Decimal("100.00"), currency=EUR, key=refund_key)
    read = connector.retrieve(truth.intent_id, currency=EUR)

    # a read says it failed, and why; the key replays the answer it gave (Stripe's rule)
    assert (found.outcome, found.object_id) == (CallOutcome.OK, result.object_id)
    assert (found.refund.status, found.refund.failure_reason) == ("failed", "expired_or_canceled_card")
    assert (replayed.replayed, replayed.refund.status) == (True, "succeeded")
    assert (read.truth.captured, read.truth.refunded) == (Decimal("100.00"), Decimal("0.00"))


def refund_rendered(status: str, **extra) -> dict:
    """A Refund of 30.00 EUR as the provider renders one, in `status`."""
    return {
        "id": "re_" + "A" * 24,
        "object": "refund",
        "payment_intent": "pi_" + "B" * 24,
        "amount": 3000,
        "currency": "eur",
        "status": status,
        "metadata": {"operation": "p:refund:1"},
        **extra,
    }


@pytest.mark.parametrize("status", ["succeeded", "pending", "requires_action", "a_status_stripe_adds"])
def test_a_refund_in_any_status_but_a_failure_s_is_read_as_made(status):
    """Review: a status outside succeeded, pending, failed and canceled (Stripe's own
    `requires_action`) was refused at the edge: the refund's call was ambiguous, and every read of
    it (`find_refund`) refused the same refund again, until the key's window passed. Made and not
    final, it is counted; its webhook or a later read tells a failure."""
    result = connector._refund_made(refund_rendered(status), amount=Decimal("30.00"), currency=EUR)

    assert (result.outcome, result.object_id) == (CallOutcome.OK, "re_" + "A" * 24)
    assert (result.refund.status, result.refund.failed, result.refund.operation) == (
        status,
        False,
        "p:refund:1",
    )


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_a_refund_failed_or_cancelled_is_read_as_failed(status):
    refund = connector.refund_truth(refund_rendered(status, failure_reason="declined"), EUR)

    assert (refund.failed, refund.failure_reason) == (True, "declined")


@pytest.mark.parametrize("status", [None, "", 7])
def test_a_refund_without_a_status_is_refused_whole(status):
    with pytest.raises(RefusedAmount):
        connector.refund_truth(refund_rendered(status), EUR)


def test_a_capture_the_intents_state_forbids_is_refused(provider):
    _, truth = authorized(provider)
    connector.void(truth.intent_id, currency=EUR, key=key())

    result = connector.capture(truth.intent_id, amount=Decimal("360.00"), currency=EUR, key=key())

    assert (result.outcome, result.error_code) == (CallOutcome.REFUSED, "payment_intent_unexpected_state")


def test_find_authorization_finds_our_payments_intent_by_its_metadata_or_nothing(provider):
    made, truth = authorized(provider)
    authorized(provider)  # another payment's
    since = datetime.now(UTC) - timedelta(minutes=1)

    found = connector.find_authorization(made.payment_id, currency=EUR, since=since)
    missing = connector.find_authorization(str(uuid.uuid4()), currency=EUR, since=since)

    assert (found.outcome, found.truth.intent_id) == (CallOutcome.OK, truth.intent_id)
    assert (missing.outcome, missing.truth) == (CallOutcome.OK, None)


# --- what the edge refuses -------------------------------------------------------------------------
def test_an_answer_in_another_currency_is_refused_whole(provider):
    _, truth = authorized(provider)

    result = connector.retrieve(truth.intent_id, currency="USD")

    assert (result.outcome, result.truth) == (CallOutcome.AMBIGUOUS, None)
    assert "currency 'eur' is not the payment's USD" in result.error


def test_an_amount_finer_than_the_currency_is_refused_before_any_call(provider):
    result = connector.authorize(request(amount="10.005"), key=key())
    assert result.outcome == CallOutcome.REFUSED
    assert provider.intents() == []


# --- faults ----------------------------------------------------------------------------------------
def test_a_timeout_after_commit_is_ambiguous_and_the_same_key_replays_the_hold(provider):
    provider.set_faults(timeout_after_commit_rate=1)
    made, same_key = request(), key()

    first = connector.authorize(made, key=same_key)
    provider.set_faults(timeout_after_commit_rate=0)
    again = connector.authorize(made, key=same_key)

    assert (first.outcome, first.http_status) == (CallOutcome.AMBIGUOUS, None)
    assert (again.outcome, again.replayed, again.truth.status) == (CallOutcome.OK, True, "requires_capture")
    assert [i["id"] for i in provider.intents()] == [again.truth.intent_id]


@pytest.mark.parametrize("after_commit", [True, False], ids=["after-commit", "before-commit"])
def test_a_5xx_is_ambiguous_and_only_one_after_commit_is_replayed(provider, after_commit):
    provider.set_faults(error_5xx_rate=1, seed=seed_for(after_commit=after_commit))
    made, same_key = request(), key()

    first = connector.authorize(made, key=same_key)
    provider.set_faults(error_5xx_rate=0)
    again = connector.authorize(made, key=same_key)

    assert first.outcome == CallOutcome.AMBIGUOUS and first.http_status >= 500
    if after_commit:  # made, and its 500 saved under the key: only a read tells
        assert (again.outcome, again.http_status, again.replayed) == (CallOutcome.AMBIGUOUS, 500, True)
        since = datetime.now(UTC) - timedelta(minutes=1)
        found = connector.find_authorization(made.payment_id, currency=EUR, since=since)
        assert found.truth.status == "requires_capture"
    else:  # nothing ran: the key was free, the second call made it
        assert (again.outcome, again.replayed) == (CallOutcome.OK, False)
    assert len(provider.intents()) == 1


def test_a_429_did_nothing_and_is_transient(provider):
    provider.set_faults(rate_limit_rate=1)

    result = connector.authorize(request(), key=key())

    assert (result.outcome, result.http_status, result.error_code) == (
        CallOutcome.TRANSIENT,
        429,
        "rate_limit",
    )
    assert provider.intents() == []


def test_the_same_key_with_other_parameters_is_ambiguous_not_a_refusal(provider):
    same_key = key()
    connector.authorize(request(amount="10.00"), key=same_key)

    result = connector.authorize(request(amount="20.00"), key=same_key)

    assert (result.outcome, result.error_code) == (CallOutcome.AMBIGUOUS, connector.IDEMPOTENCY_ERROR)


def test_a_provider_that_cannot_be_reached_is_ambiguous(settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens
    settings.PAYMENTS_CONNECT_TIMEOUT_S = 0.5

    result = connector.authorize(request(), key=key())

    assert (result.outcome, result.http_status) == (CallOutcome.AMBIGUOUS, None)
    connector._client.cache_clear()


# --- webhooks --------------------------------------------------------------------------------------
def _signed(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    at = at or int(datetime.now(UTC).timestamp())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{body.decode()}", secret)
    return f"t={at},v1={signature}"


def test_a_webhook_signed_with_our_endpoint_secret_verifies(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    body = b'{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {}}}'

    event = connector.verify_event(body, _signed(body))

    assert (event["id"], event["type"]) == ("evt_1", "payment_intent.succeeded")


@pytest.mark.parametrize(
    "tamper",
    ["other secret", "old", "changed body", "no header", "garbage header"],
)
def test_a_webhook_not_signed_by_the_provider_now_is_refused(settings, tamper):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    body = b'{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {}}}'
    header = {
        "other secret": _signed(body, secret="whsec_someone_else"),
        "old": _signed(body, at=int(datetime.now(UTC).timestamp()) - 3600),
        "changed body": _signed(body.replace(b"evt_1", b"evt_2")),
        "no header": "",
        "garbage header": "t=abc,v1=",
    }[tamper]

    with pytest.raises(UnverifiedEvent):
        connector.verify_event(body, header)


@pytest.mark.parametrize(
    "call",
    [
        lambda: connector.capture("pi_any", amount=Decimal("0.001"), currency="EUR", key="k-capture"),
        lambda: connector.refund("pi_any", amount=Decimal("1000000.00"), currency="EUR", key="k-refund"),
        lambda: connector.authorize(
            connector.AuthorizeRequest("p", "BK-1", Decimal("12.5"), "JPY", "pm_card_visa"), key="k-auth"
        ),
        lambda: connector.authorize(
            connector.AuthorizeRequest("p", "BK-1", Decimal("0.30"), "EUR", "pm_card_visa"), key="k-least"
        ),
    ],
    ids=[
        "capture-finer-than-the-unit",
        "refund-beyond-one-payment",
        "authorize-yen-fraction",
        "authorize-below-the-minimum-charge",
    ],
)
def test_an_amount_that_cannot_be_sent_is_refused_without_a_call(call, provider):
    """Review: the amount was converted before the call's guard, so the exception escaped the
    run with its operation committed open: fenced for ever, every run raising again."""
    calls = provider.stats()["calls"]

    result = call()

    assert (result.outcome, result.error_code, result.http_status) == (
        CallOutcome.REFUSED,
        "amount_unsendable",
        None,
    )
    assert provider.stats()["calls"] == calls
