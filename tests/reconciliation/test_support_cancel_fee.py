"""Support's "Cancel on the customer's behalf" never takes a fee above the one its preview showed:
the console's confirm and `cancel_booking` carry the previewed fee, and the customer's own
cancellation service refuses a cancel that would now take more (`cancellation_fee_changed`)."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Booking
from bookings.states import BookingState
from tests.reconciliation.conftest import calls
from tests.reconciliation.paying import paying_booking

S = BookingState
pytestmark = pytest.mark.django_db

FEE_NOW_90 = "Cancelling is no longer free: it now costs a cancellation fee of 90.00 EUR."


def last_minute_hold() -> Booking:
    """A booking that starts in 2 days (free cancellation ended 60 days before its start), its
    money held, the partner not confirmed yet: cancelling it is free until they do."""
    return paying_booking(
        status=S.PENDING_PARTNER,
        payment_status="authorized",
        booking_fields={
            "free_cancellation_hours": 60 * 24,
            "cancellation_fee_percent": Decimal("25"),
            "start_date": timezone.now().date() + timedelta(days=2),
        },
    ).booking


def partner_confirms(booking: Booking) -> None:
    Booking.objects.filter(pk=booking.pk).update(status=S.CONFIRMED, confirmed_shown_at=timezone.now())


def assert_not_cancelled(booking: Booking) -> None:
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CONFIRMED, None)
    assert not booking.events.exists()


# --- the console ---------------------------------------------------------------------------------
def _cancel_page(booking: Booking) -> str:
    return reverse("admin:bookings_booking_support_action", args=[booking.pk, "cancel"])


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'type="hidden" name="{name}" value="([^"]*)"', page)
    assert found, f"the confirm form carries no {name}"
    return found.group(1)


def _confirm(client, booking: Booking, page: str):
    """ "Cancel on the customer's behalf" pressed on `page`: its form as the browser posts it."""
    form = {"token": _hidden(page, "token"), "expected_fee": _hidden(page, "expected_fee"), "note": ""}
    return client.post(_cancel_page(booking), form)


def test_a_console_cancel_previewed_free_is_refused_once_the_partner_confirmed_then_confirmed_at_the_fee(
    ops_client, partner_queue, broker, django_capture_on_commit_callbacks
):
    # given the console's preview of a cancel that is free (the partner has not confirmed yet)
    booking = last_minute_hold()
    page = ops_client.get(_cancel_page(booking)).content.decode()
    assert "we release the 360.00 EUR we are holding on your card" in page
    assert _hidden(page, "expected_fee") == "0.00"

    # when the partner confirms before support presses the button
    partner_confirms(booking)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        refused = _confirm(ops_client, booking, page)

    # then nothing is cancelled and no fee fixed; the page says why, and previews the fee now
    assert refused.status_code == 200
    again = html.unescape(refused.content.decode())
    assert 'id="expected_fee-errors"' in again and FEE_NOW_90 in again
    assert "we keep the cancellation fee of 90.00 EUR" in again
    assert 'id="confirm-form"' in again and "This preview's is set: confirm again." in again
    assert_not_cancelled(booking)
    assert callbacks == [] and calls(broker, partner_queue) == []

    # and confirming the fresh preview (its fee, the same token: the refusal left it unused) cancels
    assert _hidden(again, "expected_fee") == "90.00"
    assert _hidden(again, "token") == _hidden(page, "token")
    with django_capture_on_commit_callbacks(execute=True):
        done = _confirm(ops_client, booking, again)
    assert done.status_code == 302
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


def test_a_console_cancel_previewed_before_the_cut_off_is_refused_after_it(ops_client, time_machine):
    # given a confirmed booking charged 360.00 EUR, free to cancel until 48 hours before its start
    charged = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00")))
    start = timezone.now().date() + timedelta(days=3)
    booking = paying_booking(
        booking_fields={
            "free_cancellation_hours": 48,
            "cancellation_fee_percent": Decimal("25"),
            "start_date": start,
        }
    ).booking
    Booking.objects.filter(pk=booking.pk).update(customer_money=charged.as_json())
    cut_off = datetime.combine(start, time.min, tzinfo=UTC) - timedelta(hours=48)

    # when support previews a minute before the cut-off (a full refund) and confirms a minute after
    time_machine.move_to(cut_off - timedelta(minutes=1), tick=False)
    page = ops_client.get(_cancel_page(booking)).content.decode()
    assert "we refund the 360.00 EUR you paid to your card, in full" in page
    time_machine.move_to(cut_off + timedelta(minutes=1), tick=False)
    refused = _confirm(ops_client, booking, page)

    # then the free cancel previewed does not become a paid one
    again = html.unescape(refused.content.decode())
    assert FEE_NOW_90 in again and _hidden(again, "expected_fee") == "90.00"
    assert_not_cancelled(booking)


def test_a_console_cancel_without_the_previewed_fee_is_refused_and_previews_it(ops_client):
    # a page from before the fee was carried, or an altered one: nothing done, the preview's fee set
    booking = last_minute_hold()
    partner_confirms(booking)
    token = _hidden(ops_client.get(_cancel_page(booking)).content.decode(), "token")

    refused = ops_client.post(_cancel_page(booking), {"token": token, "note": ""})

    again = refused.content.decode()
    assert 'id="expected_fee-errors"' in again and "This field is required." in again
    assert _hidden(again, "expected_fee") == "90.00"
    assert_not_cancelled(booking)


# --- the command ---------------------------------------------------------------------------------
class PartnerConfirmsWhileAsked(io.StringIO):
    """The operator's terminal: the partner confirms the booking while the question is on screen,
    then the operator answers yes."""

    def __init__(self, booking: Booking) -> None:
        super().__init__("y\n")
        self.booking = booking

    def isatty(self) -> bool:
        return True

    def readline(self, *args) -> str:
        partner_confirms(self.booking)
        return super().readline(*args)


def cancel_booking(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("cancel_booking", *args, "--no-live", stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), ""


def test_cancel_booking_confirmed_at_its_free_preview_is_refused_once_the_partner_confirmed(
    ops_user, monkeypatch, partner_queue, broker, django_capture_on_commit_callbacks
):
    # given a booking whose preview the command prints says cancelling is free
    booking = last_minute_hold()
    monkeypatch.setattr("sys.stdin", PartnerConfirmsWhileAsked(booking))

    # when the partner confirms it while the operator is asked, and they answer yes
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        out, error = cancel_booking(booking.reference, "--as", ops_user.username)

    # then the cancel is refused, said on its line and by the exit status; nothing cancelled
    text = " ".join(out.split())
    assert "we release the 360.00 EUR we are holding on your card" in text
    assert f"{booking.reference}: The cost of cancelling booking {booking.reference} has changed" in text
    assert FEE_NOW_90 in text
    assert error == "cancel: nothing was done (1 refused)."
    assert_not_cancelled(booking)
    assert callbacks == [] and calls(broker, partner_queue) == []

    # and run again, its preview shows the fee, and confirming it cancels at that fee
    out, error = cancel_booking(booking.reference, "--yes", "--as", ops_user.username)
    assert "we keep the cancellation fee of 90.00 EUR" in " ".join(out.split()) and error == ""
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


def test_cancel_booking_yes_with_the_fee_a_dry_run_showed_refuses_per_booking_and_goes_on(
    ops_user, partner_queue, broker
):
    # given two bookings an earlier --dry-run previewed as free to cancel
    confirmed_meanwhile, still_free = last_minute_hold(), last_minute_hold()
    refs = (confirmed_meanwhile.reference, still_free.reference)
    dry, _ = cancel_booking(*refs, "--dry-run", "--json", "--as", ops_user.username)
    assert [p["money"]["fee"] for p in json.loads(dry)["previews"]] == ["0.00", "0.00"]

    # when the partner confirms one of them before the run with --yes and the fee told
    partner_confirms(confirmed_meanwhile)
    out, error = cancel_booking(*refs, "--yes", "--expected-fee", "0.00", "--json", "--as", ops_user.username)

    # then that one is refused in the one error shape, and the other is cancelled, free
    first, second = json.loads(out)["results"]
    assert first["error"]["code"] == "cancellation_fee_changed"
    assert FEE_NOW_90 in first["error"]["message"]
    assert second["result"]["to_state"] == S.CANCEL_REQUESTED
    assert error == "cancel: 1 of 2 refused, the others done."
    assert_not_cancelled(confirmed_meanwhile)
    still_free.refresh_from_db()
    assert (still_free.status, still_free.cancellation_fee) == (S.CANCEL_REQUESTED, None)  # none owed


@pytest.mark.parametrize(
    "fee",
    # 1e30 and 29 digits overflowed the cent (InvalidOperation, a traceback); \u0665 and 1_0 were
    # read as 5 and 10, as Decimal reads them, where every other amount support types refuses them.
    ["free", "-1", "1.005", "NaN", "1e30", "9" * 29, "10000000000", "1e1", "\u0665", "1_0", " 5", ".5"],
)
def test_cancel_booking_refuses_an_expected_fee_that_is_no_amount_before_any_booking(ops_user, fee):
    booking = last_minute_hold()

    out, error = cancel_booking(booking.reference, "--yes", "--expected-fee", fee, "--json")

    assert error.startswith("--expected-fee must be an amount of 0 or more")
    assert json.loads(out)["error"]["code"] == "validation_error"
    booking.refresh_from_db()
    assert booking.status == S.PENDING_PARTNER and not booking.events.exists()
