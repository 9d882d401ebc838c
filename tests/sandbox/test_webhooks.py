"""Reference webhooks: signed per change, redelivered until 2xx, and every webhook fault."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.helpers import wait_until
from tests.sandbox.conftest import SECRET, WebhookReceiver, reference_body
from tests.sandbox_process import SandboxProcess


def create(partner: SandboxProcess, **overrides):
    response = partner.request("POST", "/v1/reservations", json=reference_body(**overrides))
    assert response.status_code == 201
    return response.json()


def test_every_change_sends_one_signed_reservation_updated_event(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    created = create(reference)
    answered = time.monotonic()
    [first] = receiver.wait_for(created["id"], 1)
    cancelled = reference.request("POST", f"/v1/reservations/{created['id']}/cancel").json()

    hooks = receiver.wait_for(created["id"], 2)
    wait_until(
        lambda: reference.stats()["webhooks"]["events_by_status"] == {"delivered": 2},
        what="the partner to record both deliveries",
    )

    assert first.at - answered < 0.5  # a perfect partner delivers promptly
    assert len(receiver.for_reservation(created["id"])) == 2
    verifier = Webhook(SECRET)
    payloads = [verifier.verify(h.body, h.headers) for h in hooks]
    assert [p["type"] for p in payloads] == ["reservation.updated"] * 2
    assert [p["data"] for p in payloads] == [created, cancelled]
    assert [p["timestamp"] for p in payloads] == [created["updated_at"], cancelled["updated_at"]]
    assert hooks[0].headers["content-type"] == "application/json"
    assert hooks[0].webhook_id != hooks[1].webhook_id
    assert all(h.webhook_id.startswith("msg_") for h in hooks)


def test_a_tampered_body_does_not_verify(reference: SandboxProcess, receiver: WebhookReceiver) -> None:
    created = create(reference)
    [hook] = receiver.wait_for(created["id"], 1)

    tampered = hook.body.replace(b'"confirmed"', b'"cancelled"')

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(tampered, hook.headers)


def test_failed_deliveries_are_retried_with_backoff_and_every_attempt_recorded(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(time_scale=10)  # backoff 0.1 s, then 0.2 s
    receiver.planned_codes.extend([500, 503])

    created = create(reference)
    hooks = receiver.wait_for(created["id"], 3)

    assert len({h.webhook_id for h in hooks}) == 1
    assert len({h.body for h in hooks}) == 1
    assert hooks[1].at - hooks[0].at >= 0.09
    assert hooks[2].at - hooks[1].at >= 0.19
    for hook in hooks:
        Webhook(SECRET).verify(hook.body, hook.headers)
    wait_until(
        lambda: reference.stats()["webhooks"]["events_by_status"] == {"delivered": 1},
        what="the partner to record the delivery",
    )
    attempts = [
        a for a in reference.stats()["webhooks"]["attempt_log"] if a["reservation_id"] == created["id"]
    ]
    assert [(a["attempt"], a["response_code"]) for a in attempts] == [(1, 500), (2, 503), (3, 204)]
    assert reference.stats()["webhooks"]["events_by_status"] == {"delivered": 1}


def test_an_unreachable_receiver_is_recorded_as_an_error_attempt(start_sandbox) -> None:
    partner = start_sandbox(
        "reference",
        "--webhook-url",
        "http://127.0.0.1:9/hook",
        "--webhook-secret",
        SECRET,
        "--time-scale",
        "100",
    )

    created = partner.request("POST", "/v1/reservations", json=reference_body()).json()
    first, second = wait_until(
        lambda: len(log := partner.stats()["webhooks"]["attempt_log"]) >= 2 and log[:2],
        what="the partner to try a second time",
    )

    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["event_id"] == second["event_id"]
    assert first["reservation_id"] == second["reservation_id"] == created["id"]
    assert (first["response_code"], second["response_code"]) == (None, None)
    assert first["error"].startswith("ConnectionError") and second["error"].startswith("ConnectionError")


def test_duplicate_webhooks_arrive_twice_or_more_with_the_same_id(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(webhook_duplicate_rate=1, time_scale=60)

    created = create(reference)
    wait_until(
        lambda: reference.stats()["webhooks"]["events_by_status"] == {"delivered": 1},
        what="the partner to deliver the last copy",
    )
    hooks = receiver.for_reservation(created["id"])
    attempts = [
        a for a in reference.stats()["webhooks"]["attempt_log"] if a["reservation_id"] == created["id"]
    ]

    assert [a["response_code"] for a in attempts] == [204] * len(hooks)  # every copy sent arrived
    assert len(hooks) in (2, 3)  # the partner sends one or two extra copies
    assert len({h.webhook_id for h in hooks}) == 1
    assert len({h.body for h in hooks}) == 1
    assert reference.stats()["faults"]["webhook_duplicate"] == 1


def test_a_held_back_webhook_arrives_after_a_later_one(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(webhook_reorder_rate=1, time_scale=10)  # held at most 12 s
    created = create(reference)
    reference.set_faults(webhook_reorder_rate=0)
    reference.request("POST", f"/v1/reservations/{created['id']}/cancel")

    hooks = receiver.wait_for(created["id"], 2)

    assert [h.payload["data"]["version"] for h in hooks] == [2, 1]
    assert [h.payload["data"]["status"] for h in hooks] == ["cancelled", "confirmed"]
    assert reference.stats()["faults"]["webhook_reorder"] == 1


def test_a_held_back_webhook_is_delivered_even_if_nothing_overtakes_it(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(webhook_reorder_rate=1, time_scale=240)  # held at most 0.5 s

    created = create(reference)

    receiver.wait_for(created["id"], 1, timeout=3)


def test_webhook_delay_holds_delivery_for_the_scaled_delay(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(webhook_delay_s=[60, 60], time_scale=60)  # one second

    created = create(reference)
    answered = time.monotonic()

    [hook] = receiver.wait_for(created["id"], 1)
    assert hook.at - answered >= 0.8


def test_an_early_webhook_arrives_before_the_create_returns(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(webhook_early_rate=1)

    created = create(reference)
    answered = time.monotonic()

    [hook] = receiver.for_reservation(created["id"])  # already there, no waiting
    assert hook.at < answered
    assert hook.payload["data"] == created
    Webhook(SECRET).verify(hook.body, hook.headers)
    reference.request("POST", f"/v1/reservations/{created['id']}/cancel")
    assert len(receiver.wait_for(created["id"], 2)) == 2  # only creates go early
    assert reference.stats()["faults"]["webhook_early"] == 1


def test_a_failed_early_webhook_is_redelivered_by_the_sender(
    reference: SandboxProcess, receiver: WebhookReceiver
) -> None:
    reference.set_faults(webhook_early_rate=1, time_scale=20)
    receiver.planned_codes.append(500)

    created = create(reference)
    hooks = receiver.wait_for(created["id"], 2)

    assert hooks[0].webhook_id == hooks[1].webhook_id
