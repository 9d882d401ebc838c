"""The honest-status contract (docs/design.md): `derive` over every state and fact, the one
writer numbering each visible change once, the notification it owes, the publish after commit,
and a random walk of transitions and partner facts that never breaks a rule."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.db import transaction
from django.utils import timezone
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from bookings import customer_view, live, ports
from bookings.customer_money import PaymentFacts, money_of
from bookings.customer_view import Facts, View, derive
from bookings.models import Actor, Booking, BookingEvent, Notification, NotificationState
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState, CustomerMessage
from config import embedded_redis
from config.redis_client import redis_client
from partners.connectors.base import CallResult
from partners.models import Outcome, PartnerAttempt, PartnerReservation, ReservationStatus
from partners.services import compensation
from partners.services.observations import reconcile_booking
from tests.factories import BookingFactory, PartnerAttemptFactory, PartnerReservationFactory
from tests.helpers import wait_until

S = BookingState
M = CustomerMessage


def view(status: str, message: str) -> View:
    return View(status, message)


PENDING = {
    S.REQUESTED: M.RECEIVED,
    S.SUBMITTING: M.SUBMITTING,
    S.PENDING_PARTNER: M.PARTNER_CONFIRMING,
    S.UNKNOWN: M.CHECKING,
}
GENERIC_DISRUPTION = view("disrupted", M.DISRUPTED)

# state -> the view (never confirmed, nothing held), (never confirmed, something may be held),
# (confirmed shown before, nothing held), (confirmed shown before, something may be held).
TABLE: dict[str, tuple[View, View, View, View]] = {
    S.AWAITING_PAYMENT: (
        view("pending", M.CHECKING_PAYMENT),
        view("pending", M.CHECKING_PAYMENT),
        GENERIC_DISRUPTION,
        GENERIC_DISRUPTION,
    ),
    **{
        state: (
            view("pending", message),
            view("pending", message),
            GENERIC_DISRUPTION,
            GENERIC_DISRUPTION,
        )
        for state, message in PENDING.items()
    },
    S.CONFIRMED: (view("confirmed", M.CONFIRMED),) * 4,
    S.REJECTED: (
        view("failed", M.DECLINED),
        view("pending", M.RELEASING),
        view("disrupted", M.DISRUPTED_ENDED),
        GENERIC_DISRUPTION,
    ),
    S.FAILED: (
        view("failed", M.NOT_COMPLETED),
        view("pending", M.RELEASING),
        view("disrupted", M.DISRUPTED_ENDED),
        GENERIC_DISRUPTION,
    ),
    S.EXPIRED: (
        view("failed", M.NOT_CONFIRMED_IN_TIME),
        view("pending", M.RELEASING),
        view("disrupted", M.DISRUPTED_ENDED),
        GENERIC_DISRUPTION,
    ),
    S.CANCEL_REQUESTED: (view("cancelling", M.CANCELLING),) * 4,
    S.CANCELLED: (view("cancelled", M.CANCELLED),) * 4,
    S.NEEDS_ATTENTION: (
        view("pending", M.WITH_SUPPORT),
        view("pending", M.WITH_SUPPORT),
        GENERIC_DISRUPTION,
        GENERIC_DISRUPTION,
    ),
}


# --- derive: the rule ---------------------------------------------------------------------------
def test_the_table_covers_every_state():
    assert set(TABLE) == set(S)


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize(
    ("column", "confirmed_shown", "partner_may_hold"),
    [(0, False, False), (1, False, True), (2, True, False), (3, True, True)],
)
def test_derive_over_every_state_and_fact(state, column, confirmed_shown, partner_may_hold):
    facts = Facts(partner_may_hold=partner_may_hold, confirmed_shown=confirmed_shown)

    assert derive(state, facts) == TABLE[state][column]


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("partner_cancelled_confirmed", M.DISRUPTED_PARTNER_CANCELLED),
        ("partner_lost_reservation", M.DISRUPTED_PARTNER_LOST),
        ("partner_mismatch", M.DISRUPTED_PARTNER_CHANGED),
        ("compensation_failed", M.DISRUPTED),
    ],
)
def test_a_confirmed_booking_with_support_says_what_the_partner_did(reason, message):
    facts = Facts(confirmed_shown=True, attention_reason=reason)

    assert derive(S.NEEDS_ATTENTION, facts) == view("disrupted", message)
    # before any confirmation the reason is support's business, not the customer's
    assert derive(S.NEEDS_ATTENTION, Facts(attention_reason=reason)) == view("pending", M.WITH_SUPPORT)


@pytest.mark.parametrize(
    "reason", ["worker_gave_up", "partner_401", "partner_data_refused", "compensation_failed"]
)
def test_a_confirmed_booking_with_support_for_a_problem_of_ours_does_not_blame_the_partner(reason):
    shown = derive(S.NEEDS_ATTENTION, Facts(confirmed_shown=True, attention_reason=reason))

    assert CustomerMessage(shown.message).label == (
        "There is a problem with your confirmed booking that our support team is sorting out. "
        "We will tell you what happens next."
    )


def test_a_cancel_that_did_not_complete_is_still_cancelling_while_support_has_it():
    # asked, not done: still cancelling, support has it (never sent: nothing to cancel with them)
    asked = Facts(cancel_asked=True, attention_reason="compensation_failed")
    assert derive(S.NEEDS_ATTENTION, asked) == view("cancelling", M.CANCEL_WITH_SUPPORT)
    assert derive(S.NEEDS_ATTENTION, replace(asked, submitted=False)) == view(
        "cancelling", M.CANCELLING_UNSENT
    )
    # confirmed first: disrupted, as any confirmed booking support has (its cancel may be asked
    # again), saying it is the cancel that did not complete
    assert derive(S.NEEDS_ATTENTION, replace(asked, confirmed_shown=True)) == view(
        "disrupted", M.DISRUPTED_CANCEL_NOT_DONE
    )
    # unless the partner did something since (it cancelled the confirmed booking itself)
    assert derive(
        S.NEEDS_ATTENTION,
        replace(asked, confirmed_shown=True, attention_reason="partner_cancelled_confirmed"),
    ) == view("disrupted", M.DISRUPTED_PARTNER_CANCELLED)
    # no cancel stands: support reviews the booking
    assert derive(S.NEEDS_ATTENTION, Facts(attention_reason="compensation_failed")) == view(
        "pending", M.WITH_SUPPORT
    )


ENDED = [S.REJECTED, S.FAILED, S.EXPIRED, S.CANCELLED]


@pytest.mark.parametrize("ended", ENDED)
@pytest.mark.parametrize(
    ("confirmed_shown", "partner_may_hold", "submitted"),
    [
        (False, False, True),
        (False, True, True),
        (True, False, True),
        (True, True, True),
        (False, False, False),
    ],
)
@pytest.mark.parametrize(
    "reason", ["compensation_failed", "worker_gave_up", "outcome_unknown_no_lookup", "partner_mismatch"]
)
def test_an_ended_booking_support_takes_up_is_shown_as_that_end(
    ended, confirmed_shown, partner_may_hold, submitted, reason
):
    # An end carries no attention reason; support's, whatever it is, is not the customer's news.
    facts = Facts(partner_may_hold=partner_may_hold, confirmed_shown=confirmed_shown, submitted=submitted)

    with_support = replace(facts, attention_reason=reason, ended_as=ended)

    assert derive(S.NEEDS_ATTENTION, with_support) == derive(ended, facts)


@pytest.mark.parametrize("state", list(PENDING))
def test_a_long_wait_is_said_while_awaiting_the_partner_only(state):
    assert derive(state, Facts(slow=True)) == view("pending", M.TAKING_LONGER)
    assert derive(S.NEEDS_ATTENTION, Facts(slow=True)) == view("pending", M.WITH_SUPPORT)
    assert derive(S.EXPIRED, Facts(slow=True, partner_may_hold=True)) == view("pending", M.RELEASING)


def test_no_status_message_speaks_of_money():
    # what happened to the money is told apart (CustomerMoney), from the provider's truth; a
    # status message names the payment only as the reason a booking did not go ahead
    words = " ".join(message.label.lower() for message in CustomerMessage)

    assert not {"charge", "refund", "paid", "money", "held"} & set(words.replace(".", " ").split())
    assert "charg" not in words


# --- refresh and apply_transition: the one writer ----------------------------------------------
def _locked(booking: Booking) -> Booking:
    return lock_booking(booking.pk)


def _view_rows(booking: Booking) -> list[BookingEvent]:
    return list(BookingEvent.objects.filter(booking=booking, kind="customer.view_changed"))


def test_refresh_never_numbers_an_unchanged_view(db, django_capture_on_commit_callbacks):
    booking = BookingFactory(status=S.PENDING_PARTNER)  # shown as its state derives

    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        changed = customer_view.refresh(_locked(booking), actor=Actor.WORKER)

    booking.refresh_from_db()
    assert changed is False
    assert booking.status_version == 1
    assert _view_rows(booking) == []
    assert callbacks == []


def test_a_fence_resolved_after_expiry_turns_releasing_into_failed_once(
    db, django_capture_on_commit_callbacks
):
    # given a booking that expired while its create's outcome was unknown
    booking = BookingFactory(status=S.UNKNOWN)
    fence = PartnerAttemptFactory(booking=booking, fence=True)
    with transaction.atomic():
        apply_transition(_locked(booking), "expire", actor=Actor.SWEEPER)
    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message, booking.status_version) == (
        "pending",
        M.RELEASING,
        2,
    )

    # when a lookup proves the partner holds nothing and the view is refreshed, twice
    PartnerAttempt.objects.filter(pk=fence.pk).update(resolved_at=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        first = customer_view.refresh(_locked(booking), actor=Actor.WORKER)
        second = customer_view.refresh(_locked(booking), actor=Actor.WORKER)

    # then it is failed, numbered once, on one timeline row, published once, mailed once
    booking.refresh_from_db()
    assert (first, second) == (True, False)
    assert (booking.customer_status, booking.customer_message, booking.status_version) == (
        "failed",
        M.NOT_CONFIRMED_IN_TIME,
        3,
    )
    [row] = _view_rows(booking)
    assert row.data == {
        "customer_view": {
            "from": "pending",
            "to": "failed",
            "message": "not_confirmed_in_time",
            "status_version": 3,
        }
    }
    assert list(Notification.objects.filter(booking=booking).values_list("status_version", "kind")) == [
        (3, "not_confirmed")
    ]
    assert len(callbacks) == 2  # the publish, and the notification's message


HELD = PaymentFacts("held", "EUR", Decimal("360.00"))
RELEASED = PaymentFacts("released", "EUR", Decimal("360.00"))


@pytest.mark.parametrize(
    ("money_after", "first_mail", "mailed"),
    [
        (None, NotificationState.SENT, ["not_confirmed"]),
        (RELEASED, NotificationState.SENT, ["not_confirmed", "not_confirmed"]),
        # the first was refused on every attempt, never sent: it told the customer nothing
        (None, NotificationState.FAILED, ["not_confirmed", "not_confirmed"]),
    ],
    ids=["the-same-words", "other-money-words", "the-same-words-never-sent"],
)
def test_a_view_shown_again_is_mailed_again_only_with_news(db, money_after, first_mail, mailed):
    # given a paying booking the partner declined, shown failed with its hold, and mailed so
    booking = BookingFactory(status=S.PENDING_PARTNER, customer_money=money_of(HELD).as_json())
    with transaction.atomic():
        apply_transition(_locked(booking), "reject", actor=Actor.WORKER)
    Notification.objects.filter(booking=booking).update(state=first_mail)
    # when a reservation for it shows up (releasing, not mailed), then is cancelled and verified
    reservation = PartnerReservationFactory(booking=booking, status=ReservationStatus.CONFIRMED)
    with transaction.atomic():
        customer_view.refresh(_locked(booking), actor=Actor.WORKER)
    PartnerReservation.objects.filter(pk=reservation.pk).update(
        status=ReservationStatus.CANCELLED,
        compensation_requested_at=timezone.now(),
        compensated_at=timezone.now(),
    )
    with transaction.atomic():
        customer_view.refresh(_locked(booking), actor=Actor.WORKER, payment=money_after)

    # then failed again is mailed only if its money's words are news (the hold released meanwhile)
    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message, booking.status_version) == (
        "failed",
        M.DECLINED,
        4,
    )
    assert [row.data["customer_view"]["to"] for row in _view_rows(booking)] == ["pending", "failed"]
    assert list(Notification.objects.filter(booking=booking).values_list("kind", flat=True)) == mailed


def test_a_transition_carries_its_view_change_on_its_own_row(db):
    booking = BookingFactory(status=S.PENDING_PARTNER)

    with transaction.atomic():
        apply_transition(_locked(booking), "confirm", actor=Actor.WEBHOOK)

    booking.refresh_from_db()
    assert (booking.customer_status, booking.status_version) == ("confirmed", 2)
    assert booking.confirmed_shown_at is not None
    row = BookingEvent.objects.get(booking=booking, kind="booking.confirmed")
    assert row.data["customer_view"] == {
        "from": "pending",
        "to": "confirmed",
        "message": "confirmed",
        "status_version": 2,
    }
    assert _view_rows(booking) == []
    assert list(Notification.objects.filter(booking=booking).values_list("status_version", "kind")) == [
        (2, "confirmed")
    ]


def test_a_transition_the_customer_does_not_see_is_not_numbered(db):
    # given a booking whose customer was told it is taking longer
    booking = BookingFactory(status=S.SUBMITTING, customer_message=M.TAKING_LONGER)
    Booking.objects.filter(pk=booking.pk).update(created_at=timezone.now() - timedelta(hours=1))

    with transaction.atomic():
        apply_transition(_locked(booking), "mark_partner_pending", actor=Actor.WORKER)

    booking.refresh_from_db()
    assert (booking.status, booking.customer_message, booking.status_version) == (
        S.PENDING_PARTNER,
        M.TAKING_LONGER,
        1,
    )
    assert "customer_view" not in BookingEvent.objects.get(booking=booking, to_state=S.PENDING_PARTNER).data


@pytest.mark.parametrize(("actor", "mailed"), [(Actor.CUSTOMER, []), (Actor.WORKER, [(2, "cancelled")])])
def test_only_what_the_customer_did_not_cause_is_mailed(db, actor, mailed):
    booking = BookingFactory(status=S.CANCEL_REQUESTED)

    with transaction.atomic():
        apply_transition(_locked(booking), "mark_cancelled", actor=actor)

    booking.refresh_from_db()
    assert (booking.customer_status, booking.status_version) == ("cancelled", 2)
    assert list(Notification.objects.filter(booking=booking).values_list("status_version", "kind")) == mailed


def test_a_confirmed_booking_the_partner_cancels_is_disrupted_never_pending(db):
    booking = BookingFactory(status=S.PENDING_PARTNER)
    with transaction.atomic():
        apply_transition(_locked(booking), "confirm", actor=Actor.WEBHOOK)

    with transaction.atomic():
        apply_transition(
            _locked(booking), "flag_for_attention", actor=Actor.WEBHOOK, reason="partner_cancelled_confirmed"
        )

    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message, booking.status_version) == (
        "disrupted",
        M.DISRUPTED_PARTNER_CANCELLED,
        3,
    )
    assert list(Notification.objects.filter(booking=booking).values_list("kind", flat=True)) == [
        "confirmed",
        "disrupted",
    ]


# --- publishing ---------------------------------------------------------------------------------
def _read(listener, kind: str, count: int) -> list[dict]:
    """The next `count` messages of `kind` the listener receives (others skipped)."""
    received: list[dict] = []

    def enough() -> bool:
        message = listener.get_message(timeout=0.1)
        if message is not None and message["type"] == kind:
            received.append(message)
        return len(received) == count

    wait_until(enough, what=f"{count} {kind} messages")
    return received


def test_a_change_is_published_after_commit_on_the_booking_and_customer_channels(
    db, django_capture_on_commit_callbacks
):
    booking = BookingFactory(status=S.PENDING_PARTNER)
    channels = {live.booking_channel(booking.pk), live.customer_channel(booking.customer_id)}
    listener = redis_client().pubsub()
    try:
        listener.subscribe(*channels)
        _read(listener, "subscribe", 2)
        with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
            apply_transition(_locked(booking), "confirm", actor=Actor.WEBHOOK)
        assert listener.get_message(timeout=0.2) is None  # nothing before the commit
        for callback in callbacks:
            callback()
        received = _read(listener, "message", 2)
    finally:
        listener.close()

    assert {message["channel"].decode() for message in received} == channels
    assert [json.loads(message["data"]) for message in received] == [
        {
            "reference": booking.reference,
            "status": "confirmed",
            "message": "Your booking is confirmed.",
            "message_code": "confirmed",
            "status_version": 2,
        }
    ] * 2


@pytest.fixture
def stopped_redis(tmp_path, settings):
    """The project's Redis client pointed at a Redis of this test's own, already stopped."""
    server = embedded_redis.EmbeddedRedis(tmp_path).start()
    settings.REDIS_URL = server.url
    redis_client.cache_clear()
    server.stop()
    yield server
    redis_client.cache_clear()


def test_a_publish_redis_refuses_is_logged_and_the_change_stands(transactional_db, stopped_redis, caplog):
    booking = BookingFactory(status=S.PENDING_PARTNER)
    with pytest.raises(redis.ConnectionError):
        redis_client().ping()

    with caplog.at_level(logging.WARNING, logger="bookings.live"), transaction.atomic():
        apply_transition(_locked(booking), "confirm", actor=Actor.WEBHOOK)

    booking.refresh_from_db()
    assert (booking.status, booking.customer_status, booking.status_version) == (S.CONFIRMED, "confirmed", 2)
    assert [r.getMessage() for r in caplog.records if r.name == "bookings.live"] == [
        "customer view not published; followers re-read it on their next heartbeat"
    ]


# --- the contract under any sequence of moves and partner facts ----------------------------------
REASONS = ["partner_cancelled_confirmed", "partner_lost_reservation", "compensation_failed"]


class HonestView(RuleBasedStateMachine):
    """One booking row, moved by any allowed transition and by any change of what the partner
    may hold, each followed by what production runs (`apply_transition`, `refresh`)."""

    @initialize()
    def book(self) -> None:
        self.booking = BookingFactory(status=S.REQUESTED)
        self.history: list[tuple[str, str, int]] = [("pending", M.RECEIVED, 1)]

    @rule(data=st.data())
    def move(self, data) -> None:
        available = sorted(t.name for t in self.booking.get_available_status_transitions())
        name = data.draw(st.sampled_from(available))
        kwargs = {"reason": data.draw(st.sampled_from(REASONS))} if name == "flag_for_attention" else {}
        with transaction.atomic():
            self.booking = apply_transition(_locked(self.booking), name, actor=Actor.WORKER, **kwargs)

    @rule(fact=st.sampled_from(["fence", "resolve", "live", "cancel", "verify"]))
    def partner_fact_changes(self, fact: str) -> None:
        booking = self.booking
        if fact == "fence":
            PartnerAttemptFactory(booking=booking, fence=True)
        elif fact == "resolve":
            PartnerAttempt.objects.filter(booking=booking, outcome=Outcome.AMBIGUOUS).update(
                resolved_at=timezone.now()
            )
        elif fact == "live":
            PartnerReservationFactory(booking=booking, status=ReservationStatus.CONFIRMED)
        elif fact == "cancel":  # we ask the partner to cancel what it holds; it answers cancelled
            PartnerReservation.objects.filter(booking=booking).update(
                status=ReservationStatus.CANCELLED, compensation_requested_at=timezone.now()
            )
        else:
            PartnerReservation.objects.filter(booking=booking, status=ReservationStatus.CANCELLED).update(
                compensated_at=timezone.now()
            )
        with transaction.atomic():
            self.booking = _locked(booking)
            customer_view.refresh(self.booking, actor=Actor.WORKER)

    @invariant()
    def the_contract_holds(self) -> None:
        booking = Booking.objects.get(pk=self.booking.pk)
        shown = (booking.customer_status, booking.customer_message, booking.status_version)
        last = self.history[-1]
        if shown[:2] != last[:2]:
            assert shown[2] > last[2], "a visible change without a higher number"
            self.history.append(shown)
        else:
            assert shown[2] >= last[2]
        statuses = [status for status, _, _ in self.history]
        if "confirmed" in statuses:
            assert "pending" not in statuses[statuses.index("confirmed") :], "pending after confirmed"
        assert (booking.customer_status == "confirmed") == (booking.status == S.CONFIRMED)
        if booking.customer_status == "failed":
            assert not ports.partner_may_hold(booking.pk), "failed while the partner may hold it"
        if booking.cancel_asked_at is not None:  # asked, and not dropped: cancelling, done, or support's
            assert booking.customer_status != "pending", "pending while a cancel asked stands"


def test_the_contract_holds_under_any_moves_and_partner_facts(db) -> None:
    run_state_machine_as_test(
        HonestView, settings=hypothesis_settings(max_examples=40, stateful_step_count=25, deadline=None)
    )


# --- who the news awaits ----------------------------------------------------------------------
A = customer_view.Awaited


@pytest.mark.parametrize(
    ("status", "message", "money", "awaited"),
    [
        ("pending", M.PARTNER_CONFIRMING, "held", A.PARTNER),
        ("pending", M.RELEASING, "", A.PARTNER),
        ("pending", M.WITH_SUPPORT, "", A.SUPPORT),
        ("disrupted", M.DISRUPTED, "held", A.SUPPORT),
        ("pending", M.CHECKING_PAYMENT, "authorizing", A.PAYMENT),
        ("cancelling", M.CANCELLING, "held", A.PARTNER),
        ("cancelling", M.CANCEL_WITH_SUPPORT, "held", A.SUPPORT),
        ("cancelling", M.CANCELLING_UNSENT, "authorizing", A.PAYMENT),
        ("cancelling", M.CANCELLING_UNSENT, "", A.CANCELLATION),
        ("confirmed", M.CONFIRMED, "held", A.PAYMENT),  # the capture to come
        ("cancelled", M.CANCELLED, "held", A.PAYMENT),  # the release to come
        ("confirmed", M.CONFIRMED, "charged", None),
        ("cancelled", M.CANCELLED, "", None),
        ("disrupted", M.DISRUPTED_ENDED, "released", None),
    ],
)
def test_the_wait_names_who_it_is_for_and_the_partner_only_when_it_is_them(status, message, money, awaited):
    charged = Decimal("360.00") if money == "charged" else Decimal(0)
    told = money_of(PaymentFacts(money, "EUR", Decimal("360.00"), charged)).as_json() if money else {}
    booking = Booking(customer_status=status, customer_message=message, customer_money=told)

    assert customer_view.awaited(booking) == awaited
    assert customer_view.awaiting_news(booking) is (awaited is not None)


def test_a_cancelled_booking_handed_to_support_is_not_told_its_cancel_did_not_complete(db):
    # given a booking cancelled at the partner (asked, done, mailed "is cancelled")
    booking = BookingFactory(status=S.CANCEL_REQUESTED, cancel_asked_at=timezone.now())
    with transaction.atomic():
        apply_transition(_locked(booking), "mark_cancelled", actor=Actor.WORKER)

    # when something else sends it to support later (a worker that gave up on it)
    with transaction.atomic():
        apply_transition(_locked(booking), "flag_for_attention", actor=Actor.WORKER, reason="worker_gave_up")

    # then its cancel, done, does not stand as one that did not complete
    booking.refresh_from_db()
    assert booking.cancel_asked_at is None
    assert booking.customer_message != M.CANCEL_WITH_SUPPORT
    assert not Notification.objects.filter(booking=booking, kind="cancel_not_done").exists()


# --- an ended booking support takes up for what the partner still holds -----------------------
class _PartnerRefusingEverything:
    """Every call answered 429: the stray's cancel, and the read that would verify it."""

    def cancel(self, partner_ref: str) -> CallResult:
        return CallResult(Outcome.TRANSIENT, http_status=429, error="rate limited", error_code="rate_limited")

    get = cancel


# How each end is reached, by the booking's own transitions: from `pending_partner`, and from
# `confirmed` (shown confirmed first: the partner took it back, support failed or requeued it).
TAKEN_BACK = ("flag_for_attention", {"reason": "partner_cancelled_confirmed"})
ENDS: dict[tuple[str, bool], list[tuple[str, dict[str, str]]]] = {
    (S.REJECTED, False): [("reject", {})],
    (S.FAILED, False): [("fail", {})],
    (S.EXPIRED, False): [("expire", {})],
    (S.CANCELLED, False): [("request_cancel", {}), ("mark_cancelled", {})],
    (S.REJECTED, True): [TAKEN_BACK, ("requeue_submission", {}), ("reject", {})],
    (S.FAILED, True): [TAKEN_BACK, ("fail", {})],
    (S.EXPIRED, True): [TAKEN_BACK, ("requeue_submission", {}), ("expire", {})],
    (S.CANCELLED, True): [("request_cancel", {}), ("mark_cancelled", {})],
}
# What the customer is shown while the stray is released, and still once support has it.
RELEASING_VIEW = {
    (S.CANCELLED, False): ("cancelled", M.CANCELLED),
    (S.CANCELLED, True): ("cancelled", M.CANCELLED),
    **{(end, False): ("pending", M.RELEASING) for end in (S.REJECTED, S.FAILED, S.EXPIRED)},
    **{(end, True): ("disrupted", M.DISRUPTED) for end in (S.REJECTED, S.FAILED, S.EXPIRED)},
}


def _shown_now(booking: Booking) -> tuple[str, str, int]:
    return Booking.objects.values_list("customer_status", "customer_message", "status_version").get(
        pk=booking.pk
    )


@pytest.mark.parametrize(("ended", "confirmed_first"), sorted(ENDS))
def test_an_ended_booking_whose_stray_support_gets_keeps_the_view_of_its_end(
    transactional_db, broker, settings, monkeypatch, ended, confirmed_first
):
    """A booking that had ended (told "cancelled", or releasing a reservation before "failed")
    whose stray reservation the partner would not let go went to support: it was shown
    `pending`/`with_support` ("our support team is reviewing your booking"), or `disrupted` and
    mailed a problem once it was confirmed. The customer's booking has ended all the same."""
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    monkeypatch.setattr(compensation, "connector_for", lambda partner: _PartnerRefusingEverything())
    # given a booking that ended by its own transitions
    start = S.CONFIRMED if confirmed_first else S.PENDING_PARTNER
    booking = BookingFactory(status=start, submission_count=1)
    for name, kwargs in ENDS[(ended, confirmed_first)]:
        with transaction.atomic():
            apply_transition(_locked(booking), name, actor=Actor.WORKER, **kwargs)
    assert Booking.objects.get(pk=booking.pk).status == ended
    # and a reservation of it the partner holds still, found since: the one door has its cancel asked
    stray = PartnerReservationFactory(booking=booking, status=ReservationStatus.CONFIRMED)
    with transaction.atomic():
        reconcile_booking(_locked(booking), actor=Actor.WORKER)
    before = _shown_now(booking)
    assert before[:2] == RELEASING_VIEW[(ended, confirmed_first)]
    mails = list(Notification.objects.filter(booking=booking).values_list("status_version", "kind"))

    # when the partner refuses its cancel through every try: support has the booking
    assert compensation.reservation_compensate(stray.pk).compensate_after_s is None

    # then the customer is shown the end as before: the same view, the same number, no mail
    after = Booking.objects.get(pk=booking.pk)
    assert (after.status, after.attention_from, after.attention_reason) == (
        S.NEEDS_ATTENTION,
        ended,
        "compensation_failed",
    )
    assert _shown_now(booking) == before
    assert list(Notification.objects.filter(booking=booking).values_list("status_version", "kind")) == mails
    moved = BookingEvent.objects.get(booking=booking, kind="booking.needs_attention", from_state=ended)
    assert "customer_view" not in moved.data
