"""Support actions as services: permission, preview, effect through the usual actors, audit, and
a double submit doing nothing extra."""

from __future__ import annotations

import os
import pwd
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from bookings.cancelling import cancel_money
from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor, Booking, BookingEvent
from bookings.states import BookingState
from config.errors import InvalidTransition, NotFound, ValidationFailed
from reconciliation.services import support
from reconciliation.services.support.permissions import os_user
from tests.factories import PartnerAttemptFactory, PartnerReservationFactory, UserFactory
from tests.reconciliation.conftest import actor_names, calls
from tests.reconciliation.paying import paying_booking

S = BookingState
pytestmark = pytest.mark.django_db


@pytest.fixture
def as_support(support_user):
    return support.Operator.for_user(support_user)


@pytest.fixture
def as_ops(ops_user):
    return support.Operator.for_user(ops_user)


def _run(capture, action, booking, operator, token="tok", **kwargs):
    with capture(execute=True):
        result = support.support_action_run(
            action, booking_id=booking.pk, operator=operator, token=token, **kwargs
        )
    booking.refresh_from_db()
    return result


def _support_events(booking):
    return list(booking.events.filter(kind__startswith="support.").values_list("kind", "actor_label"))


# --- permissions ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("group", "allowed"),
    [
        ("support", ["sync", "retry"]),
        ("ops", ["sync", "retry", "compensate", "cancel", "resolve"]),
    ],
)
def test_groups_grant_the_actions_of_the_issue(group, allowed, support_user, ops_user):
    operator = support.Operator.for_user(support_user if group == "support" else ops_user)
    assert [name for name, spec in support.ACTIONS.items() if operator.can(spec["permission"])] == allowed


@pytest.mark.parametrize("action", ["compensate", "cancel", "resolve"])
def test_support_may_not_change_money_or_the_partners_state(
    action, make_booking, as_support, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="compensation_failed")

    with pytest.raises(support.SupportActionDenied):
        _run(django_capture_on_commit_callbacks, action, booking, as_support, outcome="failed", note="x")

    assert booking.status == S.NEEDS_ATTENTION
    assert not booking.events.exists()
    assert calls(broker, partner_queue) == []


def test_a_user_without_any_group_may_do_nothing(
    make_booking, partner_queue, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.PENDING_PARTNER)
    nobody = support.Operator.for_user(UserFactory(is_staff=True))

    with pytest.raises(support.SupportActionDenied):
        _run(django_capture_on_commit_callbacks, "sync", booking, nobody)


def test_shell_operator_is_ops_at_the_server(monkeypatch):
    monkeypatch.setattr("reconciliation.services.support.permissions.os_user", lambda: "alice")
    operator = support.Operator.shell()
    assert operator.label == "ops:alice"
    assert operator.can("bookings.compensate_booking")


def test_the_shell_s_os_user_is_its_real_uid_s_whatever_the_environment_says(monkeypatch):
    # getpass.getuser() reads these first: `USER=bob manage.py approve_refund 5` would be bob.
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "bob")

    operator = support.Operator.shell()

    assert operator.os_user == pwd.getpwuid(os.getuid()).pw_name != "bob"
    assert operator.label == f"ops:{operator.os_user}"


def test_a_uid_with_no_passwd_entry_is_named_by_its_number(monkeypatch):
    # A container's uid often has no entry: each uid stays its own person, never one "unknown".
    def no_entry(uid: int):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setenv("USER", "bob")

    assert os_user() == f"uid:{os.getuid()}"
    assert support.Operator.shell().label == f"ops:uid:{os.getuid()}"


def test_shell_operator_acting_as_an_unknown_user_is_refused(db):
    with pytest.raises(NotFound):
        support.Operator.shell("nobody-here")


def test_shell_operator_acting_as_an_empty_name_is_no_user_not_the_trusted_shell(db):
    with pytest.raises(NotFound, match="No active user ''"):
        support.Operator.shell("")


# --- sync ----------------------------------------------------------------
def test_sync_queues_the_sync_actor_and_records_a_named_correction(
    make_booking, as_support, support_user, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")

    result = _run(django_capture_on_commit_callbacks, "sync", booking, as_support, note="customer called")

    assert result.performed and result.message == "Sync queued."
    assert calls(broker, partner_queue) == [("sync_booking", [str(booking.pk)])]
    event = booking.events.get(kind="support.sync_requested")
    assert (event.actor, event.actor_label) == (Actor.SUPPORT, support_user.username)
    assert (event.from_state, event.to_state) == (S.NEEDS_ATTENTION, S.NEEDS_ATTENTION)
    assert event.data == {
        "action_token": "tok",
        "note": "customer called",
        "queue": booking.partner.queue_name,
        "inline": False,
    }


def test_double_submitted_sync_does_nothing_extra(
    make_booking, as_support, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.PENDING_PARTNER)
    _run(django_capture_on_commit_callbacks, "sync", booking, as_support, token="same")

    again = _run(django_capture_on_commit_callbacks, "sync", booking, as_support, token="same")

    assert not again.performed
    assert again.message.startswith("Already done by")
    assert len(_support_events(booking)) == 1
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_an_action_needs_a_token(make_booking, as_support):
    booking = make_booking(status=S.PENDING_PARTNER)
    with pytest.raises(ValidationFailed):
        support.support_sync(booking_id=booking.pk, operator=as_support, token=" ")


# --- retry ----------------------------------------------------------------
def test_retry_sends_a_needs_attention_booking_that_holds_nothing_back_to_submission(
    make_booking, as_support, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")

    result = _run(django_capture_on_commit_callbacks, "retry", booking, as_support, note="key rotated")

    assert (result.from_state, result.to_state) == (S.NEEDS_ATTENTION, S.REQUESTED)
    assert booking.status == S.REQUESTED and booking.attention_reason == ""
    assert calls(broker, partner_queue) == [("submit_booking", [str(booking.pk)])]
    event = booking.events.get()
    assert (event.kind, event.from_state, event.to_state) == (
        "support.retry_requested",
        "needs_attention",
        "requested",
    )
    assert event.data["attention_reason"] == "partner_401"


def test_retry_requeues_a_requested_booking_whose_message_was_lost(
    make_booking, as_support, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.REQUESTED)

    result = _run(django_capture_on_commit_callbacks, "retry", booking, as_support)

    assert result.performed and booking.status == S.REQUESTED
    assert actor_names(broker, partner_queue) == ["submit_booking"]


@pytest.mark.parametrize(
    ("state", "setup", "why"),
    [
        (S.UNKNOWN, None, "never a blind second create"),
        (S.NEEDS_ATTENTION, "fence", "never a blind second create"),
        (S.NEEDS_ATTENTION, "live", "would duplicate it"),
        (S.NEEDS_ATTENTION, "late", "deadline passed"),
        (S.CONFIRMED, None, "Only a requested or needs-attention booking"),
    ],
)
def test_retry_is_refused_when_it_could_duplicate_or_cannot_help(
    state, setup, why, make_booking, as_support, partner_queue, broker, django_capture_on_commit_callbacks
):
    deadline = (
        timezone.now() - timedelta(seconds=1) if setup == "late" else timezone.now() + timedelta(hours=1)
    )
    booking = make_booking(status=state, deadline=deadline)
    if setup == "fence":
        PartnerAttemptFactory(booking=booking, fence=True)
    if setup == "live":
        PartnerReservationFactory(booking=booking, status="pending")

    assert why in support.preview("retry", booking, live=False).refusal
    with pytest.raises(InvalidTransition, match=why):
        _run(django_capture_on_commit_callbacks, "retry", booking, as_support)

    assert booking.status == state
    assert _support_events(booking) == []
    assert calls(broker, partner_queue) == []


@pytest.mark.parametrize(
    ("held", "keys", "refused"),
    [
        ("cancelled", True, True),  # the partner took it back: the key hands back the same one
        ("rejected", True, True),
        ("lost", True, False),  # a partner that loses a reservation forgets its key: a new create
        ("cancelled", False, False),  # no key sent: every create makes a new reservation
        ("cancelled-other-reference", True, False),  # linked by support, not made by our key
    ],
)
def test_retry_is_refused_when_our_key_already_made_a_reservation_the_partner_ended(
    held,
    keys,
    refused,
    make_booking,
    as_support,
    partner,
    partner_queue,
    broker,
    django_capture_on_commit_callbacks,
):
    if not keys:
        partner.capabilities = ["lookup_by_reference", "webhooks"]
        partner.save(update_fields=["capabilities"])
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    status, _, other = held.partition("-")
    PartnerReservationFactory(
        booking=booking, status=status, client_reference="BK-OTHER1" if other else booking.reference
    )

    shown = support.preview("retry", booking, live=False)

    assert (booking.partner_key in shown.refusal) is refused, shown.refusal
    assert len(shown.effects) == len(set(shown.effects))  # each effect said once
    if refused:
        assert "Cancel it on the customer's behalf, or resolve it" in shown.refusal
        with pytest.raises(InvalidTransition, match="would only hand that back"):
            _run(django_capture_on_commit_callbacks, "retry", booking, as_support)
        assert calls(broker, partner_queue) == []
    else:
        assert shown.allowed
        _run(django_capture_on_commit_callbacks, "retry", booking, as_support)
        assert calls(broker, partner_queue) == [("submit_booking", [str(booking.pk)])]


# --- compensate ----------------------------------------------------------------
def test_compensate_fails_the_booking_and_cancels_its_live_reservations(
    make_booking, as_ops, ops_user, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    live = PartnerReservationFactory(booking=booking, status="confirmed")
    PartnerReservationFactory(booking=booking, status="cancelled")

    result = _run(django_capture_on_commit_callbacks, "compensate", booking, as_ops, note="double hold")

    live.refresh_from_db()
    assert (result.from_state, result.to_state) == (S.NEEDS_ATTENTION, S.FAILED)
    assert live.compensation_requested_at is not None and live.compensation_reason == "booking_failed"
    assert calls(broker, partner_queue) == [("compensate_reservation", [live.pk])]
    assert list(booking.events.values_list("kind", "actor_label")) == [
        ("support.compensated", ops_user.username),
        ("partner.compensation.requested", ops_user.username),
    ]
    assert booking.events.get(kind="support.compensated").data["cancel"] == [live.partner_ref]


def test_compensate_while_fenced_also_syncs_to_find_what_the_unknown_create_made(
    make_booking, as_ops, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.UNKNOWN)
    PartnerAttemptFactory(booking=booking, fence=True)

    _run(django_capture_on_commit_callbacks, "compensate", booking, as_ops)

    assert booking.status == S.FAILED
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_double_submitted_compensation_does_nothing_extra(
    make_booking, as_ops, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.PENDING_PARTNER)
    PartnerReservationFactory(booking=booking, status="pending")
    _run(django_capture_on_commit_callbacks, "compensate", booking, as_ops, token="t1")

    again = _run(django_capture_on_commit_callbacks, "compensate", booking, as_ops, token="t1")

    assert not again.performed
    assert (again.from_state, again.to_state) == (S.PENDING_PARTNER, S.FAILED)
    assert booking.events.count() == 2
    assert actor_names(broker, partner_queue) == ["compensate_reservation"]


def test_a_new_compensation_of_a_failed_booking_is_refused(
    make_booking, as_ops, partner_queue, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.CONFIRMED)
    with pytest.raises(InvalidTransition, match="Use cancel for a confirmed booking"):
        _run(django_capture_on_commit_callbacks, "compensate", booking, as_ops)


# --- cancel ----------------------------------------------------------------
def test_cancel_on_the_customers_behalf_runs_the_customers_cancellation(
    make_booking, as_ops, ops_user, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.CONFIRMED)
    PartnerReservationFactory(booking=booking, status="confirmed")

    result = _run(django_capture_on_commit_callbacks, "cancel", booking, as_ops, note="asked by phone")

    assert (result.from_state, result.to_state) == (S.CONFIRMED, S.CANCEL_REQUESTED)
    assert actor_names(broker, partner_queue) == ["cancel_booking"]
    assert list(booking.events.values_list("kind", "actor", "actor_label", "from_state", "to_state")) == [
        ("support.cancel_requested", Actor.SUPPORT, ops_user.username, S.CONFIRMED, S.CANCEL_REQUESTED)
    ]  # one row for the one move: the correction is the cancellation's own row
    again = _run(django_capture_on_commit_callbacks, "cancel", booking, as_ops)
    assert not again.performed and booking.events.count() == 1


def _money_case(case: str) -> Booking:
    """A booking for each thing a cancel does to the money (`cancelling.cancel_money`)."""
    if case == "no_payment":
        return PartnerReservationFactory(status="confirmed").booking
    if case == "held":  # not confirmed yet: cancelling is free, the hold let go
        return paying_booking(status=S.PENDING_PARTNER, payment_status="authorized").booking
    payment = paying_booking(status=S.CONFIRMED, payment_status="captured")
    charged = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"))).as_json()
    terms = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": 25} if case == "fee" else {}
    Booking.objects.filter(pk=payment.booking_id).update(customer_money=charged, **terms)
    return Booking.objects.get(pk=payment.booking_id)


@pytest.mark.parametrize(
    ("case", "outcome", "words"),
    [
        ("refund", "full_refund", "we refund the 360.00 EUR you paid to your card, in full."),
        (
            "fee",
            "refund_less_fee",
            "we keep the cancellation fee of 90.00 EUR and refund the other 270.00 EUR",
        ),
        (
            "held",
            "release",
            "we release the 360.00 EUR we are holding on your card: you will not be charged.",
        ),
        ("no_payment", "no_payment", "This booking takes no payment: cancelling costs nothing"),
    ],
)
def test_the_cancel_preview_says_what_it_does_to_the_money_as_the_customers_page_does(
    db, case, outcome, words
):
    # A tester confirmed a cancel on behalf of a charged booking: 90.00 refunded and the customer
    # mailed, none of which the preview said; and of a booking that takes no payment it said
    # nothing at all. The words are the customer's cancel page's, by its one rule (cancel_money).
    booking = _money_case(case)
    told = cancel_money(booking, at=timezone.now())

    shown = support.preview("cancel", booking, live=False)

    assert shown.effects[-1] == f"Money: {told.text} {told.why}".rstrip()
    assert words in shown.effects[-1]
    assert shown.as_dict()["money"] == {
        "outcome": outcome,
        "text": told.text,
        "why": told.why,
        "currency": told.currency,
        "fee": f"{told.fee:.2f}",
        "refund": f"{told.refund:.2f}",
        "released": f"{told.released:.2f}",
    }
    assert support.preview("sync", booking, live=False).as_dict()["money"] is None  # only a cancel's


def test_cancel_of_a_settled_booking_is_refused(make_booking, as_ops, django_capture_on_commit_callbacks):
    booking = make_booking(status=S.EXPIRED)
    with pytest.raises(InvalidTransition, match="can no longer be cancelled"):
        _run(django_capture_on_commit_callbacks, "cancel", booking, as_ops, token="other")


# --- resolve ----------------------------------------------------------------
def test_resolve_needs_a_note(make_booking, as_ops, django_capture_on_commit_callbacks):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    with pytest.raises(ValidationFailed, match="note is required"):
        _run(django_capture_on_commit_callbacks, "resolve", booking, as_ops, outcome="failed", note="  ")
    assert booking.status == S.NEEDS_ATTENTION


def test_resolve_to_confirmed_when_the_partner_confirmed(
    make_booking, as_ops, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_401")
    PartnerReservationFactory(booking=booking, status="confirmed")

    result = _run(
        django_capture_on_commit_callbacks,
        "resolve",
        booking,
        as_ops,
        outcome="confirmed",
        note="partner says ok",
    )

    assert (result.from_state, result.to_state) == (S.NEEDS_ATTENTION, S.CONFIRMED)
    event = booking.events.get(kind="support.resolved")
    assert event.data["outcome"] == "confirmed" and event.data["note"] == "partner says ok"
    assert event.data["attention_reason"] == "partner_401"
    assert calls(broker, partner_queue) == []


@pytest.mark.parametrize(
    ("outcome", "reservation", "why"),
    [
        ("confirmed", None, "no confirmed reservation"),
        ("confirmed", "pending", "no confirmed reservation"),
        ("failed", "confirmed", "compensate instead"),
        ("cancelled", "pending", "compensate instead"),
        ("won", None, "Unknown outcome"),
    ],
)
def test_resolve_refuses_an_outcome_the_partner_contradicts(
    outcome, reservation, why, make_booking, as_ops, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    if reservation:
        PartnerReservationFactory(booking=booking, status=reservation)

    with pytest.raises(InvalidTransition, match=why):
        _run(django_capture_on_commit_callbacks, "resolve", booking, as_ops, outcome=outcome, note="n")

    assert booking.status == S.NEEDS_ATTENTION
    assert not BookingEvent.objects.filter(booking=booking).exists()


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_resolve_to_failed_or_cancelled_when_nothing_is_live(
    outcome, make_booking, as_ops, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="compensation_failed")
    PartnerReservationFactory(booking=booking, status="cancelled")

    _run(django_capture_on_commit_callbacks, "resolve", booking, as_ops, outcome=outcome, note="called them")

    assert booking.status == outcome


def test_resolve_only_a_booking_that_needs_attention(
    make_booking, as_ops, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.PENDING_PARTNER)
    with pytest.raises(InvalidTransition, match="Only a booking that needs attention"):
        _run(django_capture_on_commit_callbacks, "resolve", booking, as_ops, outcome="failed", note="n")


# --- previews ----------------------------------------------------------------
def test_preview_falls_back_to_the_last_known_state_when_the_partner_cannot_be_asked(make_booking):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="partner_cancelled_confirmed")
    PartnerReservationFactory(booking=booking, partner_ref="R-known", status="confirmed", version=3)

    shown = support.preview("compensate", booking)

    assert shown.allowed
    assert not shown.partner.live
    assert shown.partner.note.startswith("Live lookup failed")
    assert "Showing the last known state" in shown.partner.note
    assert [(p.partner_ref, p.ours, p.theirs, p.mismatch) for p in shown.pairs] == [
        ("R-known", "confirmed", "confirmed", False)
    ]
    assert shown.effects == [
        "needs_attention → failed.",
        "Cancel R-known (confirmed) at the partner, then verify by a lookup.",
    ]
    assert shown.as_dict()["ours"]["status"] == "needs_attention"


def test_preview_of_a_partner_without_lookup_says_it_cannot_be_asked(make_booking, legacy_partner):
    booking = make_booking(status=S.UNKNOWN)
    booking.partner = legacy_partner
    booking.save(update_fields=["partner"])

    shown = support.preview("sync", booking)

    assert not shown.partner.live
    assert "cannot be asked by our reference" in shown.partner.note


def test_preview_resolve_lists_each_outcome_with_why_not(make_booking):
    booking = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(booking=booking, status="confirmed")

    shown = support.preview("resolve", booking, live=False)

    refusals = {value: refusal for value, _, refusal in shown.outcomes}
    assert refusals["confirmed"] == ""
    assert "compensate instead" in refusals["failed"]
    assert shown.needs_note and shown.allowed


def test_preview_of_an_unknown_action_is_refused(make_booking):
    with pytest.raises(ValidationFailed):
        support.preview("delete", make_booking())


def test_compensate_drives_a_stalled_cancel_again(
    make_booking, as_ops, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.NEEDS_ATTENTION, attention_reason="compensation_failed")
    stalled = PartnerReservationFactory(
        booking=booking,
        status="confirmed",
        compensation_requested_at=timezone.now() - timedelta(hours=1),
        compensation_reason="duplicate",
    )
    assert "was never verified" in support.preview("compensate", booking, live=False).effects[1]

    _run(django_capture_on_commit_callbacks, "compensate", booking, as_ops)

    assert booking.status == S.FAILED
    assert calls(broker, partner_queue) == [("compensate_reservation", [stalled.pk])]
    assert booking.events.get(kind="support.compensated").data["cancel"] == [stalled.partner_ref]
