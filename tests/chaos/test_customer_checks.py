"""The chaos run's checks of what customers were shown and mailed, on hand-made snapshots.

Two bookings: BK-AAAAAA confirmed by its partner at 1 s and shown confirmed from 2.1 s, and
BK-BBBBBB expired at 121 s, shown `releasing` until its partner's cancellation at 122 s, then
`failed`. Each check passes the clean record, and each violation kind is provoked once from it
with the evidence it must carry.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from chaos.checks import Limits, allowed_transitions, run_all
from chaos.checks.customer import (
    check_confirmed_after_partner,
    check_ended_when_released,
    check_last_shown_final,
    check_never_backwards,
)
from chaos.checks.mail import check_one_mail_per_change
from chaos.model import (
    BookingRow,
    EventRow,
    MailRow,
    NotificationRow,
    OurReservation,
    PartnerChange,
    ShownView,
    Snapshot,
    TruthReservation,
)

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
SKEW_S = 75.0  # the partner's clock runs 75 s ahead of ours
A, B = "BK-AAAAAA", "BK-BBBBBB"
STREAM_A, POLL_A, CUSTOMER = f"booking-stream:{A}", f"poll:{A}", "customer-stream:c1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def partner_at(seconds: float) -> datetime:
    return at(seconds + SKEW_S)


def event(
    n: int, src: str, to: str, t: float, view: tuple[str, str, str, int] | None, actor: str = "worker"
) -> EventRow:
    data = {}
    if view is not None:
        before, status, message, version = view
        data = {
            "customer_view": {"from": before, "to": status, "message": message, "status_version": version}
        }
    return EventRow(
        id=n, kind=f"booking.{to}", actor=actor, from_state=src, to_state=to, occurred_at=at(t), data=data
    )


def booking_a() -> BookingRow:
    return BookingRow(
        reference=A,
        partner_code="ref",
        customer="c1",
        status="confirmed",
        attention_reason="",
        attention_detail="",
        deadline=at(120),
        created_at=at(0),
        events=(
            event(1, "", "requested", 0, None),
            event(2, "requested", "submitting", 0.5, ("pending", "pending", "submitting", 2)),
            event(3, "submitting", "confirmed", 2.0, ("pending", "confirmed", "confirmed", 3)),
        ),
        view_status="confirmed",
        view_message="confirmed",
        view_version=3,
    )


def booking_b() -> BookingRow:
    return BookingRow(
        reference=B,
        partner_code="ref",
        customer="c1",
        status="expired",
        attention_reason="",
        attention_detail="",
        deadline=at(120),
        created_at=at(0),
        events=(
            event(11, "", "requested", 0, None),
            event(12, "requested", "submitting", 0.5, ("pending", "pending", "submitting", 2)),
            event(13, "submitting", "pending_partner", 1.0, ("pending", "pending", "partner_confirming", 3)),
            event(14, "pending_partner", "expired", 121, ("pending", "pending", "releasing", 4)),
            event(15, "", "", 123, ("pending", "failed", "not_confirmed_in_time", 5)),
        ),
        view_status="failed",
        view_message="not_confirmed_in_time",
        view_version=5,
    )


def partner_truth() -> list[TruthReservation]:
    return [
        TruthReservation(
            partner_code="ref",
            partner_ref="R-1",
            client_reference=A,
            status="confirmed",
            history=(PartnerChange(version=1, status="confirmed", at=partner_at(1.0), cause="create"),),
        ),
        TruthReservation(
            partner_code="ref",
            partner_ref="R-2",
            client_reference=B,
            status="cancelled",
            history=(
                PartnerChange(version=1, status="pending", at=partner_at(0.8), cause="create"),
                PartnerChange(version=2, status="cancelled", at=partner_at(122.0), cause="cancel"),
            ),
        ),
    ]


def ours(ref: str, booking: str, status: str, **changes) -> OurReservation:
    row = OurReservation(
        partner_code="ref",
        partner_ref=ref,
        booking_reference=booking,
        role="primary",
        status=status,
        version=1,
        compensation_requested_at=None,
        compensation_reason="",
        compensated_at=None,
    )
    return replace(row, **changes)


def shown(reference: str, client: str, t: float, status: str, message: str, version: int) -> ShownView:
    return ShownView(
        reference=reference, client=client, at=at(t), status=status, message=message, version=version
    )


def mail(reference: str, version: int, kind: str, t: float, n: int = 1) -> MailRow:
    return MailRow(
        reference=reference,
        version=version,
        kind=kind,
        message_id=f"<notification-{n}@localhost>",
        received_at=at(t),
        file=f"{n:06d}.eml",
    )


def notification(reference: str, version: int, kind: str, state: str = "sent") -> NotificationRow:
    return NotificationRow(
        reference=reference,
        version=version,
        kind=kind,
        message=kind,
        state=state,
        attempts=1,
        created_at=at(0),
    )


def clean() -> Snapshot:
    return Snapshot(
        profiles={"ref": "reference"},
        skew_s={"ref": SKEW_S},
        bookings={A: booking_a(), B: booking_b()},
        idempotency=[],
        reservations=[
            ours("R-1", A, "confirmed"),
            ours("R-2", B, "cancelled", compensation_requested_at=at(121), compensated_at=at(122.5)),
        ],
        observations=[],
        truth=partner_truth(),
        clients=[],
        shown=[
            shown(A, "answer:k1#1", 0.05, "pending", "received", 1),
            shown(A, CUSTOMER, 0.1, "pending", "received", 1),
            shown(A, POLL_A, 0.2, "pending", "received", 1),
            shown(A, CUSTOMER, 0.6, "pending", "submitting", 2),
            shown(A, CUSTOMER, 2.1, "confirmed", "confirmed", 3),
            shown(A, STREAM_A, 2.2, "confirmed", "confirmed", 3),
            shown(A, POLL_A, 2.5, "confirmed", "confirmed", 3),
            shown(B, CUSTOMER, 0.1, "pending", "received", 1),
            shown(B, CUSTOMER, 121.2, "pending", "releasing", 4),
            shown(B, CUSTOMER, 123.1, "failed", "not_confirmed_in_time", 5),
        ],
        followers={A: (CUSTOMER, STREAM_A, POLL_A), B: (CUSTOMER,)},
        mails=[mail(A, 3, "confirmed", 2.3, 1), mail(B, 5, "not_confirmed", 123.4, 2)],
        notifications=[notification(A, 3, "confirmed"), notification(B, 5, "not_confirmed")],
    )


CUSTOMER_CHECKS = (
    check_confirmed_after_partner,
    check_ended_when_released,
    check_never_backwards,
    check_last_shown_final,
    check_one_mail_per_change,
)


def kinds(result) -> list[str]:
    return sorted(v.kind for v in result.violations)


def with_shown(snapshot: Snapshot, *views: ShownView) -> Snapshot:
    assert snapshot.shown is not None
    return replace(snapshot, shown=[*snapshot.shown, *views])


# --- the clean record ----------------------------------------------------------------------------
@pytest.mark.parametrize("check", CUSTOMER_CHECKS, ids=lambda c: c.__name__)
def test_a_clean_record_passes(check):
    result = check(clean())
    assert (kinds(result), result.notes) == ([], [])


def test_the_clean_record_is_counted():
    snapshot = clean()
    confirmed = check_confirmed_after_partner(snapshot).figures
    mails = check_one_mail_per_change(snapshot).figures
    followed = check_last_shown_final(snapshot).figures
    assert confirmed["bookings_shown_confirmed"] == 1
    assert confirmed["partner_confirmed_to_first_shown_s"]["max"] == pytest.approx(1.1)
    assert (mails["changes_owing_mail"], mails["mails"], mails["owed_by_kind"]) == (
        2,
        2,
        {"confirmed": 1, "not_confirmed": 1},
    )
    assert (followed["bookings_followed"], followed["followers_customer-stream"]) == (2, 2)


def test_a_run_nobody_watched_is_reported_as_not_observed():
    # Given a run without clients following the bookings, nor a mail sink (a cluster run)
    snapshot = replace(clean(), shown=None, mails=None)
    # When every check runs
    limits = Limits(
        allowance_s=7, detection_window_s=30, max_retries=5, refused_max_tries=3, compensation_max_tries=8
    )
    results = {
        r.name: r for r in run_all(snapshot, allowed=allowed_transitions(), limits=limits, checked_at=at(300))
    }
    # Then the customer checks pass, saying they observed nothing
    for name in (
        "customer_confirmed_after_partner",
        "customer_ended_when_released",
        "customer_never_backwards",
        "customer_last_shown_final",
        "customer_one_mail_per_change",
    ):
        assert (results[name].passed, results[name].figures["observed"]) == (True, False)
        assert results[name].notes[0].startswith("not observed")


# --- confirmed only once the partner confirmed -----------------------------------------------------
def test_confirmed_shown_before_the_partner_confirmed_is_a_violation_with_both_times():
    # Given a poll that showed BK-AAAAAA confirmed at 0.9 s, before the partner's 1.0 s
    snapshot = with_shown(clean(), shown(A, POLL_A, 0.9, "confirmed", "confirmed", 3))
    # When checked
    result = check_confirmed_after_partner(snapshot)
    # Then the violation names the client and the lead, with what was shown and the partner's history
    assert kinds(result) == ["confirmed_before_partner"]
    violation = result.violations[0]
    assert violation.booking == A
    assert "poll:BK-AAAAAA" in violation.message and "0.100s before" in violation.message
    assert (
        "2027-01-01T12:00:00.900+00:00 poll:BK-AAAAAA: confirmed/confirmed v3" in violation.evidence["shown"]
    )
    assert violation.evidence["partner_truth"] == [
        "ref:R-1 ref=BK-AAAAAA now=confirmed [v1 confirmed @2027-01-01T12:01:16.000+00:00 (create)]"
    ]
    assert violation.evidence["final_view"] == "confirmed/confirmed v3"


def test_confirmed_shown_for_a_booking_its_partner_never_confirmed_is_a_violation():
    snapshot = with_shown(clean(), shown(B, CUSTOMER, 60, "confirmed", "confirmed", 4))
    result = check_confirmed_after_partner(snapshot)
    assert kinds(result) == ["confirmed_never_at_partner"]
    assert result.violations[0].booking == B


# --- nothing held when it says so ------------------------------------------------------------------
def test_failed_shown_while_the_partner_still_held_a_reservation_nobody_released():
    # Given BK-BBBBBB shown failed at 60 s, when its reservation was live and no cancel was asked
    snapshot = with_shown(clean(), shown(B, CUSTOMER, 60, "failed", "not_confirmed_in_time", 4))
    result = check_ended_when_released(snapshot)
    assert kinds(result) == ["failed_while_held"]
    violation = result.violations[0]
    assert "ref:R-2 was live at the partner" in violation.message
    assert any("v2 cancelled @" in line for line in violation.evidence["partner_truth"])
    assert any(
        "customer-stream:c1: failed/not_confirmed_in_time v4" in line for line in violation.evidence["shown"]
    )


def test_failed_shown_while_the_cancellation_was_asked_but_not_done_breaks_the_contract_too():
    # Given BK-BBBBBB shown failed at 121.5 s: its cancel was asked at 121 s, done at 122 s
    snapshot = with_shown(clean(), shown(B, CUSTOMER, 121.5, "failed", "not_confirmed_in_time", 5))
    result = check_ended_when_released(snapshot)
    assert kinds(result) == ["failed_while_releasing"]
    assert "(its cancellation asked, not done)" in result.violations[0].message


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("cancelled", "cancelled", ["cancelled_while_held"]),
        ("disrupted", "disrupted_ended", ["ended_while_held"]),
        ("disrupted", "disrupted_partner_cancelled", []),  # says what happens next, not "over"
        ("pending", "releasing", []),
    ],
)
def test_only_the_views_that_say_nothing_is_held_are_judged(status, message, expected):
    snapshot = with_shown(clean(), shown(A, STREAM_A, 30, status, message, 4))
    assert kinds(check_ended_when_released(snapshot)) == expected


def test_a_reservation_the_partner_lost_is_held_by_nobody():
    snapshot = clean()
    snapshot.truth[1] = replace(
        snapshot.truth[1], status="pending", history=snapshot.truth[1].history[:1], vanished_at=partner_at(50)
    )
    snapshot = with_shown(snapshot, shown(B, CUSTOMER, 60, "failed", "not_confirmed_in_time", 4))
    assert kinds(check_ended_when_released(snapshot)) == []


# --- never backwards -------------------------------------------------------------------------------
def test_an_older_version_after_a_newer_one_to_the_same_client_is_a_violation():
    snapshot = with_shown(clean(), shown(A, STREAM_A, 3.0, "pending", "submitting", 2))
    result = check_never_backwards(snapshot)
    assert kinds(result) == ["version_went_back"]
    assert result.violations[0].message == f"{STREAM_A} was shown {A} v2 after v3"


def test_an_older_version_to_another_client_is_no_violation():
    # A client that joins late may start from wherever its server is; only its own order counts.
    snapshot = with_shown(clean(), shown(A, "booking-stream:late", 3.0, "pending", "submitting", 2))
    assert kinds(check_never_backwards(snapshot)) == []


def test_one_version_shown_as_two_views_is_a_violation():
    snapshot = with_shown(clean(), shown(A, POLL_A, 2.4, "pending", "checking", 3))
    result = check_never_backwards(snapshot)
    assert "same_version_different_view" in kinds(result)
    message = next(v.message for v in result.violations if v.kind == "same_version_different_view")
    assert (
        message == f"version 3 of {A} was confirmed/confirmed to {CUSTOMER} and pending/checking to {POLL_A}"
    )


def test_pending_after_confirmed_is_a_violation_as_shown_and_as_recorded():
    # Given the product itself numbered a pending view after the confirmed one
    snapshot = clean()
    booking = snapshot.bookings[A]
    snapshot.bookings[A] = replace(
        booking,
        status="needs_attention",
        events=(
            *booking.events,
            event(4, "confirmed", "needs_attention", 5, ("confirmed", "pending", "with_support", 4)),
        ),
        view_status="pending",
        view_message="with_support",
        view_version=4,
    )
    snapshot = with_shown(snapshot, shown(A, STREAM_A, 5.1, "pending", "with_support", 4))
    result = check_never_backwards(snapshot)
    assert kinds(result) == ["pending_after_confirmed", "record_pending_after_confirmed"]
    assert result.violations[0].message == f"{STREAM_A} was shown {A} pending (v4) after confirmed (v3)"


def test_a_change_missing_from_the_timeline_is_a_violation():
    snapshot = clean()
    snapshot.bookings[A] = replace(snapshot.bookings[A], view_version=4)
    result = check_never_backwards(snapshot)
    assert kinds(result) == ["record_versions_not_consecutive"]
    assert result.violations[0].message == f"{A} is at v4 but its timeline numbers its changes [2, 3]"


# --- the last view is the truth --------------------------------------------------------------------
def test_a_follower_left_showing_an_older_view_is_a_violation():
    # Given the poller's last answer was v1 (it never saw the confirmation)
    snapshot = clean()
    snapshot.shown = [v for v in snapshot.shown if not (v.client == POLL_A and v.version == 3)]
    result = check_last_shown_final(snapshot)
    assert kinds(result) == ["last_shown_not_final"]
    violation = result.violations[0]
    assert violation.message.startswith(f"{POLL_A} last showed {A} as pending/received v1")
    assert violation.message.endswith("it ended confirmed/confirmed v3")
    assert violation.evidence["final_view"] == "confirmed/confirmed v3"


def test_a_follower_never_shown_its_booking_is_a_violation():
    snapshot = clean()
    snapshot.followers[B] = (CUSTOMER, f"booking-stream:{B}")
    assert kinds(check_last_shown_final(snapshot)) == ["never_shown"]


def test_answers_to_two_requests_in_flight_may_come_in_either_order():
    # A double click: each request is its own client, so a later answer showing an older
    # version is no regression, and no answer is held to the end.
    snapshot = with_shown(
        clean(),
        shown(A, "answer:k1#2", 2.3, "confirmed", "confirmed", 3),
        shown(A, "answer:k1#3", 2.4, "pending", "received", 1),
    )
    assert kinds(check_never_backwards(snapshot)) == []
    assert kinds(check_last_shown_final(snapshot)) == []
    assert [v.follows for v in snapshot.shown if v.client.startswith("answer:")] == [False, False, False]


# --- exactly one email per change ------------------------------------------------------------------
def test_a_change_whose_email_is_still_owed_at_the_end_is_a_violation_naming_the_outbox_state():
    snapshot = replace(clean(), mails=[mail(B, 5, "not_confirmed", 123.4, 2)])
    snapshot.notifications[0] = notification(A, 3, "confirmed", state="queued")
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_still_owed"]
    violation = result.violations[0]
    assert violation.message == f"{A} v3 (confirmed) has no email; outbox: queued after 1 attempt(s)"
    assert violation.evidence["change"].startswith("v3 pending→confirmed/confirmed [worker]")


@pytest.mark.parametrize(("state", "outbox"), [("sent", "sent after 1 attempt(s)"), (None, "no row")])
def test_a_change_the_outbox_says_was_mailed_or_never_owed_without_its_email_is_missing(state, outbox):
    snapshot = replace(clean(), mails=[mail(B, 5, "not_confirmed", 123.4, 2)])
    if state is None:
        snapshot.notifications.pop(0)
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_missing"]
    assert result.violations[0].evidence["outbox"] == outbox


def test_a_change_whose_delivery_is_unknown_is_counted_not_failed():
    snapshot = replace(clean(), mails=[mail(B, 5, "not_confirmed", 123.4, 2)])
    snapshot.notifications[0] = notification(A, 3, "confirmed", state="delivery_unknown")
    result = check_one_mail_per_change(snapshot)
    assert (kinds(result), result.figures["delivery_unknown_without_mail"]) == ([], 1)


def test_two_emails_for_one_change_are_a_violation():
    snapshot = clean()
    assert snapshot.mails is not None
    snapshot.mails.append(mail(A, 3, "confirmed", 9.0, 3))
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_duplicated"]
    assert result.violations[0].evidence["mails"] == [
        "000001.eml confirmed <notification-1@localhost>",
        "000003.eml confirmed <notification-3@localhost>",
    ]


def test_an_email_of_the_wrong_kind_is_a_violation():
    snapshot = replace(
        clean(), mails=[mail(A, 3, "disrupted", 2.3, 1), mail(B, 5, "not_confirmed", 123.4, 2)]
    )
    assert kinds(check_one_mail_per_change(snapshot)) == ["mail_wrong_kind"]


def test_an_email_for_a_change_the_customer_made_is_one_too_many():
    # Given the customer's own cancel (shown cancelling) was mailed to them
    snapshot = clean()
    booking = snapshot.bookings[A]
    snapshot.bookings[A] = replace(
        booking,
        status="cancel_requested",
        events=(
            *booking.events,
            event(
                4,
                "confirmed",
                "cancel_requested",
                5,
                ("confirmed", "cancelling", "cancelling", 4),
                "customer",
            ),
        ),
        view_status="cancelling",
        view_message="cancelling",
        view_version=4,
    )
    assert snapshot.mails is not None
    snapshot.mails.append(mail(A, 4, "cancelled", 5.5, 3))
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_not_owed"]
    assert "(confirmed→cancelling/cancelling [customer])" in result.violations[0].message


def test_taking_longer_and_each_disruption_owe_an_email():
    snapshot = clean()
    booking = snapshot.bookings[A]
    snapshot.bookings[A] = replace(
        booking,
        status="needs_attention",
        events=(
            event(1, "", "requested", 0, None),
            event(2, "", "", 40, ("pending", "pending", "taking_longer", 2), "sweeper"),
            event(3, "requested", "confirmed", 50, ("pending", "confirmed", "confirmed", 3)),
            event(
                4,
                "confirmed",
                "needs_attention",
                60,
                ("confirmed", "disrupted", "disrupted_partner_cancelled", 4),
            ),
            event(5, "", "", 70, ("disrupted", "disrupted", "disrupted_ended", 5)),
        ),
        view_version=5,
    )
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_missing", "mail_missing", "mail_missing"]  # no outbox rows
    assert result.figures["owed_by_kind"] == {
        "taking_longer": 1,
        "confirmed": 1,
        "disrupted": 2,
        "not_confirmed": 1,
    }


def test_news_of_the_money_alone_owes_an_email_and_what_the_customer_was_told_first_counts():
    # Given a booking that pays: v1 checking its payment (its first state awaiting_payment), v2
    # received, v3 confirmed, v4 charged with nothing else changed, v5 told "held" (no news)
    snapshot = clean()
    booking = snapshot.bookings[A]

    def charged(n: int, t: float, version: int, code: str, actor: str = "worker") -> EventRow:
        row = event(n, "", "", t, ("confirmed", "confirmed", "confirmed", version), actor)
        row.data["customer_view"]["money"] = {"code": code}
        return row

    snapshot.bookings[A] = replace(
        booking,
        events=(
            event(1, "", "awaiting_payment", 0, None),
            event(2, "awaiting_payment", "requested", 0.4, ("pending", "pending", "received", 2)),
            event(3, "requested", "confirmed", 2.0, ("pending", "confirmed", "confirmed", 3)),
            charged(4, 3.0, 4, "charged"),
            charged(5, 4.0, 5, "held", "support"),
        ),
        view_version=5,
    )
    assert snapshot.mails is not None
    snapshot.mails.append(mail(A, 4, "money", 3.2, 3))
    snapshot.notifications.append(notification(A, 4, "money"))

    result = check_one_mail_per_change(snapshot)

    # Then the charge owed one money email (held is no news), and v2's "received" after
    # "checking_payment" owed none (a pending message, not a status change)
    assert (kinds(result), result.figures["owed_by_kind"]) == (
        [],
        {"confirmed": 1, "money": 1, "not_confirmed": 1},
    )
    changes = snapshot.bookings[A].view_changes()
    assert [(c.version, c.before_message, c.money) for c in changes] == [
        (2, "checking_payment", ""),
        (3, "received", ""),
        (4, "confirmed", "charged"),
        (5, "confirmed", "held"),
    ]


@pytest.mark.parametrize("code", ["refund_failed", "refunded_outside"])
def test_a_refund_that_could_not_be_made_or_was_paid_back_another_way_owes_one_money_email(code):
    # Given a confirmed booking whose money alone moves at v4: a refund refused (the card, or the
    # provider every time it was asked), or support paying it back another way
    snapshot = clean()
    told = event(4, "", "", 3.0, ("confirmed", "confirmed", "confirmed", 4))
    told.data["customer_view"]["money"] = {"code": code, "refund_failed": "270.00"}
    booking = snapshot.bookings[A]
    snapshot.bookings[A] = replace(booking, events=(*booking.events, told), view_version=4)
    snapshot.notifications.append(notification(A, 4, "money"))

    # Then without its email it is missing, and with it the run passes
    assert kinds(check_one_mail_per_change(snapshot)) == ["mail_missing"]
    assert snapshot.mails is not None
    snapshot.mails.append(mail(A, 4, "money", 3.2, 3))
    result = check_one_mail_per_change(snapshot)
    assert (kinds(result), result.figures["owed_by_kind"]["money"]) == ([], 1)


def test_the_mail_oracle_owes_a_money_mail_for_exactly_the_money_the_product_mails():
    # The oracle spells its rule out itself (docs/chaos.md); this keeps the two from drifting
    # apart unnoticed, as they did when the product began to mail a refund that failed.
    from bookings.customer_view import _MONEY_ANNOUNCED
    from chaos.checks.mail import MONEY_ANNOUNCED

    assert {str(code) for code in _MONEY_ANNOUNCED} == MONEY_ANNOUNCED


def _failed_again(money: tuple[str, str, str] = ("held", "held", "held")) -> Snapshot:
    """BK-BBBBBB shown failed at v5 (mailed), then releasing at v6 when a late listing showed a
    reservation at its partner, then failed again at v7 once that one was cancelled; the money it
    was told at v5, v6 and v7 (`money`)."""
    snapshot = clean()
    booking = snapshot.bookings[B]

    def told(row: EventRow, code: str) -> EventRow:
        row.data["customer_view"]["money"] = {"code": code, "amount": "360.00", "currency": "EUR"}
        return row

    events = [
        *booking.events[:4],
        told(event(15, "", "", 123, ("pending", "failed", "not_confirmed_in_time", 5)), money[0]),
        event(16, "", "", 200, ("failed", "pending", "releasing", 6)),
        event(17, "", "", 210, ("pending", "failed", "not_confirmed_in_time", 7)),
    ]
    for row, (before, after) in zip(events[-2:], pairwise(money), strict=True):
        if after != before:
            told(row, after)
    snapshot.bookings[B] = replace(booking, events=tuple(events), view_version=7)
    return snapshot


def test_a_view_shown_again_with_no_email_between_owes_no_second_email():
    # Given BK-BBBBBB failed (mailed), releasing, then failed again, its money told alike
    snapshot = _failed_again()

    # Then the second failed owes nothing: its one email is v5's
    result = check_one_mail_per_change(snapshot)
    assert (kinds(result), result.figures["owed_by_kind"]) == ([], {"confirmed": 1, "not_confirmed": 1})
    # and an email for it is one too many
    assert snapshot.mails is not None
    snapshot.mails.append(mail(B, 7, "not_confirmed", 210.5, 3))
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_not_owed"]
    assert "(pending→failed/not_confirmed_in_time [worker])" in result.violations[0].message


def test_a_view_shown_again_after_an_email_that_was_never_sent_owes_its_email():
    # Given the same, but v5's email was refused on every attempt (its outbox row failed)
    snapshot = _failed_again()
    v5 = next(n for n in snapshot.notifications if (n.reference, n.version) == (B, 5))
    snapshot.notifications[snapshot.notifications.index(v5)] = replace(v5, state="failed")
    snapshot.notifications.append(notification(B, 7, "not_confirmed"))

    result = check_one_mail_per_change(snapshot)

    # Then the second failed owes the email the first never delivered
    assert result.figures["owed_by_kind"] == {"confirmed": 1, "not_confirmed": 2}
    assert "mail_missing" in kinds(result)


def test_a_view_shown_again_with_other_money_words_owes_its_email():
    # Given the same, but the hold was released meanwhile: the second failed tells that
    snapshot = _failed_again(("held", "held", "released"))
    snapshot.notifications.append(notification(B, 7, "not_confirmed"))

    result = check_one_mail_per_change(snapshot)

    assert kinds(result) == ["mail_missing"]
    assert result.figures["owed_by_kind"] == {"confirmed": 1, "not_confirmed": 2}


def test_a_cancel_that_went_to_support_owes_one_email():
    # Given BK-AAAAAA cancelled by its customer before the partner confirmed it (not mailed), then
    # handed to support when the partner would not cancel it: still cancelling, told so
    snapshot = clean()
    booking = snapshot.bookings[A]
    snapshot.bookings[A] = replace(
        booking,
        status="needs_attention",
        events=(
            *booking.events[:2],
            event(
                3,
                "submitting",
                "cancel_requested",
                1.0,
                ("pending", "cancelling", "cancelling", 3),
                "customer",
            ),
            event(
                4,
                "cancel_requested",
                "needs_attention",
                30,
                ("cancelling", "cancelling", "cancel_with_support", 4),
            ),
        ),
        view_status="cancelling",
        view_message="cancel_with_support",
        view_version=4,
    )
    snapshot.notifications[0] = notification(A, 4, "cancel_not_done")
    assert snapshot.mails is not None
    snapshot.mails[0] = mail(A, 4, "cancel_not_done", 30.2, 1)

    result = check_one_mail_per_change(snapshot)

    assert (kinds(result), result.figures["owed_by_kind"]) == (
        [],
        {"cancel_not_done": 1, "not_confirmed": 1},
    )


def test_the_mail_oracle_mails_the_messages_the_product_mails_whatever_the_status():
    from bookings.customer_view import _ANNOUNCED_MESSAGES
    from chaos.checks.mail import ANNOUNCED_MESSAGES

    assert {str(m): str(k) for m, k in _ANNOUNCED_MESSAGES.items()} == ANNOUNCED_MESSAGES


# --- a money change told in the status mail before it ---------------------------------------------
def _confirmed_then_charged() -> Snapshot:
    """BK-AAAAAA confirmed at v3 and charged at v4 (the money alone); v4's outbox row `included`
    in v3's mail, which is in the sink naming v4 as included."""
    snapshot = clean()
    booking = snapshot.bookings[A]
    charged = event(4, "", "", 2.05, ("confirmed", "confirmed", "confirmed", 4))
    charged.data["customer_view"]["money"] = {"code": "charged"}
    snapshot.bookings[A] = replace(booking, events=(*booking.events, charged), view_version=4)
    snapshot.notifications.append(notification(A, 4, "money", state="included"))
    assert snapshot.mails is not None
    snapshot.mails[0] = replace(snapshot.mails[0], included=(4,))
    return snapshot


def test_a_money_change_included_in_the_status_mail_that_was_sent_is_told_by_that_mail():
    result = check_one_mail_per_change(_confirmed_then_charged())

    assert kinds(result) == []
    assert result.figures["owed_by_kind"] == {"confirmed": 1, "money": 1, "not_confirmed": 1}
    assert result.figures["money_told_in_status_mail"] == 1


def test_a_money_change_included_in_a_mail_whose_delivery_is_unknown_counts_as_that_mail():
    # Given v3's mail handed over with no answer (not in the sink), v4 included in it
    snapshot = _confirmed_then_charged()
    assert snapshot.mails is not None
    snapshot.mails.pop(0)
    snapshot.notifications[0] = notification(A, 3, "confirmed", state="delivery_unknown")

    result = check_one_mail_per_change(snapshot)

    assert (kinds(result), result.figures["delivery_unknown_without_mail"]) == ([], 2)
    # and included in a mail the outbox says was sent, it is missing with that mail
    snapshot.notifications[0] = notification(A, 3, "confirmed", state="sent")
    result = check_one_mail_per_change(snapshot)
    assert kinds(result) == ["mail_missing", "mail_missing"]
    assert (
        result.violations[1].evidence["outbox"]
        == "included after 1 attempt(s), in the confirmed mail of v3 (sent)"
    )


def test_a_money_change_both_included_and_mailed_on_its_own_has_two_emails():
    snapshot = _confirmed_then_charged()
    assert snapshot.mails is not None
    snapshot.mails.append(mail(A, 4, "money", 2.5, 3))

    result = check_one_mail_per_change(snapshot)

    assert kinds(result) == ["mail_duplicated"]


def test_a_mail_naming_as_included_a_change_that_owes_no_money_mail_is_one_too_many():
    # Given v3's mail names v2 (submitting: no mail owed) as included
    snapshot = clean()
    assert snapshot.mails is not None
    snapshot.mails[0] = replace(snapshot.mails[0], included=(2,))

    result = check_one_mail_per_change(snapshot)

    assert kinds(result) == ["mail_not_owed"]
    assert "name v2 as included" in result.violations[0].message
