"""The booking machine driven at random on a real row: raw transitions through `apply_transition`,
the customer's cancel, and every support action (by an operator allowed everything), in any
order. After each step the machine's invariants hold, whatever was accepted or refused."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bookings.models import Actor, Booking, BookingEvent
from bookings.services import (
    BookingRequest,
    apply_transition,
    booking_create,
    booking_request_cancel,
    lock_booking,
)
from bookings.states import BookingState
from config.errors import ApplicationError, InvalidTransition
from reconciliation.services import support
from tests.bookings.test_transitions import TRANSITIONS
from tests.factories import OfferFactory, UserFactory

S = BookingState
# Written out here, as the README tells customers, not read from bookings/states.py.
CUSTOMER_STATUS = {
    S.REQUESTED: "pending",
    S.SUBMITTING: "pending",
    S.PENDING_PARTNER: "pending",
    S.UNKNOWN: "pending",
    S.NEEDS_ATTENTION: "pending",
    S.CONFIRMED: "confirmed",
    S.REJECTED: "failed",
    S.FAILED: "failed",
    S.EXPIRED: "failed",
    S.CANCEL_REQUESTED: "cancelling",
    S.CANCELLED: "cancelled",
}
TERMINAL = {S.REJECTED, S.FAILED, S.EXPIRED, S.CANCELLED}
# Once shown `confirmed`, every state but these shows `disrupted` (never `pending` again).
STILL_SHOWN_AS_IS = {S.CONFIRMED, S.CANCEL_REQUESTED, S.CANCELLED}
CANCEL_UNDER_WAY = {S.CANCEL_REQUESTED, S.CANCELLED}


class BookingMachine(RuleBasedStateMachine):
    """One booking; each rule is one service call, checked against the hand-written graph."""

    @initialize()
    def book(self) -> None:
        # Each example in a savepoint of its own, rolled back by `teardown`: the examples share the
        # test's transaction, so a database error in one left it aborted for every later query
        # (shrinking then reported a TransactionManagementError), and each example saw the rows
        # of those before it.
        self.example = transaction.atomic()
        self.example.__enter__()
        assert not Booking.objects.exists(), "an earlier example's rows are still there"
        offer = OfferFactory()
        start = timezone.now().date() + timedelta(days=30)
        self.booking_id = booking_create(
            customer=UserFactory(),
            request=BookingRequest(
                offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=3), guests=2
            ),
            idempotency_key=f"stateful-{uuid.uuid4().hex}",
        ).booking.pk
        self.operator = support.Operator.for_user(UserFactory(is_staff=True, is_superuser=True))
        self.last_token = ""
        self.last_ask: tuple[str, str] = ("", "")  # the action and outcome the token was used for
        self.state = S.REQUESTED
        self.seen_event_id = self._events().order_by("-id").values_list("id", flat=True).first()
        self.confirmed_shown = False
        # A cancel asked stands while support has the booking only when it went to support from
        # `cancel_requested` (a cancel that did not complete): still `cancelling` then.
        self.cancel_stands = False
        self.attention_from = ""  # the state it went to support from, while support has it
        self.shown, self.status_version = ("pending", "received"), 1

    def teardown(self) -> None:
        example = getattr(self, "example", None)
        if example is not None:  # rolled back, whether the example passed, failed or broke the transaction
            transaction.set_rollback(True)
            example.__exit__(None, None, None)

    # --- the steps ---------------------------------------------------------------------------
    @rule(name=st.sampled_from(sorted(TRANSITIONS)))
    def transition(self, name: str) -> None:
        sources, target, kwargs = TRANSITIONS[name]
        expected = target if self.state in sources else None
        moved = self._step(lambda: self._apply(name, kwargs), refusal=expected is None)
        assert moved == (expected or self.state), f"{name} from {self.state}"

    @rule()
    def returns_to_end(self) -> None:
        # only a booking support took up after it had ended goes back, and only to that end
        ended = self._ended()
        moved = self._step(lambda: self._apply("return_to_end", {}), refusal=not ended)
        assert moved == (ended or self.state)

    @rule()
    def customer_cancels(self) -> None:
        # Asked again while support has the cancel that did not complete: the same cancel, unchanged.
        with_support = self.state == S.NEEDS_ATTENTION and self.cancel_stands
        # Support got it after it had ended: answered as that end was (cancelled: accepted, as
        # done; any other: refused), never moved back.
        ended = self.attention_from if self.state == S.NEEDS_ATTENTION else ""
        ended = ended if ended in TERMINAL else ""
        cancellable = self.state in TRANSITIONS["request_cancel"][0] and not with_support and not ended
        unchanged = self.state in CANCEL_UNDER_WAY or with_support or ended == S.CANCELLED

        moved = self._step(
            lambda: booking_request_cancel(booking_id=self.booking_id, actor=Actor.CUSTOMER),
            refusal=not cancellable and not unchanged,
        )

        assert moved == (S.CANCEL_REQUESTED if cancellable else self.state)

    @rule(action=st.sampled_from(sorted(set(support.ACTIONS) - {support.RESOLVE})))
    def support_acts(self, action: str) -> None:
        self._support_step(action)

    @rule(outcome=st.sampled_from([S.CONFIRMED, S.FAILED, S.CANCELLED]))
    def support_resolves(self, outcome: str) -> None:
        self._support_step(support.RESOLVE, outcome=outcome)

    @precondition(lambda self: self.last_token)
    @rule(action=st.sampled_from(sorted(support.ACTIONS)))
    def support_submits_twice(self, action: str) -> None:
        # a double submit (the same token, the same ask) does nothing more; the token asking for
        # another action is refused as a conflict, changing nothing either
        last_action, last_outcome = self.last_ask
        if action == last_action:
            self._step(
                lambda: self._support(action, token=self.last_token, outcome=last_outcome),
                refusal=None,
                changes_nothing=True,
            )
            return
        before_row = self._row()
        with pytest.raises(support.TokenReused):
            self._support(action, token=self.last_token, outcome=last_outcome)
        assert self._row() == before_row, "a token reused for another ask changed the booking"
        assert not self._new_events(), "a token reused for another ask wrote to the timeline"

    # --- the invariants ------------------------------------------------------------------------
    @invariant()
    def state_is_a_booking_state_and_the_customer_sees_what_it_implies(self) -> None:
        booking = Booking.objects.get(pk=self.booking_id)
        assert booking.status in S.values
        assert booking.status == self.state
        self.confirmed_shown |= booking.status == S.CONFIRMED
        # Support took it up after it had ended: the customer is shown that end still.
        ended = self.attention_from if booking.status == S.NEEDS_ATTENTION else ""
        shown_as = ended if ended in TERMINAL else booking.status
        disrupted = self.confirmed_shown and shown_as not in STILL_SHOWN_AS_IS
        expected = "disrupted" if disrupted else CUSTOMER_STATUS[shown_as]
        if booking.status == S.NEEDS_ATTENTION and self.cancel_stands and not disrupted:
            expected = "cancelling"
        assert booking.customer_status == expected

    @invariant()
    def support_has_it_from_the_state_it_was_in(self) -> None:
        booking = Booking.objects.get(pk=self.booking_id)
        expected = self.attention_from if booking.status == S.NEEDS_ATTENTION else ""
        assert booking.attention_from == expected

    @invariant()
    def every_change_the_customer_is_shown_has_a_higher_number(self) -> None:
        booking = Booking.objects.get(pk=self.booking_id)
        shown = (booking.customer_status, booking.customer_message)
        if shown != self.shown:
            assert booking.status_version > self.status_version
        else:  # unchanged, or changed and back within one step: never a lower number
            assert booking.status_version >= self.status_version
        self.shown, self.status_version = shown, booking.status_version

    # --- helpers -------------------------------------------------------------------------------
    def _events(self):
        return BookingEvent.objects.filter(booking_id=self.booking_id)

    def _row(self) -> dict[str, Any]:
        return Booking.objects.values().get(pk=self.booking_id)

    def _apply(self, name: str, kwargs: dict[str, Any]) -> None:
        with transaction.atomic():
            apply_transition(lock_booking(self.booking_id), name, actor=Actor.SYSTEM, **kwargs)

    def _ended(self) -> str:
        """The end support took the booking up from, while support has it ('' otherwise)."""
        ended = self.attention_from if self.state == S.NEEDS_ATTENTION else ""
        return ended if ended in TERMINAL else ""

    def _support_step(self, action: str, *, outcome: str = "") -> None:
        token = uuid.uuid4().hex
        ended = self._ended()
        moved = self._step(lambda: self._support(action, token=token, outcome=outcome), refusal=None)
        if ended:  # support's actions only take what the partner holds: the booking stays, or goes back
            assert moved in (S.NEEDS_ATTENTION, ended), f"{action} {outcome} took {ended} to {moved}"
        if self._events().filter(data__action_token=token).exists():  # performed, not refused
            self.last_token, self.last_ask = token, (action, outcome)

    def _support(self, action: str, *, token: str, outcome: str = "") -> None:
        support.support_action_run(
            action,
            booking_id=self.booking_id,
            operator=self.operator,
            token=token,
            note="stateful test",
            outcome=outcome,
        )

    def _step(self, call, *, refusal: bool | None, changes_nothing: bool = False) -> str:
        """Run one service call and check what it wrote; the state it left. `refusal`: whether
        the graph says it must be refused (None: the service decides)."""
        before_row, before = self._row(), self.state
        try:
            call()
        except InvalidTransition:
            assert refusal is not False, f"refused from {before}"
            assert self._row() == before_row, "a refused step changed the booking"
            assert not self._new_events(), "a refused step wrote to the timeline"
            return before
        except ApplicationError as exc:
            pytest.fail(f"{type(exc).__name__} from {before}: {exc}")
        assert not refusal, f"accepted from {before}"
        after = self._row()["status"]
        moves = [(e.from_state, e.to_state) for e in self._new_events() if e.from_state != e.to_state]
        if changes_nothing:
            assert (after, moves) == (before, [])
        # every change wrote exactly one timeline row, from the old state to the new one
        assert moves == ([(before, after)] if after != before else [])
        # an outcome is left only for support's hands
        assert before not in TERMINAL or after in (before, S.NEEDS_ATTENTION)
        if after == S.NEEDS_ATTENTION and before != after:
            self.cancel_stands = before == S.CANCEL_REQUESTED
            self.attention_from = before
        back_to_end = before == S.NEEDS_ATTENTION and after == self._ended() != ""
        if (before in TERMINAL and after == S.NEEDS_ATTENTION) or back_to_end:
            # support taking up an ended booking, or giving it back to its end, is no news to its
            # customer: no new view, no number
            shown = ("customer_status", "customer_message", "status_version")
            assert [self._row()[f] for f in shown] == [before_row[f] for f in shown]
        self.state = after
        return after

    def _new_events(self) -> list[BookingEvent]:
        new = list(self._events().filter(id__gt=self.seen_event_id or 0).order_by("id"))
        if new:
            self.seen_event_id = new[-1].id
        return new


@pytest.mark.django_db
def test_the_booking_machine_keeps_its_invariants_under_any_sequence_of_steps() -> None:
    run_state_machine_as_test(
        BookingMachine, settings=settings(max_examples=30, stateful_step_count=20, deadline=None)
    )


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite answers 1 / 0 with NULL")
def test_an_example_that_breaks_the_transaction_leaves_the_next_one_a_working_one() -> None:
    machine = BookingMachine()
    machine.book()
    try:
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")  # the transaction is aborted: every later query would fail
    finally:
        machine.teardown()  # whatever happened: an example's savepoint left open breaks later tests

    assert not Booking.objects.exists()
