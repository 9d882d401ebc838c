"""Each fault of the payment provider once at least, against a real provider process, a sandbox
partner and a real worker: a timeout after commit, a 5xx before and after commit (on the
authorization, the capture and the refund), a 429, webhooks duplicated and reordered, a run lost
with its message, a hold about to lapse. After each the money is at rest as the booking owes by
the provider's ground truth, and an unknown outcome was never answered by a second
authorization (one operation, one key, one intent)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from bookings.models import BookingEvent, Notification, NotificationKind, NotificationState
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from payments.messages import PAYMENT_RUN, PAYMENTS_QUEUE
from payments.models import OperationKind, OperationState, Payment, PaymentOperation, PaymentStatus
from payments.services.runs import payment_run
from reconciliation.services.sweeper import sweep
from tests.helpers import lose_messages, wait_until
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import (
    assert_money_at_rest,
    kinds,
    money_code,
    payment_of,
    seed_for,
    wait_for_money,
)
from tests.reconciliation.conftest import queued

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PRICE = Decimal("360.00")


def operations(booking) -> list[tuple[str, int, str, bool]]:
    return list(
        PaymentOperation.objects.filter(payment__booking=booking)
        .order_by("opened_at", "id")
        .values_list("kind", "seq", "state", "answer_lost")
    )


def tried(booking, kind: str) -> bool:
    return PaymentOperation.objects.filter(payment__booking=booking, kind=kind, tries__gte=1).exists()


def assert_charged_once(paying, booking) -> None:
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    assert len(paying.intents(booking)) == 1


# --- the authorization -------------------------------------------------------------------------
def test_a_timeout_after_commit_fences_the_authorization_until_the_same_key_answers(paying, settings):
    settings.PAYMENTS_RETRY_BASE_S = 1.0  # time to lift the fault after the first try
    # the provider's webhook of the hold comes late: only our own second try can tell
    paying.provider.set_faults(timeout_after_commit_rate=1, webhook_delay_s=[6, 6])
    booking = paying.book()
    wait_until(lambda: tried(booking, OperationKind.AUTHORIZE), what="the first authorization")
    paying.provider.set_faults(timeout_after_commit_rate=0)

    assert_charged_once(paying, booking)
    # one authorization, asked again under its own key: never a second one
    assert operations(booking)[0][:3] == ("authorize", 1, OperationState.SUCCEEDED)
    assert [op[0] for op in operations(booking)] == ["authorize", "capture"]
    timeline = kinds(booking)
    assert timeline.index("payment.authorize.ambiguous") < timeline.index("payment.unknown")
    assert timeline.index("payment.unknown") < timeline.index("payment.authorized")
    assert "payment.authorize.ok" in timeline


@pytest.mark.parametrize("after_commit", [True, False], ids=["after-commit", "before-commit"])
def test_a_5xx_on_the_authorization_is_resolved_by_what_the_provider_holds(paying, settings, after_commit):
    settings.PAYMENTS_RETRY_BASE_S = 1.0
    paying.provider.set_faults(error_5xx_rate=1, seed=seed_for(after_commit=after_commit))
    booking = paying.book()
    wait_until(lambda: tried(booking, OperationKind.AUTHORIZE), what="the first authorization")
    paying.provider.set_faults(error_5xx_rate=0)

    assert_charged_once(paying, booking)
    [authorize, _capture] = operations(booking)
    # after commit the key holds the 500: only a read of the provider (by our payment's id in
    # the intent's metadata) told what it holds; before commit the same key simply made it
    assert authorize == ("authorize", 1, OperationState.SUCCEEDED, after_commit)


def test_a_rate_limited_authorization_did_nothing_and_is_asked_again(paying, settings):
    settings.PAYMENTS_RETRY_BASE_S = 1.0
    paying.provider.set_faults(rate_limit_rate=1)
    booking = paying.book()
    wait_until(lambda: tried(booking, OperationKind.AUTHORIZE), what="the first authorization")
    paying.provider.set_faults(rate_limit_rate=0)

    assert_charged_once(paying, booking)
    timeline = kinds(booking)
    assert "payment.authorize.transient" in timeline and "payment.unknown" not in timeline
    assert operations(booking)[0][:3] == ("authorize", 1, OperationState.SUCCEEDED)


# --- capture and refund ------------------------------------------------------------------------------
def test_a_capture_whose_answer_is_a_saved_500_is_read_not_made_again(paying, settings):
    settings.PAYMENTS_RETRY_BASE_S = 1.0
    paying.h.faults(async_confirm_delay_s=2)  # time to arm the fault between hold and capture
    booking = paying.book()
    wait_until(lambda: payment_of(booking).status == P.AUTHORIZED, what="the hold")
    paying.provider.set_faults(error_5xx_rate=1, seed=seed_for(after_commit=True))
    wait_until(lambda: tried(booking, OperationKind.CAPTURE), what="the first capture", timeout_s=15)
    paying.provider.set_faults(error_5xx_rate=0)

    assert_charged_once(paying, booking)
    assert operations(booking)[1] == ("capture", 1, OperationState.SUCCEEDED, True)


def test_a_capture_refused_for_now_is_decided_again_so_a_free_cancel_releases_the_hold(paying, settings):
    """QA on `make run`: the provider answered the capture 429 for a while; the customer, told
    "we release the 240.00 EUR we are holding, you will not be charged", cancelled for free; the
    capture's operation stayed open as if its outcome were unknown, was asked again under its
    key once the 429s stopped, and the customer was charged, then refunded. A call answered 429
    provably did nothing: its operation is closed as not made and the next run decides again
    from what the booking owes now (a void). One that may have happened still fences."""
    paying.h.faults(async_confirm_delay_s=2)  # time to arm the fault between hold and capture
    booking = paying.book()
    wait_until(lambda: payment_of(booking).status == P.AUTHORIZED, what="the hold")
    paying.provider.set_faults(rate_limit_rate=1)
    wait_until(lambda: tried(booking, OperationKind.CAPTURE), what="the first capture", timeout_s=15)

    booking_request_cancel(booking_id=booking.pk, actor="customer")  # free: nothing owed
    wait_for_status(booking, S.CANCELLED)
    paying.provider.set_faults(rate_limit_rate=0)

    wait_for_money(booking, "released")
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="released")
    [intent] = paying.intents(booking)
    assert (intent["status"], intent["amount_received"]) == ("canceled", 0)
    captures = [op for op in operations(booking) if op[0] == OperationKind.CAPTURE]
    assert captures and {op[2] for op in captures} == {OperationState.NOT_MADE}
    # The void may itself meet a 429 or two before the faults are off (a loaded machine runs it
    # between the cancel and `set_faults`): how many tries it took is not the point.
    last = operations(booking)[-1]
    assert (last[0], last[2]) == ("void", OperationState.SUCCEEDED)
    assert "payment.capture.ok" not in kinds(booking)


CHARGE_UNKNOWN = (
    "We asked for the 360.00 EUR held on your card to be charged and do not know yet whether it was."
)
BACK_IN_FULL = (
    "make sure the 360.00 EUR comes back to your card in full. We do not know yet whether it was "
    "charged, and finding out may complete the charge: if it is charged, we refund it in full; if "
    "not, we release the hold."
)


def test_a_free_cancel_while_the_capture_s_outcome_is_unknown_says_the_money_comes_back_not_how(
    paying, api_client, customer, request
):
    """QA: the capture timed out after the provider made it; the customer cancelled for free and
    was told "we release the 360.00 EUR we are holding, you will not be charged", then was
    charged and refunded. Until the capture's outcome is known, the page, the API and the mail say
    the money comes back, not whether as a release or a refund; then they say what happened."""
    sink = request.getfixturevalue("mail_sink")
    paying.h.faults(async_confirm_delay_s=2)  # time to arm the fault between hold and capture
    booking = paying.book(customer=customer)
    wait_until(lambda: payment_of(booking).status == P.AUTHORIZED, what="the hold")
    # the provider captures, then drops the call, and so every later call under the key; its
    # webhooks come late: only an answer under the capture's key can tell
    paying.provider.set_faults(timeout_after_commit_rate=1, webhook_delay_s=[60, 60])
    wait_until(lambda: money_code(booking) == "charge_unknown", what="the capture in doubt", timeout_s=20)
    assert payment_of(booking).status == P.AUTHORIZED  # for all we know, still held
    page = Client()
    page.force_login(customer)

    # before the cancel: the booking's page, the cancel page and the API say the same
    assert CHARGE_UNKNOWN in page.get(f"/bookings/{booking.reference}/").content.decode()
    cancel_page = page.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    assert (
        f'data-cancel-money="release_or_refund">Once the cancellation is done, we {BACK_IN_FULL}'
        in cancel_page
    )
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (shown["money"]["code"], shown["money"]["message"]) == ("charge_unknown", CHARGE_UNKNOWN)
    assert shown["if_cancelled"]["outcome"] == "release_or_refund"
    assert shown["if_cancelled"]["message"] == f"Once the cancellation is done, we {BACK_IN_FULL}"

    # when the customer cancels it (free: nothing owed) while the outcome is still unknown
    answer = api_client.post(f"/api/v1/bookings/{booking.reference}/cancel")
    assert (answer.status_code, answer.json()["money"]["code"]) == (202, "charge_unknown")
    wait_for_status(booking, S.CANCELLED)
    cancelled = wait_until(
        lambda: Notification.objects.filter(
            booking=booking, kind=NotificationKind.CANCELLED, state=NotificationState.SENT
        ).first(),
        what="the cancelled mail",
    )
    assert money_code(booking) == "charge_unknown"  # still unknown when it was mailed
    [mail] = [m for m in sink.messages() if m["Subject"] == f"Your booking {booking.reference} is cancelled"]
    comes_back = f"{CHARGE_UNKNOWN} We are {BACK_IN_FULL.replace('make sure', 'making sure', 1)}"
    for subtype in ("plain", "html"):
        text = " ".join(mail.get_body((subtype,)).get_content().split())
        assert comes_back in text
        assert "releas" not in text.replace("release the hold", "")  # no release promised
    # the page and the API say it as the mail does, once the booking is cancelled
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    said = f"{comes_back} Cancelling this booking is free."
    assert (shown["status"], shown["money"]["message"]) == ("cancelled", said)
    assert said in " ".join(page.get(f"/bookings/{booking.reference}/").content.decode().split())

    # then the capture's answer comes (it was made): charged, then refunded in full, each mailed
    paying.provider.set_faults(timeout_after_commit_rate=0)
    wait_for_money(booking, "refunded", timeout_s=30)
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="refunded")
    [intent] = paying.intents(booking)
    assert intent["amount_received"] == 36_000  # the timed-out capture was made
    assert [r["amount"] for r in paying.provider.refunds(intent["id"])] == [36_000]
    later = Notification.objects.filter(booking=booking, status_version__gt=cancelled.status_version)
    wait_until(
        lambda: (
            list(later.order_by("status_version").values_list("kind", "state"))
            == [(NotificationKind.MONEY, NotificationState.SENT)] * 2
        ),
        what="the two money mails to be sent",
    )
    money_mails = [
        m for m in sink.messages() if m["Subject"] == f"Your payment for booking {booking.reference}"
    ]
    said = [" ".join(m.get_body(("plain",)).get_content().split()) for m in money_mails]
    charged = (
        "We charged 360.00 EUR to your card. We are refunding the 360.00 EUR you paid to your card, in full."
    )
    refunded = (
        "We refunded the 360.00 EUR we charged to your card: you paid nothing. No cancellation fee is kept."
    )
    assert len(said) == 2 and any(charged in t for t in said) and any(refunded in t for t in said), said
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (shown["money"]["code"], shown["if_cancelled"]) == ("refunded", None)


def test_a_refund_whose_answer_is_a_saved_500_is_found_and_never_made_twice(paying, settings):
    settings.PAYMENTS_RETRY_BASE_S = 1.0
    booking = paying.book()
    wait_for_money(booking, "charged")
    paying.provider.set_faults(error_5xx_rate=1, seed=seed_for(after_commit=True))

    booking_request_cancel(booking_id=booking.pk, actor="customer")  # free: refunded in full
    wait_until(lambda: tried(booking, OperationKind.REFUND), what="the first refund", timeout_s=15)
    paying.provider.set_faults(error_5xx_rate=0)

    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "refunded")
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="refunded")
    [intent] = paying.intents(booking)
    assert [r["amount"] for r in paying.provider.refunds(intent["id"])] == [36_000]
    assert operations(booking)[2] == ("refund", 1, OperationState.SUCCEEDED, True)


def test_a_refund_whose_saved_500_made_nothing_is_made_under_a_new_key_after_the_grace(paying, settings):
    """Review: a refund whose key kept a 500 of a request that failed before its change was read,
    found nothing, and stayed unknown for the key's 24 hours, the customer told "refunding" all
    along. The replayed 500 says the key's request has finished; what it did may still appear
    (the provider reconciles a 500 afterwards: tests/payments/test_server_error_reconciled.py),
    so an empty read is the whole truth once PAYMENTS_SERVER_ERROR_GRACE_S has passed, not at
    once, and not a day on."""
    settings.PAYMENTS_RETRY_BASE_S = 1.0
    settings.PAYMENTS_SERVER_ERROR_GRACE_S = 4.0
    booking = paying.book()
    wait_for_money(booking, "charged")
    paying.provider.set_faults(error_500_saved_rate=1)

    booking_request_cancel(booking_id=booking.pk, actor="customer")  # free: refunded in full
    wait_until(lambda: tried(booking, OperationKind.REFUND), what="the first refund", timeout_s=15)
    paying.provider.set_faults(error_500_saved_rate=0)

    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "refunded", timeout_s=30)
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="refunded")
    [intent] = paying.intents(booking)
    [made] = paying.provider.refunds(intent["id"])
    assert made["amount"] == 36_000
    refunds = [op for op in operations(booking) if op[0] == "refund"]
    assert refunds == [
        ("refund", 1, OperationState.NOT_MADE, True),  # its key kept the 500: found never made
        ("refund", 2, OperationState.SUCCEEDED, False),
    ]
    assert made["metadata"]["operation"].endswith(":refund:2")
    first_made = PaymentOperation.objects.get(payment__booking=booking, kind=OperationKind.REFUND, seq=1)
    assert (first_made.closed_at - first_made.opened_at).total_seconds() >= 4.0  # not before the grace
    # Support reads the read as a read, and what it found, never "refund: ok" for one not made
    first = BookingEvent.objects.filter(booking=booking, data__idempotency_key__endswith=":refund:1")
    rows = list(first.order_by("occurred_at", "id").values_list("kind", "summary"))
    assert rows[-1][0] == "payment.refund.read", rows
    assert "read instead of asked again (200" in rows[-1][1]
    assert rows[-1][1].endswith(": not made: its one call provably did nothing; decided again"), rows
    assert "payment.refund.ok" not in [kind for kind, _ in rows]
    # Read within the grace, it said in doubt, and until when, not "not made"
    assert any("nothing made found yet" in summary for kind, summary in rows[:-1] if kind.endswith(".read"))


# --- webhooks ----------------------------------------------------------------------------------------
def test_duplicated_and_reordered_webhooks_are_stored_once_and_never_move_a_payment_back(paying, settings):
    # the provider's time runs 20 times faster (a reordered webhook is held back 6 s at most):
    # its holds lapse in 8.4 hours, so ours must not be voided a day ahead
    paying.provider.set_faults(webhook_duplicate_rate=1, webhook_reorder_rate=1, time_scale=20)
    settings.PAYMENTS_LAPSE_MARGIN_S = 60
    booking = paying.book()
    assert_charged_once(paying, booking)
    payment = payment_of(booking)

    def all_delivered() -> dict:
        hooks = paying.provider.stats()["webhooks"]
        return hooks if set(hooks["events_by_status"]) == {"delivered"} else {}

    # every event is delivered two or three times, each copy acknowledged; we hold each once
    hooks = wait_until(all_delivered, what="every copy of every webhook", timeout_s=30)
    codes = [a["response_code"] for a in hooks["attempt_log"]]
    assert hooks["attempts"] > hooks["events"] and set(codes) == {200, 202}
    assert codes.count(202) == hooks["events"] == payment.events.count()  # stored once each
    wait_until(lambda: not payment.events.filter(state="received").exists(), what="every delivery applied")
    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    moves = [k for k in kinds(booking) if k in ("payment.authorized", "payment.captured")]
    assert moves == ["payment.authorized", "payment.captured"]  # forward, each once


# --- recovery by the sweeper -------------------------------------------------------------------------
def test_a_run_lost_with_its_message_is_run_by_the_sweeper(paying_idle, settings):
    booking = paying_idle.book()  # its run is queued after commit...
    broker = paying_idle.h.broker
    lose_messages(broker, PAYMENTS_QUEUE)  # ...and lost, with the claim it held
    paying_idle.start_worker()
    wait_until(lambda: payment_of(booking).next_check_at <= timezone.now(), what="the payment to be due")

    first = sweep()
    # its copy is taken up (the claim ends with it) and the run moves the payment's check on
    wait_until(
        lambda: (p := payment_of(booking)).next_check_at is None or p.next_check_at > timezone.now(),
        what="the run to move the check on",
    )
    second = sweep()

    assert (first.payments_queued, second.payments_queued) == (1, 0)
    assert_charged_once(paying_idle, booking)


def test_a_due_run_waiting_in_a_backlog_is_not_queued_again_however_many_sweeps_pass(paying_idle, settings):
    """Chaos run on a slower host: with a claim window, every sweep past the window queued one more
    copy of each due payment's run while the payments queue drained (3,278 copies for about 1,100
    payments), each copy more work for the backlog it waited in. Then, with the sweeper's copy
    claimed until taken up, still one copy beside the run queued after commit (QA: 1,033 runs
    queued for 514 payments due): that run holds the same claim now."""
    settings.RECONCILE_CLAIM_TTL_S = 0.2
    booking = paying_idle.book()  # no worker yet: its run waits in the queue
    Payment.objects.filter(booking=booking).update(next_check_at=timezone.now() - timedelta(minutes=1))

    first = sweep()
    time.sleep(0.5)  # past any window
    second = sweep()

    assert (first.payments_queued, second.payments_queued) == (0, 0)
    assert [m.actor_name for m in queued(paying_idle.h.broker, PAYMENTS_QUEUE)] == [PAYMENT_RUN]
    paying_idle.start_worker()  # the run is taken up; the claim ends with it
    assert_charged_once(paying_idle, booking)
    Payment.objects.filter(booking=booking).update(next_check_at=timezone.now() - timedelta(minutes=1))
    assert sweep().payments_queued == 1  # due again: a new copy, nothing holds it back


def test_a_hold_nobody_decided_on_is_voided_before_it_would_lapse(paying, settings):
    # seven days pass in 20 s at the provider; we void 16 s before the lapse it announces
    paying.provider.set_faults(time_scale=7 * 24 * 3600 / 20)
    settings.PAYMENTS_LAPSE_MARGIN_S = 16
    paying.h.faults(async_confirm_delay_s=60)  # the partner keeps the booking pending
    booking = paying.book()
    wait_until(lambda: payment_of(booking).status == P.AUTHORIZED, what="the hold")
    held = payment_of(booking)
    lapses_at = held.authorization_expires_at
    assert held.next_check_at == lapses_at - timedelta(seconds=16)  # the sweeper's cue

    wait_until(lambda: timezone.now() >= held.next_check_at, what="the guard time", timeout_s=10)
    report = sweep()

    assert report.payments_queued == 1
    wait_until(lambda: payment_of(booking).status == P.VOIDED, what="the void")
    [intent] = paying.intents(booking)
    assert (intent["status"], intent["cancellation_reason"]) == ("canceled", "abandoned")  # not lapsed
    assert timezone.now() < lapses_at
    wait_for_money(booking, "released")


def test_a_run_asked_twice_at_rest_asks_the_provider_nothing(paying):
    booking = paying.book()
    assert_charged_once(paying, booking)
    calls = paying.provider.stats()["calls"]

    payment_run(booking.pk)
    payment_run(booking.pk)

    assert paying.provider.stats()["calls"] == calls
    assert [op[0] for op in operations(booking)] == ["authorize", "capture"]
