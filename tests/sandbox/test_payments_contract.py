"""The `payments` profile speaks Stripe's API well enough for the unmodified official SDK: each test
drives a real sandbox process with `stripe.StripeClient` pointed at it (plain http), and reads
the provider's own truth from `/_sandbox/ground_truth`. Webhooks are verified with
`stripe.Webhook.construct_event` and the endpoint secret."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe

from tests.helpers import wait_until
from tests.sandbox.conftest import Hook, WebhookReceiver
from tests.sandbox_process import PERFECT_FAULTS, SandboxProcess

API_KEY = "sk_test_sandbox0payments0key"
WHSEC = "whsec_sandbox0payments0test0secret0123"
SEVEN_DAYS_S = 7 * 24 * 3600
INTENT_FIELDS = {
    "id",
    "object",
    "amount",
    "amount_capturable",
    "amount_received",
    "automatic_payment_methods",
    "canceled_at",
    "cancellation_reason",
    "capture_method",
    "client_secret",
    "confirmation_method",
    "created",
    "currency",
    "customer",
    "description",
    "last_payment_error",
    "latest_charge",
    "livemode",
    "metadata",
    "next_action",
    "payment_method",
    "payment_method_types",
    "status",
}


# --- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stripe_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def provider_process(
    tmp_path_factory: pytest.TempPathFactory, stripe_receiver: WebhookReceiver
) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("payments") / "provider.sqlite3"
    # --hang-s 2: a timeout after commit holds the answer 2 s, then drops the connection.
    process = SandboxProcess(
        "payments",
        store,
        API_KEY,
        ["--webhook-url", stripe_receiver.url, "--webhook-secret", WHSEC, "--hang-s", "2"],
    ).start()
    yield process
    process.kill()


@pytest.fixture
def receiver(stripe_receiver: WebhookReceiver) -> WebhookReceiver:
    stripe_receiver.reset()
    return stripe_receiver


@pytest.fixture
def provider(provider_process: SandboxProcess, receiver: WebhookReceiver) -> SandboxProcess:
    provider_process.set_faults(**PERFECT_FAULTS, seed=1234)
    provider_process.control("POST", "reset")
    receiver.reset()  # nothing the sender was still delivering from the previous test
    return provider_process


def client_for(provider: SandboxProcess, *, retries: int = 0, timeout_s: float = 10.0) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY,
        base_addresses={"api": provider.base_url},
        max_network_retries=retries,
        http_client=stripe.RequestsClient(timeout=timeout_s),
    )


@pytest.fixture
def client(provider: SandboxProcess) -> stripe.StripeClient:
    return client_for(provider)


def booking_ref() -> str:
    return f"BK-{uuid.uuid4().hex[:8].upper()}"


def authorize(
    client: stripe.StripeClient,
    card: str = "pm_card_visa",
    *,
    amount: int = 12_000,
    key: str | None = None,
    **extra: Any,
) -> stripe.PaymentIntent:
    """Create and confirm a manual-capture intent, as the connector authorizes."""
    params = {
        "amount": amount,
        "currency": "eur",
        "capture_method": "manual",
        "confirm": True,
        "payment_method": card,
        "payment_method_types": ["card"],
        "metadata": {"booking": "BK-1"},
        **extra,
    }
    return client.v1.payment_intents.create(params=params, options={"idempotency_key": key} if key else None)


def events(receiver: WebhookReceiver, intent_id: str) -> list[tuple[Hook, stripe.Event]]:
    """Every verified Stripe event about the intent or its charge, in arrival order."""
    with receiver.lock:
        hooks = list(receiver.hooks)
    verified = [
        (h, stripe.Webhook.construct_event(h.body, h.headers["stripe-signature"], WHSEC)) for h in hooks
    ]
    return [(h, e) for h, e in verified if intent_of(e.data.object.to_dict()) == intent_id]


def intent_of(obj: dict[str, Any]) -> str:
    """An event's intent: its object, or the intent the charge belongs to."""
    return obj["id"] if obj["object"] == "payment_intent" else obj["payment_intent"]


def wait_events(receiver: WebhookReceiver, intent_id: str, count: int, timeout_s: float = 10.0):
    return wait_until(
        lambda: len(found := events(receiver, intent_id)) >= count and found,
        timeout_s=timeout_s,
        what=f"{count} webhook(s) about {intent_id}",
    )


def types(found: list[tuple[Hook, stripe.Event]]) -> list[str]:
    return [e.type for _, e in found]


def truth_of(provider: SandboxProcess, intent_id: str) -> dict[str, Any]:
    return provider.payments(intent_id)


# --- authorize, capture, cancel ----------------------------------------------------------------
def test_authorizing_with_manual_capture_holds_the_amount(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    before = int(time.time())

    intent = authorize(client, amount=12_345, description="stay BK-1")

    assert set(intent.to_dict()) == INTENT_FIELDS
    assert intent.id.startswith("pi_") and intent.client_secret.startswith(f"{intent.id}_secret_")
    assert (intent.status, intent.capture_method, intent.currency) == ("requires_capture", "manual", "eur")
    assert (intent.amount, intent.amount_capturable, intent.amount_received) == (12_345, 12_345, 0)
    assert intent.payment_method.startswith("pm_") and intent.latest_charge.startswith("ch_")
    assert intent.last_payment_error is None and intent.livemode is False
    assert before <= intent.created <= int(time.time())
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.status, charge.paid, charge.captured) == ("succeeded", True, False)
    assert (charge.amount, charge.amount_captured, charge.amount_refunded) == (12_345, 0, 0)
    assert charge.balance_transaction is None  # nothing moved yet
    assert charge.outcome.type == "authorized"
    card = charge.payment_method_details.card
    assert (card.brand, card.last4) == ("visa", "4242")
    assert abs(card.capture_before - (intent.created + SEVEN_DAYS_S)) <= 2
    [(_, event)] = wait_events(receiver, intent.id, 1)
    assert event.type == "payment_intent.amount_capturable_updated"
    assert event.data.object.to_dict() == intent.to_dict()


def test_a_full_capture_takes_the_whole_authorization(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    intent = authorize(client)

    captured = client.v1.payment_intents.capture(intent.id)

    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 12_000, 0)
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.captured, charge.amount_captured, charge.amount_refunded) == (True, 12_000, 0)
    assert charge.balance_transaction.startswith("txn_")
    assert charge.payment_method_details.card.capture_before is None
    found = wait_events(receiver, intent.id, 2)
    assert types(found) == ["payment_intent.amount_capturable_updated", "payment_intent.succeeded"]
    assert found[1][1].data.object.to_dict() == captured.to_dict()
    assert client.v1.refunds.list(params={"payment_intent": intent.id}).data == []


def test_a_partial_capture_releases_the_rest_as_a_refund_that_moves_no_money(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    intent = authorize(client, amount=10_000)

    captured = client.v1.payment_intents.capture(
        intent.id, params={"amount_to_capture": 6_000, "expand": ["latest_charge"]}
    )

    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 6_000, 0)
    charge = captured.latest_charge  # expanded
    assert (charge.amount, charge.amount_captured, charge.amount_refunded, charge.refunded) == (
        10_000,
        6_000,
        4_000,
        False,
    )
    [release] = client.v1.refunds.list(params={"payment_intent": intent.id}).data
    assert (release.amount, release.status, release.balance_transaction) == (4_000, "succeeded", None)
    found = wait_events(receiver, intent.id, 3)
    assert types(found) == [
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "charge.refunded",
    ]
    assert found[2][1].data.object.amount_refunded == 4_000


def test_capturing_more_than_is_held_or_twice_is_refused(client: stripe.StripeClient) -> None:
    intent = authorize(client, amount=5_000)

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.payment_intents.capture(intent.id, params={"amount_to_capture": 5_001})
    client.v1.payment_intents.capture(intent.id)
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.payment_intents.capture(intent.id)

    assert (too_much.value.http_status, too_much.value.code, too_much.value.param) == (
        400,
        "amount_too_large",
        "amount_to_capture",
    )
    assert (twice.value.http_status, twice.value.code) == (400, "payment_intent_unexpected_state")
    assert "status of succeeded" in twice.value.user_message


def test_cancelling_voids_the_authorization(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    intent = authorize(client, amount=8_000)

    cancelled = client.v1.payment_intents.cancel(
        intent.id, params={"cancellation_reason": "requested_by_customer"}
    )

    assert (cancelled.status, cancelled.cancellation_reason, cancelled.amount_capturable) == (
        "canceled",
        "requested_by_customer",
        0,
    )
    assert cancelled.canceled_at >= intent.created
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.captured, charge.amount_refunded, charge.refunded) == (False, 8_000, True)
    [release] = client.v1.refunds.list(params={"charge": charge.id}).data
    assert (release.amount, release.reason, release.balance_transaction) == (8_000, None, None)
    found = wait_events(receiver, intent.id, 3)
    assert types(found) == [
        "payment_intent.amount_capturable_updated",
        "charge.refunded",
        "payment_intent.canceled",
    ]
    with pytest.raises(stripe.InvalidRequestError) as capture_after:
        client.v1.payment_intents.capture(intent.id)
    assert capture_after.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as cancel_again:
        client.v1.payment_intents.cancel(intent.id)
    assert "status of canceled" in cancel_again.value.user_message


def test_a_cancel_refused_by_the_fault_changes_nothing_until_it_is_set_back(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    """`void_refused_rate`: a cancel (the release of a hold) refused whole, `400
    payment_intent_unexpected_state`; the hold stays as it was, nothing is released and no event
    is sent, so asking again once the fault is off releases it."""
    intent = authorize(client, amount=8_000)
    wait_events(receiver, intent.id, 1)
    provider.set_faults(void_refused_rate=1)

    for _ in range(2):  # each ask rolls again: at 1, every one is refused
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.payment_intents.cancel(intent.id)
        assert (refused.value.http_status, refused.value.code) == (400, "payment_intent_unexpected_state")

    held = client.v1.payment_intents.retrieve(intent.id)
    assert (held.status, held.amount_capturable, held.canceled_at) == ("requires_capture", 8_000, None)
    assert truth_of(provider, intent.id)["refunds"] == []
    assert client.v1.charges.retrieve(intent.latest_charge).amount_refunded == 0
    time.sleep(0.3)
    assert types(events(receiver, intent.id)) == ["payment_intent.amount_capturable_updated"]
    provider.set_faults(void_refused_rate=0)
    assert client.v1.payment_intents.cancel(intent.id).status == "canceled"


def test_an_intent_confirmed_later_and_after_a_decline(client: stripe.StripeClient) -> None:
    intent = client.v1.payment_intents.create(
        params={
            "amount": 3_000,
            "currency": "EUR",
            "capture_method": "manual",
            "payment_method_types": ["card"],
        }
    )
    assert (intent.status, intent.currency, intent.latest_charge) == ("requires_payment_method", "eur", None)

    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_chargeDeclined"})
    with pytest.raises(stripe.InvalidRequestError) as detached:  # the declined method is not kept
        client.v1.payment_intents.confirm(intent.id)
    confirmed = client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_mastercard"})

    assert (confirmed.status, confirmed.amount_capturable, confirmed.last_payment_error) == (
        "requires_capture",
        3_000,
        None,
    )
    charges = client.v1.charges.list(params={"payment_intent": intent.id}).data
    assert [c.status for c in charges] == ["succeeded", "failed"]  # newest first
    assert charges[0].id == confirmed.latest_charge
    assert charges[0].payment_method_details.card.brand == "mastercard"
    assert detached.value.code == "payment_intent_unexpected_state"


def test_automatic_capture_succeeds_at_once(client: stripe.StripeClient) -> None:
    intent = authorize(client, capture_method="automatic")

    assert (intent.status, intent.amount_received, intent.amount_capturable) == ("succeeded", 12_000, 0)
    assert client.v1.charges.retrieve(intent.latest_charge).captured is True


# --- refunds ----------------------------------------------------------------------------------
def test_refunds_partial_then_full_then_none_left(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    intent = authorize(client, amount=10_000)
    client.v1.payment_intents.capture(intent.id)

    partial = client.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 3_000, "reason": "requested_by_customer"}
    )
    rest = client.v1.refunds.create(
        params={"payment_intent": intent.id, "metadata": {"why": "cancelled stay"}}
    )
    with pytest.raises(stripe.InvalidRequestError) as none_left:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1})

    assert partial.id.startswith("re_") and partial.object == "refund"
    assert (partial.amount, partial.status, partial.reason, partial.charge) == (
        3_000,
        "succeeded",
        "requested_by_customer",
        intent.latest_charge,
    )
    assert partial.balance_transaction.startswith("txn_")
    assert (rest.amount, rest.metadata.to_dict()) == (7_000, {"why": "cancelled stay"})
    assert none_left.value.code == "charge_already_refunded"
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (10_000, True)
    assert client.v1.refunds.retrieve(partial.id).to_dict() == partial.to_dict()
    listed = client.v1.refunds.list(params={"payment_intent": intent.id}).data
    assert [r.id for r in listed] == [rest.id, partial.id]
    refunded = [e for _, e in wait_events(receiver, intent.id, 4) if e.type == "charge.refunded"]
    assert [e.data.object.amount_refunded for e in refunded] == [3_000, 10_000]


def test_a_refund_beyond_the_captured_amount_or_of_a_hold_is_refused(client: stripe.StripeClient) -> None:
    intent = authorize(client, amount=10_000)
    with pytest.raises(stripe.InvalidRequestError) as uncaptured:
        client.v1.refunds.create(params={"payment_intent": intent.id})
    client.v1.payment_intents.capture(intent.id, params={"amount_to_capture": 4_000})

    with pytest.raises(stripe.InvalidRequestError) as beyond:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 4_001})

    assert (uncaptured.value.http_status, uncaptured.value.code) == (400, "charge_not_refundable")
    assert (beyond.value.code, beyond.value.param) == ("amount_too_large", "amount")
    assert client.v1.refunds.create(params={"payment_intent": intent.id}).amount == 4_000


def test_a_refund_refused_by_the_fault_makes_nothing_until_it_is_set_back(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    """`refund_refused_rate`: a refund refused whole, as Stripe refuses one of a charge it will not
    refund; nothing is made, so asking again once the fault is off makes it."""
    intent = authorize(client, amount=10_000)
    client.v1.payment_intents.capture(intent.id)
    provider.set_faults(refund_refused_rate=1)

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": intent.id})

    assert (refused.value.http_status, refused.value.code) == (400, "charge_not_refundable")
    assert client.v1.charges.retrieve(intent.latest_charge).amount_refunded == 0
    assert truth_of(provider, intent.id)["refunds"] == []
    provider.set_faults(refund_refused_rate=0)
    assert client.v1.refunds.create(params={"payment_intent": intent.id}).status == "succeeded"


# --- declines and test cards -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("card", "decline_code", "message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        ("pm_card_visa_chargeDeclined", "generic_decline", "Your card was declined."),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        (
            "pm_card_visa_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
    ],
)
def test_a_declined_card_is_a_card_error_and_leaves_the_intent_awaiting_a_method(
    provider: SandboxProcess,
    client: stripe.StripeClient,
    receiver: WebhookReceiver,
    card: str,
    decline_code: str,
    message: str,
) -> None:
    with pytest.raises(stripe.CardError) as declined:
        authorize(client, card)

    error = declined.value
    assert (error.http_status, error.code, error.user_message) == (402, "card_declined", message)
    assert (error.error.type, error.error.decline_code) == ("card_error", decline_code)
    intent = error.error.payment_intent
    assert (intent.status, intent.payment_method, intent.amount_capturable) == (
        "requires_payment_method",
        None,
        0,
    )
    assert intent.last_payment_error.decline_code == decline_code
    assert client.v1.payment_intents.retrieve(intent.id).to_dict() == intent.to_dict()
    charge = client.v1.charges.retrieve(error.error.charge)
    assert (charge.status, charge.paid, charge.failure_code, charge.outcome.reason) == (
        "failed",
        False,
        "card_declined",
        decline_code,
    )
    [(_, event)] = wait_events(receiver, intent.id, 1)
    assert event.type == "payment_intent.payment_failed"


def test_an_elevated_risk_card_is_authorized_and_placed_in_review(client: stripe.StripeClient) -> None:
    intent = authorize(client, "pm_card_riskLevelElevated")

    charge = client.v1.charges.retrieve(intent.latest_charge)

    assert intent.status == "requires_capture"
    assert (charge.outcome.type, charge.outcome.risk_level) == ("manual_review", "elevated")
    assert charge.review.startswith("prv_")


def test_an_unknown_payment_method_or_parameter_is_an_invalid_request(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown_card:
        authorize(client, "pm_card_doesNotExist")
    with pytest.raises(stripe.InvalidRequestError) as unknown_param:
        authorize(client, surprise="yes")
    with pytest.raises(stripe.InvalidRequestError) as bad_amount:
        authorize(client, amount=0)
    with pytest.raises(stripe.InvalidRequestError) as redirects:
        client.v1.payment_intents.create(
            params={"amount": 100, "currency": "eur", "confirm": True, "payment_method": "pm_card_visa"}
        )

    assert (unknown_card.value.code, unknown_card.value.param) == ("resource_missing", "payment_method")
    assert (unknown_param.value.code, unknown_param.value.param) == ("parameter_unknown", "surprise")
    assert bad_amount.value.param == "amount"
    assert "return_url" in redirects.value.user_message
    assert provider.payments()["payment_intents"] == []  # nothing was made


@pytest.mark.parametrize(
    ("currency", "least", "words"),
    [
        ("eur", 50, "€0.50 eur"),
        ("gbp", 30, "£0.30 gbp"),
        ("jpy", 50, "¥50 jpy"),
        ("sek", 300, "3.00-kr. sek"),
    ],
)
def test_an_intent_below_stripe_s_minimum_charge_is_amount_too_small_and_makes_nothing(
    provider: SandboxProcess, client: stripe.StripeClient, currency: str, least: int, words: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as too_small:
        authorize(client, amount=least - 1, currency=currency)

    assert (too_small.value.http_status, too_small.value.code, too_small.value.param) == (
        400,
        "amount_too_small",
        "amount",
    )
    assert too_small.value.user_message == f"Amount must be at least {words}"
    assert provider.payments()["payment_intents"] == []  # nothing was made
    # the minimum itself is charged; a capture or a refund below it is taken
    intent = authorize(client, amount=least, currency=currency)
    assert intent.status == "requires_capture"
    client.v1.payment_intents.capture(intent.id, params={"amount_to_capture": 1})
    assert client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1}).status == "succeeded"


@pytest.mark.parametrize("currency", ["xyz", "XYZ", "abc", "xxx", "xau", "hrk", "euro", "e1r"])
def test_a_currency_stripe_would_not_know_is_an_invalid_request_on_currency(
    provider: SandboxProcess, client: stripe.StripeClient, currency: str
) -> None:
    key = f"authorize-{uuid.uuid4()}"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        authorize(client, currency=currency, key=key)

    error = unknown.value
    assert (error.http_status, error.param, error.error.type) == (400, "currency", "invalid_request_error")
    assert error.user_message.startswith(
        f"Invalid currency: {currency.lower()}. Stripe currently supports these currencies: usd, "
    )
    assert ", eur, " in error.user_message and ", jpy, " in error.user_message
    assert provider.payments()["payment_intents"] == []  # nothing was made
    assert authorize(client, currency="EUR", key=key).currency == "eur"  # and the key is still free


def test_a_currency_stripe_knows_is_taken_in_any_case(client: stripe.StripeClient) -> None:
    assert [authorize(client, currency=code).currency for code in ("JPY", "usd", "Chf")] == [
        "jpy",
        "usd",
        "chf",
    ]


# --- reads and lists ------------------------------------------------------------------------
def test_retrieving_an_unknown_object_is_a_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.retrieve("pi_missing")

    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    assert missing.value.user_message == "No such payment_intent: 'pi_missing'"


def test_listing_intents_by_creation_time_pages_newest_first(client: stripe.StripeClient) -> None:
    since = int(time.time())
    made = [authorize(client, amount=1_000 + i) for i in range(5)]
    newest_first = [i.id for i in reversed(made)]

    first = client.v1.payment_intents.list(params={"created": {"gte": since}, "limit": 2})
    second = client.v1.payment_intents.list(
        params={"created": {"gte": since}, "limit": 2, "starting_after": first.data[-1].id}
    )
    third = client.v1.payment_intents.list(
        params={"created": {"gte": since}, "limit": 2, "starting_after": second.data[-1].id}
    )
    walked = [i.id for i in client.v1.payment_intents.list(params={"limit": 2}).auto_paging_iter()]
    before = client.v1.payment_intents.list(params={"limit": 2, "ending_before": made[0].id})
    older = client.v1.payment_intents.list(params={"created": {"lt": since}})
    expanded = client.v1.payment_intents.list(params={"limit": 1, "expand": ["data.latest_charge"]})

    assert [i.id for i in first.data + second.data + third.data] == newest_first
    assert (first.has_more, second.has_more, third.has_more) == (True, True, False)
    assert first.url == "/v1/payment_intents" and first.object == "list"
    assert walked == newest_first
    assert [i.id for i in before.data] == newest_first[-3:-1] and before.has_more is True
    assert older.data == [] and older.has_more is False
    assert expanded.data[0].latest_charge.object == "charge"


def test_charges_list_for_a_settlement_report(client: stripe.StripeClient) -> None:
    since = int(time.time())
    kept = authorize(client, amount=2_000)
    client.v1.payment_intents.capture(kept.id)
    with pytest.raises(stripe.CardError):
        authorize(client, "pm_card_chargeDeclined")

    charges = client.v1.charges.list(params={"created": {"gte": since}}).data

    assert [(c.status, c.captured, c.amount_captured) for c in charges] == [
        ("failed", False, 0),
        ("succeeded", True, 2_000),
    ]
    with pytest.raises(stripe.InvalidRequestError) as bad_cursor:
        client.v1.charges.list(params={"starting_after": "ch_missing"})
    assert (bad_cursor.value.code, bad_cursor.value.param) == ("resource_missing", "starting_after")


# --- idempotency --------------------------------------------------------------------------------
def test_the_same_key_and_body_replay_the_first_answer(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    key = f"authorize-{uuid.uuid4()}"
    params = {
        "amount": 900,
        "currency": "eur",
        "payment_method_types": ["card"],
        "metadata": {"booking": "BK-1"},
    }

    first = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    again = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})

    assert again.to_dict() == first.to_dict()
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Idempotency-Key"] == key
    assert [i["id"] for i in provider.payments()["payment_intents"]] == [first.id]


def test_a_replayed_decline_is_the_same_decline(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    key = f"authorize-{uuid.uuid4()}"
    params = {"amount": 900, "currency": "eur", "confirm": True, "payment_method": "pm_card_chargeDeclined"}
    params["payment_method_types"] = ["card"]

    declines = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
        declines.append(declined.value)

    assert declines[1].json_body == declines[0].json_body
    assert declines[1].headers["Idempotent-Replayed"] == "true"
    assert len(provider.payments()["charges"]) == 1


def test_the_same_key_with_another_body_or_endpoint_is_an_idempotency_error(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    key = f"authorize-{uuid.uuid4()}"
    intent = authorize(client, amount=900, key=key)

    with pytest.raises(stripe.IdempotencyError) as other_body:
        authorize(client, amount=901, key=key)
    with pytest.raises(stripe.IdempotencyError) as other_endpoint:
        client.v1.payment_intents.capture(intent.id, options={"idempotency_key": key})

    assert (other_body.value.http_status, other_body.value.error.type) == (400, "idempotency_error")
    assert f"Try using a key other than '{key}'" in other_body.value.user_message
    assert other_endpoint.value.http_status == 400
    assert [i["status"] for i in provider.payments()["payment_intents"]] == ["requires_capture"]


def test_a_request_refused_before_it_ran_leaves_the_key_free(client: stripe.StripeClient) -> None:
    key = f"authorize-{uuid.uuid4()}"
    with pytest.raises(stripe.InvalidRequestError):
        authorize(client, amount=-5, key=key)

    assert authorize(client, amount=500, key=key).amount == 500


def test_a_key_in_flight_is_a_409(provider: SandboxProcess, client: stripe.StripeClient) -> None:
    provider.set_faults(latency_ms=[1500, 1500])
    key = f"authorize-{uuid.uuid4()}"
    first: list[stripe.PaymentIntent] = []
    worker = threading.Thread(target=lambda: first.append(authorize(client, key=key)))
    worker.start()
    wait_until(
        lambda: any(k["key"] == key for k in provider.payments()["idempotency_keys"]),
        what="the first request to claim the key",
    )

    with pytest.raises(stripe.APIError) as conflict:
        authorize(client, key=key)
    worker.join(10)

    assert (conflict.value.http_status, conflict.value.error.code) == (409, "idempotency_key_in_use")
    assert len(first) == 1
    assert len(provider.payments()["payment_intents"]) == 1


def test_keys_are_forgotten_after_24_scaled_hours(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    provider.set_faults(time_scale=24 * 3600 / 0.5)  # 24 h pass in half a second
    key = f"authorize-{uuid.uuid4()}"
    first = authorize(client, key=key)

    second = wait_until(
        lambda: (again := authorize(client, key=key)).id != first.id and again,
        what="the key to be forgotten",
    )

    assert "Idempotent-Replayed" not in second.last_response.headers
    assert len(provider.payments()["payment_intents"]) == 2  # the replays before made nothing


# --- webhooks -------------------------------------------------------------------------------
def test_webhooks_are_stripe_events_signed_with_the_endpoint_secret(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    key = f"authorize-{uuid.uuid4()}"
    intent = authorize(client, key=key)
    [(hook, event)] = wait_events(receiver, intent.id, 1)

    header = hook.headers["stripe-signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert abs(int(header[2:12]) - time.time()) < 10
    assert hook.headers["content-type"] == "application/json; charset=utf-8"
    assert event.id.startswith("evt_") and event.object == "event" and event.livemode is False
    assert event.request.idempotency_key == key and event.request.id.startswith("req_")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(hook.body.replace(b"12000", b"12001"), header, WHSEC)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(hook.body, header, "whsec_another_endpoint")


# --- authorizations expire ------------------------------------------------------------------------
def test_an_uncaptured_authorization_expires_after_seven_scaled_days(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(time_scale=SEVEN_DAYS_S / 2)  # 7 days pass in 2 seconds
    intent = authorize(client, amount=7_000)
    capture_before = client.v1.charges.retrieve(
        intent.latest_charge
    ).payment_method_details.card.capture_before
    assert capture_before - intent.created in (1, 2, 3)

    expired = wait_until(
        lambda: (now := client.v1.payment_intents.retrieve(intent.id)).status == "canceled" and now,
        what="the authorization to lapse",
    )

    assert (expired.cancellation_reason, expired.amount_capturable, expired.amount_received) == (
        "automatic",
        0,
        0,
    )
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.captured, charge.amount_refunded, charge.refunded) == (False, 7_000, True)
    [release] = client.v1.refunds.list(params={"payment_intent": intent.id}).data
    assert (release.reason, release.balance_transaction) == ("expired_uncaptured_charge", None)
    found = wait_events(receiver, intent.id, 3)
    assert types(found)[1:] == ["charge.refunded", "payment_intent.canceled"]
    assert found[2][1].request.id is None  # nobody asked: the provider did it
    history = truth_of(provider, intent.id)["payment_intents"][0]["history"]
    assert [(h["cause"], h["object"]["status"]) for h in history] == [
        ("create", "requires_capture"),
        ("expire", "canceled"),
    ]
    with pytest.raises(stripe.InvalidRequestError) as too_late:
        client.v1.payment_intents.capture(intent.id)
    assert too_late.value.code == "payment_intent_unexpected_state"


# --- a confirmation the bank answers late -------------------------------------------------------
def test_a_confirmation_answered_processing_holds_the_amount_once_the_bank_answers(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(time_scale=30)  # the bank answers 30 scaled seconds on: one second
    key = f"auth-{uuid.uuid4()}"

    intent = authorize(client, "pm_card_processing", amount=10_000, key=key, expand=["latest_charge"])

    # answered before the bank: nothing held, its charge pending; replayed the same under its key
    assert (intent.status, intent.amount_capturable, intent.latest_charge.status) == (
        "processing",
        0,
        "pending",
    )
    again = authorize(client, "pm_card_processing", amount=10_000, key=key, expand=["latest_charge"])
    assert (again.id, again.status) == (intent.id, "processing")
    provider.set_faults(time_scale=1)  # the hold, once made, lasts its 7 days

    # then held, as any authorization, and announced
    held = wait_until(
        lambda: (
            (
                now := client.v1.payment_intents.retrieve(intent.id, params={"expand": ["latest_charge"]})
            ).status
            == "requires_capture"
            and now
        ),
        what="the bank's hold",
    )
    assert (held.amount_capturable, held.latest_charge.status, held.latest_charge.paid) == (
        10_000,
        "succeeded",
        True,
    )
    assert held.latest_charge.payment_method_details.card.capture_before > time.time() + SEVEN_DAYS_S - 60
    found = wait_events(receiver, intent.id, 2)
    assert types(found) == ["payment_intent.processing", "payment_intent.amount_capturable_updated"]
    assert found[1][1].request.id is None  # nobody asked: the bank answered
    [pi] = truth_of(provider, intent.id)["payment_intents"]
    assert [h["cause"] for h in pi["history"]] == ["create", "processed"]
    assert client.v1.payment_intents.capture(intent.id).status == "succeeded"


# --- refunds that fail later ----------------------------------------------------------------------
def test_a_refund_to_a_card_that_refuses_it_succeeds_then_fails_and_is_announced(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    intent = authorize(client, "pm_card_refundFail", amount=10_000)
    client.v1.payment_intents.capture(intent.id)
    provider.set_faults(time_scale=30)  # the failure comes 30 scaled seconds on: one second

    refund = client.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 6_000, "metadata": {"operation": "op-1"}}
    )

    # answered as made, and counted on the charge, until the card refuses it
    assert (refund.status, refund.amount) == ("succeeded", 6_000)
    assert client.v1.charges.retrieve(intent.latest_charge).amount_refunded == 6_000
    [scheduled] = truth_of(provider, intent.id)["refunds"]
    assert scheduled["sandbox"]["fails_at"] is not None
    failed = wait_until(
        lambda: (now := client.v1.refunds.retrieve(refund.id)).status == "failed" and now,
        what="the refund to fail",
    )
    assert failed.failure_reason == "expired_or_canceled_card"
    assert failed.failure_balance_transaction.startswith("txn_")
    assert (failed.amount, failed.balance_transaction) == (6_000, refund.balance_transaction)
    assert failed.metadata.to_dict() == {"operation": "op-1"}
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.amount_captured, charge.amount_refunded, charge.refunded) == (10_000, 0, False)
    intent_now = client.v1.payment_intents.retrieve(intent.id)
    assert (intent_now.status, intent_now.amount_received) == ("succeeded", 10_000)  # still taken

    # announced as Stripe announces it, by signed charge.refund.updated, refund.updated and
    # refund.failed, each with the refund as its object
    found = wait_events(receiver, intent.id, 6)
    assert types(found) == [
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "charge.refunded",
        "charge.refund.updated",
        "refund.updated",
        "refund.failed",
    ]
    for _, told in found[3:]:
        assert told.data.object.object == "refund" and told.data.object.id == refund.id
        assert (told.data.object.status, told.data.object.failure_reason) == (
            "failed",
            "expired_or_canceled_card",
        )
        assert told.request.id is None  # nobody asked: the card's bank refused it
    for _, updated in found[3:5]:
        assert updated.data.previous_attributes.to_dict() == {
            "status": "succeeded",
            "failure_balance_transaction": None,
            "failure_reason": None,
        }
    assert "previous_attributes" not in found[5][1].data.to_dict()

    # the provider's truth keeps each version; a refund made after the failure stands
    truth = truth_of(provider, intent.id)
    [kept] = truth["refunds"]
    assert [(h["cause"], h["object"]["status"]) for h in kept["history"]] == [
        ("refund", "succeeded"),
        ("refund_failed", "failed"),
    ]
    assert kept["sandbox"]["fails_at"] is None
    assert [h["cause"] for h in truth["charges"][0]["history"]] == [
        "create",
        "capture",
        "refund",
        "refund_failed",
    ]
    again = client.v1.refunds.create(params={"payment_intent": intent.id})
    assert (again.status, again.amount) == ("succeeded", 10_000)
    assert provider.payments(intent.id)["refunds"][-1]["sandbox"]["fails_at"] is None
    assert provider.stats()["outcomes"]["refund_failed"] == 1


def test_a_refund_to_any_other_card_never_fails(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    intent = authorize(client, amount=10_000)
    client.v1.payment_intents.capture(intent.id)

    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 6_000})

    [refund] = truth_of(provider, intent.id)["refunds"]
    assert (refund["status"], refund["sandbox"]) == ("succeeded", {"fails_at": None})


# --- ground truth ------------------------------------------------------------------------------
def test_ground_truth_holds_every_object_and_its_history(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    key = f"authorize-{uuid.uuid4()}"
    intent = authorize(client, amount=5_000, key=key)
    client.v1.payment_intents.capture(intent.id, params={"amount_to_capture": 4_000})
    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1_000})

    truth = truth_of(provider, intent.id)

    [pi] = truth["payment_intents"]
    assert (pi["status"], pi["amount_received"], pi["version"]) == ("succeeded", 4_000, 2)
    assert pi["sandbox"] == {"test_card": "pm_card_visa", "authorization_lapses_at": None}
    assert [(h["version"], h["cause"]) for h in pi["history"]] == [(1, "create"), (2, "capture")]
    assert pi["history"][0]["idempotency_key"] == key
    assert pi["history"][1]["idempotency_key"] not in (None, key)  # the SDK's own, for the capture
    assert all(h["request_id"].startswith("req_") for h in pi["history"])
    [charge] = truth["charges"]
    assert [h["cause"] for h in charge["history"]] == ["create", "capture", "refund"]
    assert charge["amount_refunded"] == 2_000  # 1,000 released at capture, 1,000 refunded
    assert sorted((r["amount"], r["balance_transaction"] is None) for r in truth["refunds"]) == [
        (1_000, False),
        (1_000, True),
    ]
    assert provider.payments()["profile"] == "payments"


# --- the wire itself ----------------------------------------------------------------------------
def test_the_wire_refuses_what_stripe_refuses(provider: SandboxProcess) -> None:
    json_body = provider.request("POST", "/v1/payment_intents", json={"amount": 100, "currency": "eur"})
    unknown = provider.request("GET", "/v1/customers")
    wrong_key = requests.get(
        f"{provider.base_url}/v1/payment_intents",
        headers={"Authorization": "Bearer sk_test_wrong"},
        timeout=5,
    )
    basic = requests.get(f"{provider.base_url}/v1/payment_intents", auth=(API_KEY, ""), timeout=5)

    assert (json_body.status_code, json_body.json()["error"]["type"]) == (400, "invalid_request_error")
    assert "form-encoded" in json_body.json()["error"]["message"]
    assert (unknown.status_code, unknown.json()["error"]["type"]) == (404, "invalid_request_error")
    assert (
        wrong_key.status_code == 401 and wrong_key.json()["error"]["message"] == "Invalid API Key provided."
    )
    assert basic.status_code == 200 and basic.json()["object"] == "list"
    assert all(r.headers["Request-Id"].startswith("req_") for r in (json_body, unknown, wrong_key, basic))
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": provider.base_url}, max_network_retries=0
        ).v1.payment_intents.list()


# --- faults -------------------------------------------------------------------------------------
def test_latency_delays_every_call(provider: SandboxProcess, client: stripe.StripeClient) -> None:
    provider.set_faults(latency_ms=[300, 300])

    started = time.monotonic()
    client.v1.payment_intents.list()
    elapsed = time.monotonic() - started

    assert 0.3 <= elapsed < 3
    assert provider.stats()["faults"]["latency"] == 1


def test_a_timeout_after_commit_leaves_the_intent_and_its_key_replays_it(provider: SandboxProcess) -> None:
    provider.set_faults(timeout_after_commit_rate=1)
    impatient = client_for(provider, timeout_s=0.5)
    key = f"authorize-{uuid.uuid4()}"

    with pytest.raises(stripe.APIConnectionError):
        authorize(impatient, key=key)
    [held] = provider.payments()["payment_intents"]
    provider.set_faults(timeout_after_commit_rate=0)
    again = authorize(impatient, key=key)

    assert held["status"] == "requires_capture"
    assert again.id == held["id"]
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert provider.stats()["faults"]["timeout_after_commit"] == 1


def test_the_sdk_retrying_a_timeout_with_its_key_charges_once(provider: SandboxProcess) -> None:
    provider.set_faults(timeout_after_commit_rate=1)
    # Its first retry waits at least 0.5 s; 2 s lets a loaded machine commit the first attempt first.
    retrying = client_for(provider, retries=2, timeout_s=2)

    def heal_once_committed() -> None:
        wait_until(lambda: provider.payments()["payment_intents"], what="the first attempt to commit")
        provider.set_faults(timeout_after_commit_rate=0)

    healer = threading.Thread(target=heal_once_committed)
    healer.start()
    intent = authorize(retrying)  # the SDK's own Idempotency-Key, the same on every attempt
    healer.join(10)

    assert intent.status == "requires_capture"
    assert [i["id"] for i in provider.payments()["payment_intents"]] == [intent.id]
    assert intent.last_response.headers["Idempotent-Replayed"] == "true"
    assert provider.stats()["calls"]["POST /v1/payment_intents"] >= 2  # the SDK did retry


def test_a_500_before_the_change_is_saved_under_the_key_and_makes_nothing(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    """As Stripe keeps the 500 of an endpoint that began: asking again replays it, a read says
    nothing was made, and only another key makes it."""
    provider.set_faults(error_500_saved_rate=1)
    key, ref = f"authorize-{uuid.uuid4()}", booking_ref()
    with pytest.raises(stripe.APIError) as failed:
        authorize(client, key=key, metadata={"booking": ref})
    assert failed.value.http_status == 500
    provider.set_faults(error_500_saved_rate=0)

    with pytest.raises(stripe.APIError) as replayed:
        authorize(client, key=key, metadata={"booking": ref})

    assert replayed.value.http_status == 500
    assert replayed.value.headers["Idempotent-Replayed"] == "true"
    assert provider.payments()["payment_intents"] == []
    assert provider.stats()["faults"]["error_500_saved"] == 1
    assert authorize(client, key=f"authorize-{uuid.uuid4()}", metadata={"booking": ref}).status == (
        "requires_capture"
    )


def test_a_500_reconciled_later_makes_its_change_after_the_answer_with_its_webhook(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    """`error_500_reconciled_rate`, as Stripe reconciles a request whose 500 left its outcome
    indeterminate: the 500 is kept under the key (a retry replays it) and nothing is made at
    first; a few (scaled) seconds on, the request's change is made all the same, under its key,
    with its webhook."""
    provider.set_faults(error_500_reconciled_rate=1, error_500_reconciled_delay_s=[2, 2])
    key, ref = f"authorize-{uuid.uuid4()}", booking_ref()
    with pytest.raises(stripe.APIError) as failed:
        authorize(client, key=key, metadata={"booking": ref})
    assert failed.value.http_status == 500
    provider.set_faults(error_500_reconciled_rate=0)
    with pytest.raises(stripe.APIError) as replayed:
        authorize(client, key=key, metadata={"booking": ref})
    assert replayed.value.headers["Idempotent-Replayed"] == "true"
    assert provider.payments()["payment_intents"] == []  # nothing yet: a read finds nothing

    [made] = wait_until(lambda: provider.payments()["payment_intents"], what="the reconciled intent")
    assert (made["status"], made["metadata"]) == ("requires_capture", {"booking": ref})
    assert made["history"][0]["idempotency_key"] == key
    assert types(wait_events(receiver, made["id"], 1)) == ["payment_intent.amount_capturable_updated"]
    with pytest.raises(stripe.APIError) as still:  # the key keeps its 500
        authorize(client, key=key, metadata={"booking": ref})
    assert still.value.headers["Idempotent-Replayed"] == "true"
    faults = provider.stats()["faults"]
    assert (faults["error_500_reconciled"], faults["error_500_reconciled_made"]) == (1, 1)


def test_5xx_before_commit_makes_nothing_and_after_commit_is_saved_under_the_key(
    provider: SandboxProcess, client: stripe.StripeClient
) -> None:
    provider.set_faults(error_5xx_rate=1, seed=7)
    keys = [f"authorize-{uuid.uuid4()}" for _ in range(12)]
    refs = [booking_ref() for _ in keys]
    for key, ref in zip(keys, refs, strict=True):
        with pytest.raises(stripe.APIError) as failed:
            authorize(client, key=key, metadata={"booking": ref})
        assert failed.value.http_status in (500, 502, 503, 504)
        assert failed.value.error.type == "api_error"
    made = {i["metadata"]["booking"] for i in provider.payments()["payment_intents"]}
    faults = provider.stats()["faults"]
    provider.set_faults(error_5xx_rate=0)

    for key, ref in zip(keys, refs, strict=True):
        if ref in made:  # committed: the key holds the 500, as Stripe keeps it
            with pytest.raises(stripe.APIError) as replayed:
                authorize(client, key=key, metadata={"booking": ref})
            assert replayed.value.http_status == 500
            assert replayed.value.headers["Idempotent-Replayed"] == "true"
        else:  # refused before it ran: the key is free and the retry makes it now
            assert authorize(client, key=key, metadata={"booking": ref}).status == "requires_capture"

    assert len(made) == faults["error_5xx_after_commit"]
    assert faults["error_5xx_before_commit"] + faults["error_5xx_after_commit"] == 12
    assert 0 < len(made) < 12
    assert len(provider.payments()["payment_intents"]) == 12  # each booking's intent exactly once


def test_429_is_a_rate_limit_error_the_sdk_does_not_retry(provider: SandboxProcess) -> None:
    provider.set_faults(rate_limit_rate=1)
    retrying = client_for(provider, retries=2)
    key = f"authorize-{uuid.uuid4()}"

    with pytest.raises(stripe.RateLimitError) as limited:
        authorize(retrying, key=key)
    provider.set_faults(rate_limit_rate=0)

    assert (limited.value.http_status, limited.value.error.code) == (429, "rate_limit")
    assert "Retry-After" not in limited.value.headers
    assert provider.stats()["calls"] == {"POST /v1/payment_intents": 1}  # no retry by the SDK
    assert provider.payments()["payment_intents"] == []
    assert "Idempotent-Replayed" not in authorize(retrying, key=key).last_response.headers


def test_duplicate_webhooks_repeat_the_same_event(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(webhook_duplicate_rate=1, time_scale=60)

    intent = authorize(client)
    wait_until(
        lambda: provider.stats()["webhooks"]["events_by_status"] == {"delivered": 1},
        what="the last copy to be delivered",
    )
    copies = events(receiver, intent.id)

    assert len(copies) in (2, 3)
    assert len({e.id for _, e in copies}) == 1
    assert len({h.body for h, _ in copies}) == 1
    assert provider.stats()["faults"]["webhook_duplicate"] == 1


def test_a_held_back_webhook_arrives_after_a_later_one(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(webhook_reorder_rate=1, time_scale=10)  # held at most 12 s
    intent = authorize(client)
    provider.set_faults(webhook_reorder_rate=0)

    client.v1.payment_intents.capture(intent.id)

    found = wait_events(receiver, intent.id, 2, timeout_s=20)
    assert types(found) == ["payment_intent.succeeded", "payment_intent.amount_capturable_updated"]


def test_delayed_webhooks_arrive_after_the_delay(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(webhook_delay_s=[1, 1])

    intent = authorize(client)
    answered = time.monotonic()
    [(hook, _)] = wait_events(receiver, intent.id, 1)

    assert hook.at - answered >= 0.9
    assert provider.stats()["faults"]["webhook_delay"] == 1


def test_an_early_webhook_arrives_before_the_answer(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(webhook_early_rate=1)

    intent = authorize(client)
    answered = time.monotonic()

    [(hook, event)] = events(receiver, intent.id)
    assert hook.at < answered
    assert event.data.object.status == "requires_capture"


def test_a_failed_delivery_is_retried_with_the_same_event(
    provider: SandboxProcess, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    provider.set_faults(time_scale=10)
    receiver.planned_codes.extend([500])

    intent = authorize(client)
    found = wait_events(receiver, intent.id, 2)

    assert found[0][1].id == found[1][1].id
    assert json.loads(found[0][0].body) == json.loads(found[1][0].body)
