"""The money checks on what the product itself recorded: a refund, and a hold's release, the
provider refused every time it was asked, left to support by the payments app's own run
(`tests/payments/test_refund_refused_words.py`, `test_void_refused_words.py`), read back from the
database the way a chaos run reads it (`chaos.payments.money_truth`, `chaos.snapshot`) and its
mail as the sink keeps it, beside the provider's ground truth of it: judged owed back (or left
held) and told, with nothing to forgive."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from bookings.models import Notification, NotificationKind
from bookings.notifications import compose
from chaos import mailbox
from chaos.checks.money import check_money_owed, check_nothing_held
from chaos.model import Snapshot
from chaos.payments import money_truth
from chaos.snapshot import _bookings, _notifications
from payments.models import PaymentOperation
from payments.services.runs import payment_run
from tests.payments.test_refund_refused_words import refused_twice
from tests.payments.test_void_refused_words import LAPSES
from tests.payments.test_void_refused_words import refused_twice as release_refused_twice


class Provider:
    """The provider's ground truth of the payment: captured in full, no refund made, a 400 saved
    under the key of each refund asked."""

    def __init__(self, truth: dict[str, Any]) -> None:
        self.truth = truth

    def ground_truth(self) -> dict[str, Any]:
        return self.truth


def read_back(codes: list[str], provider: Provider, sink: Path) -> Snapshot:
    """The run's bookings, outbox and money as a chaos run reads them, and the sink's mails."""
    return Snapshot(
        profiles={},
        skew_s={},
        bookings=_bookings(codes),
        idempotency=[],
        reservations=[],
        observations=[],
        truth=[],
        clients=[],
        mails=mailbox.read(sink),
        notifications=_notifications(codes),
        money=money_truth(codes, provider),  # type: ignore[arg-type]
    )


def test_a_refund_the_payments_app_left_to_support_is_judged_owed_back_and_told(
    db, settings, tmp_path, django_capture_on_commit_callbacks
):
    payment = refused_twice(settings)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)
    booking = payment.booking
    [mailed] = Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY)
    (tmp_path / "20270101T120000.000000Z-1-000001.eml").write_bytes(compose(mailed).message().as_bytes())
    keys = PaymentOperation.objects.filter(payment=payment).values_list("idempotency_key", flat=True)
    provider = Provider(
        {
            "payment_intents": [
                {
                    "id": payment.provider_intent_id,
                    "status": "succeeded",
                    "amount": 36_000,
                    "amount_received": 36_000,
                    "metadata": {"payment": str(payment.pk), "booking": booking.reference},
                }
            ],
            "refunds": [],
            "idempotency_keys": [{"key": key, "status": 400} for key in keys],
        }
    )
    snapshot = read_back([booking.partner.code], provider, tmp_path)

    result = check_money_owed(snapshot)

    assert (result.passed, result.figures["refunds_refused_for_good"]) == (True, 1)
    [row] = snapshot.money.payments if snapshot.money else []
    assert (row.refused_refunds_owed, len(row.refund_refusals)) == (payment.amount, 2)
    assert snapshot.bookings[booking.reference].view_money["code"] == "refund_failed"


def test_a_release_the_payments_app_left_to_support_is_judged_refused_for_good_and_told(
    db, settings, tmp_path, django_capture_on_commit_callbacks
):
    payment = release_refused_twice(settings)  # a hold of 360, cancelled for free, its void refused twice
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)
    booking = payment.booking
    [mailed] = Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY)
    (tmp_path / "20270101T120000.000000Z-1-000001.eml").write_bytes(compose(mailed).message().as_bytes())
    keys = PaymentOperation.objects.filter(payment=payment).values_list("idempotency_key", flat=True)
    held = {
        "id": payment.provider_intent_id,
        "status": "requires_capture",
        "amount": 36_000,
        "amount_received": 0,
        "metadata": {"payment": str(payment.pk), "booking": booking.reference},
        "sandbox": {"authorization_lapses_at": LAPSES.isoformat(timespec="milliseconds")},
    }
    provider = Provider(
        {
            "payment_intents": [held],
            "refunds": [],
            "idempotency_keys": [{"key": key, "status": 400} for key in keys],
        }
    )

    snapshot = read_back([booking.partner.code], provider, tmp_path)
    result = check_nothing_held(snapshot)

    assert (result.passed, result.figures["releases_refused_for_good"]) == (True, 1)
    [row] = snapshot.money.payments if snapshot.money else []
    assert (row.release_refused, len(row.void_refusals), row.refund_refusals) == (True, 2, ())
    assert snapshot.bookings[booking.reference].view_money["code"] == "release_refused"
    # the same, the provider having released it: the customer is told of a hold that is gone
    provider.truth["payment_intents"] = [{**held, "status": "canceled"}]
    gone = check_nothing_held(read_back([booking.partner.code], provider, tmp_path))
    assert [v.kind for v in gone.violations] == ["release_refused_not_held"]


def test_an_ended_booking_support_took_up_is_read_with_the_end_its_timeline_shows(db):
    """The oracle reads where support got the booking off its timeline (its latest move into
    needs_attention), not off the product's own `attention_from`, and judges what that end owes."""
    from django.db import transaction

    from bookings.models import Actor, Booking
    from bookings.services import apply_transition, lock_booking
    from tests.reconciliation.paying import paying_booking

    payment = paying_booking(status="cancelled", booking_fields={"cancellation_fee": "90.00"})
    with transaction.atomic():
        booking = lock_booking(payment.booking_id)
        apply_transition(booking, "flag_for_attention", actor=Actor.WORKER, reason="compensation_failed")
    Booking.objects.filter(pk=booking.pk).update(attention_from="")  # not what the oracle reads
    provider = Provider(
        {
            "payment_intents": [
                {
                    "id": payment.provider_intent_id,
                    "status": "succeeded",
                    "amount": 36_000,
                    "amount_received": 36_000,
                    "metadata": {"payment": str(payment.pk), "booking": booking.reference},
                }
            ],
            "refunds": [],
        }
    )

    [row] = money_truth([booking.partner.code], provider).payments  # type: ignore[arg-type]

    assert (row.booking_status, row.attention_from, row.owed()) == (
        "needs_attention",
        "cancelled",
        Decimal("90.00"),
    )
