"""A support action token is for one ask: the same token with the same ask is a double submit
(nothing more is done), and with another booking, amount, outcome, action or operator it is a
conflict, refused with nothing done, from the services and the commands alike (the console's
forms are in test_admin.py, test_payment_console.py and test_orphan_actions.py)."""

from __future__ import annotations

import io
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from bookings.states import BookingState
from config.errors import Conflict, InvalidTransition
from partners.models import InboundState
from payments.models import PaymentOperation
from reconciliation.services import support
from reconciliation.services.support import payments as money
from tests.factories import InboundEventFactory, PartnerReservationFactory, UserFactory
from tests.reconciliation.conftest import actor_names
from tests.reconciliation.paying import paying_booking, support_rows
from tests.reconciliation.test_commands import run

S = BookingState
pytestmark = pytest.mark.django_db


@pytest.fixture
def as_ops(ops_user):
    return support.Operator.for_user(ops_user)


@pytest.fixture
def as_other_ops(groups):
    user = UserFactory(username=f"ops2-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.set([groups["ops"]])
    return support.Operator.for_user(user)


# --- the services --------------------------------------------------------------------------------
def test_a_token_used_on_one_booking_is_refused_on_another_and_nothing_is_done(
    make_booking, as_ops, partner_queue, broker, django_capture_on_commit_callbacks
):
    first, second = make_booking(status=S.PENDING_PARTNER), make_booking(status=S.PENDING_PARTNER)
    with django_capture_on_commit_callbacks(execute=True):
        support.support_sync(booking_id=first.pk, operator=as_ops, token="tok-1")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Conflict) as refused:
        support.support_sync(booking_id=second.pk, operator=as_ops, token="tok-1")

    assert (refused.value.code, refused.value.http_status) == ("token_reused", 409)
    assert list(refused.value.fields) == ["token"]
    assert refused.value.message.startswith(
        f"This action token was already used for sync of {first.reference} by {as_ops.label} at "
    )
    assert (
        f"it cannot also be used for sync of {second.reference} by {as_ops.label}." in refused.value.message
    )
    assert not second.events.exists()
    assert actor_names(broker, partner_queue) == ["sync_booking"]  # the first booking's only


def test_the_same_ask_again_is_already_done_and_another_action_or_operator_is_refused(
    make_booking, as_ops, as_other_ops, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    with django_capture_on_commit_callbacks(execute=True):
        support.support_action_run("sync", booking_id=booking.pk, operator=as_ops, token="tok-2")
        again = support.support_action_run("sync", booking_id=booking.pk, operator=as_ops, token="tok-2")

    with pytest.raises(Conflict, match="already used for sync of"):
        support.support_action_run("retry", booking_id=booking.pk, operator=as_ops, token="tok-2")
    with pytest.raises(Conflict, match=f"cannot also be used for sync of .* by {as_other_ops.label}"):
        support.support_action_run("sync", booking_id=booking.pk, operator=as_other_ops, token="tok-2")

    assert not again.performed and again.message.startswith("Already done by")
    booking.refresh_from_db()
    assert booking.status == S.NEEDS_ATTENTION  # the retry did not run
    assert list(booking.events.values_list("kind", flat=True)) == ["support.sync_requested"]
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_resolve_with_the_same_token_and_another_outcome_is_refused(
    make_booking, as_ops, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(booking=booking, status="cancelled")
    with django_capture_on_commit_callbacks(execute=True):
        support.support_action_run(
            "resolve", booking_id=booking.pk, operator=as_ops, token="tok-3", outcome="failed", note="checked"
        )

    with pytest.raises(Conflict, match=r"\(outcome failed\).* \(outcome cancelled\)"):
        support.support_action_run(
            "resolve", booking_id=booking.pk, operator=as_ops, token="tok-3", outcome="cancelled", note="x"
        )
    same = support.support_action_run(
        "resolve", booking_id=booking.pk, operator=as_ops, token="tok-3", outcome="failed", note="checked"
    )

    assert not same.performed
    booking.refresh_from_db()
    assert booking.status == S.FAILED
    assert booking.events.filter(kind="support.resolved").count() == 1


def test_a_refused_action_leaves_its_token_unused(make_booking, as_ops, django_capture_on_commit_callbacks):
    confirmed = make_booking(status=S.CONFIRMED)
    stuck = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")

    with pytest.raises(InvalidTransition):
        support.support_action_run("compensate", booking_id=confirmed.pk, operator=as_ops, token="tok-4")
    with django_capture_on_commit_callbacks(execute=True):
        retried = support.support_action_run("retry", booking_id=stuck.pk, operator=as_ops, token="tok-4")

    from reconciliation.models import ActionToken

    assert retried.performed
    assert ActionToken.objects.get(token="tok-4").targets == [stuck.reference]


def test_a_refund_with_the_same_token_and_another_amount_is_refused(as_ops):
    payment = paying_booking()
    money.support_refund(booking_id=payment.booking_id, operator=as_ops, token="tok-5", amount="10")

    same = money.support_refund(booking_id=payment.booking_id, operator=as_ops, token="tok-5", amount="10.00")
    with pytest.raises(Conflict, match=r"\(amount 10\).* \(amount 20\)"):
        money.support_refund(booking_id=payment.booking_id, operator=as_ops, token="tok-5", amount="20")
    with pytest.raises(Conflict, match="cannot also be used for void_payment"):
        money.support_void(booking_id=payment.booking_id, operator=as_ops, token="tok-5")

    assert not same.performed and same.message.startswith("Already done by")
    assert [row.kind for row in support_rows(payment.booking)] == ["support.refund_requested"]
    assert list(PaymentOperation.objects.filter(payment=payment).values_list("amount", flat=True)) == [
        Decimal("10.00")
    ]


# --- the commands ----------------------------------------------------------------------------------
def test_a_command_with_a_token_used_for_another_booking_exits_non_zero_and_does_nothing(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    first, second = make_booking(status=S.UNKNOWN), make_booking(status=S.UNKNOWN)
    run(
        "sync_booking",
        first.reference,
        "--token",
        "ops-7",
        "--yes",
        capture=django_capture_on_commit_callbacks,
    )

    out = io.StringIO()
    with pytest.raises(CommandError, match=r"sync: nothing was done \(1 refused\)"):
        call_command("sync_booking", second.reference, "--token", "ops-7", "--yes", "--json", stdout=out)

    [result] = json.loads(out.getvalue())["results"]
    assert result["error"]["code"] == "token_reused"
    assert f"already used for sync of {first.reference}" in result["error"]["message"]
    assert not second.events.exists()
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_one_token_covers_a_command_over_several_bookings_and_its_rerun_does_nothing(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    bookings = [make_booking(status=S.UNKNOWN) for _ in range(2)]
    refs = [b.reference for b in bookings]
    done = json.loads(
        run(
            "sync_booking",
            *refs,
            "--token",
            "ops-8",
            "--yes",
            "--json",
            capture=django_capture_on_commit_callbacks,
        )
    )
    again = json.loads(run("sync_booking", *reversed(refs), "--token", "ops-8", "--yes", "--json"))
    # one of them again (a re-run over a subset, a bulk action whose list changed): already done
    part = json.loads(run("sync_booking", refs[0], "--token", "ops-8", "--yes", "--json"))
    with pytest.raises(CommandError, match="nothing was done"):  # another booking: another ask
        run("sync_booking", make_booking(status=S.UNKNOWN).reference, "--token", "ops-8", "--yes")

    assert [r["result"]["performed"] for r in done["results"]] == [True, True]
    assert [r["result"]["performed"] for r in again["results"]] == [False, False]
    assert [r["result"]["performed"] for r in part["results"]] == [False]
    assert actor_names(broker, partner_queue) == ["sync_booking"] * 2


def test_replay_with_a_token_used_for_another_webhook_is_refused(partner, make_booking):
    from tests.reconciliation.test_admin import _signed_inbound

    first = _signed_inbound(partner, make_booking(status=S.PENDING_PARTNER).reference)
    second = InboundEventFactory(partner=partner, state=InboundState.FAILED)
    run("replay_inbound_event", str(first.pk), "--token", "r-9")

    out = io.StringIO()
    with pytest.raises(CommandError, match="Nothing was replayed"):
        call_command("replay_inbound_event", str(second.pk), "--json", "--token", "r-9", stdout=out)

    [row] = json.loads(out.getvalue())["results"]
    assert row["error"]["code"] == "token_reused"
    second.refresh_from_db()
    assert second.state == InboundState.FAILED  # not replayed


def test_a_replay_cut_short_before_its_support_row_replays_again_with_the_same_token(
    partner, make_booking, monkeypatch
):
    """The database went between the replay and its row on the timeline: the run with the same
    token replays again (the one door ignores what it already holds) and writes the row, rather
    than answering "already replayed" for a replay the timeline never shows."""
    from django.db import OperationalError

    from reconciliation.services.support import replay
    from tests.reconciliation.test_admin import _signed_inbound

    booking = make_booking(status=S.PENDING_PARTNER)
    event = _signed_inbound(partner, booking.reference)
    record = replay._record_replayed

    def database_gone(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(replay, "_record_replayed", database_gone)
    with pytest.raises(OperationalError):
        support.support_replay_inbound(event_id=event.pk, operator=support.Operator.shell(), token="r-cut")
    assert not booking.events.filter(kind="support.webhook_replayed").exists()

    monkeypatch.setattr(replay, "_record_replayed", record)
    again = support.support_replay_inbound(
        event_id=event.pk, operator=support.Operator.shell(), token="r-cut"
    )

    assert again.performed
    assert booking.events.filter(kind="support.webhook_replayed").count() == 1
