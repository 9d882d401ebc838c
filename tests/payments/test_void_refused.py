"""A hold the provider refuses to release every time it is asked, end to end: a real provider
process (its fault `void_refused_rate`: a cancel answered `400 payment_intent_unexpected_state`,
nothing changed), a sandbox partner, a real worker and the SMTP sink. A booking cancelled for free
before the partner confirmed owes nothing; after PAYMENTS_REFUSED_MAX_TRIES refused voids the hold
is left to support, and nothing is being released by us: the customer is told so, with when the
hold lapses at the provider (page, API, exactly one mail), where they were told "we are releasing
the 360.00 EUR we hold on your card" for as long as the hold stayed. Support's void then releases
it (one refused again first tells nothing new), and the words become "released", in one mail
more."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from bookings.models import Notification, NotificationKind, NotificationState
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from payments.models import OperationKind, OperationState, PaymentOperation
from payments.models import PaymentStatus as P
from reconciliation.selectors.payment_health import payment_health
from reconciliation.services.support import new_token
from reconciliation.services.support.payments import support_void
from tests.helpers import wait_until
from tests.mail import telling
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import assert_money_at_rest, kinds, payment_of, wait_for_money
from tests.payments.test_refund_failed import operator

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ZERO = Decimal("0.00")
RELEASED = "We released the 360.00 EUR we were holding on your card: you were not charged."


def told_for(lapses: datetime) -> str:
    """The words, with the lapse as the pages show a time (UTC)."""
    at = lapses.astimezone(UTC)
    return (
        "We could not release the 360.00 EUR held on your card: our payment provider refused it. "
        f"The hold ends by {at.day} {at:%b %Y, %H:%M} UTC at the latest, and you will not be charged."
    )


def money_mails(booking, code: str):
    return Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY, money__code=code)


def mailed(sink, booking, words: str) -> list:
    subject = f"Your payment for booking {booking.reference}"
    return [
        m
        for m in sink.messages()
        if m["Subject"] == subject and words in " ".join(m.get_body(("plain",)).get_content().split())
    ]


def test_a_hold_the_provider_will_not_release_is_told_once_and_support_s_void_releases_it(
    paying, api_client, customer, groups, request
):
    sink = request.getfixturevalue("mail_sink")
    paying.h.faults(async_confirm_delay_s=30)  # the partner keeps it pending: cancelling is free
    booking = paying.book(customer=customer)
    wait_until(lambda: payment_of(booking).status == P.AUTHORIZED, what="the hold")
    paying.provider.set_faults(void_refused_rate=1)  # every release refused whole, nothing changed

    booking_request_cancel(booking_id=booking.pk, actor="customer")
    wait_for_status(booking, S.CANCELLED)
    wait_until(lambda: "payment.left_to_support" in kinds(booking), what="the void left to support")
    wait_for_money(booking, "release_refused")

    # refused every time asked, then left to support: still held at the provider, nothing released
    voids = PaymentOperation.objects.filter(payment__booking=booking, kind=OperationKind.VOID)
    assert list(voids.values_list("state", flat=True)) == [OperationState.REFUSED] * 2
    payment = payment_of(booking)
    assert (payment.status, payment.release_refused, payment.next_check_at) == (P.AUTHORIZED, True, None)
    [intent] = paying.intents(booking)
    assert (intent["status"], intent["amount_capturable"], intent["amount_received"]) == (
        "requires_capture",
        36_000,
        0,
    )
    assert paying.provider.payments(intent["id"])["refunds"] == []  # not even a release
    assert kinds(booking).count("payment.left_to_support") == 1
    lapses = payment.authorization_expires_at
    assert lapses is not None
    told = told_for(lapses)

    # the customer is told: the page, the API (no "we are releasing"), exactly one mail
    web = Client()
    web.force_login(customer)
    page = " ".join(web.get(f"/bookings/{booking.reference}/").content.decode().split())
    assert told in page and "releasing" not in page and "we hold on your card" not in page
    money = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]
    assert (money["code"], money["message"]) == ("release_refused", told)
    assert money["lapses_at"].replace("Z", "+00:00") == lapses.isoformat()
    # (its own mail, or the cancel's that it was told in: the refusals came within its settle)
    refused = money_mails(booking, "release_refused").get()
    [mail] = wait_until(lambda: telling(sink, refused), what="the mail about the hold left to lapse")
    assert told in " ".join(mail.get_body(("plain",)).get_content().split())
    assert money_mails(booking, "release_refused").count() == 1

    # support sees it plainly: the booking's payment panel, and payment health
    who, console = operator(groups)
    panel = console.get(reverse("admin:bookings_booking_change", args=[booking.pk])).content.decode()
    assert 'id="payment-release-refused"' in panel
    assert "the provider refused to release it every time it was asked" in panel
    health = payment_health(probe=False)
    assert [(r.booking, r.amount, r.expires_at) for r in health.releases_refused] == [
        (booking.reference, "360.00", lapses)
    ]
    assert any(booking.reference in problem and "release" in problem for problem in health.problems)
    page = console.get(reverse("admin:reconciliation_payment_health")).content.decode()
    assert f"{booking.reference} (360.00 EUR" in page

    # support's void, refused too while the provider still refuses: nothing new to tell
    again = support_void(booking_id=booking.pk, operator=who, token=new_token(), inline=True)
    assert again.operation_state == OperationState.REFUSED
    wait_for_money(booking, "release_refused")
    assert money_mails(booking, "release_refused").count() == 1
    assert Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY).count() == 1

    # support voids it once the provider takes it: released, the words move on in one mail more
    paying.provider.set_faults(void_refused_rate=0)
    result = support_void(booking_id=booking.pk, operator=who, token=new_token(), inline=True)

    assert result.operation_state == OperationState.SUCCEEDED
    wait_for_money(booking, "released")
    assert_money_at_rest(paying, booking, owed=ZERO, code="released")
    payment = payment_of(booking)
    assert (payment.status, payment.release_refused) == (P.VOIDED, False)
    assert payment_health(probe=False).releases_refused == []
    page = " ".join(web.get(f"/bookings/{booking.reference}/").content.decode().split())
    assert RELEASED in page and told not in page
    money = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]
    assert (money["code"], money["lapses_at"]) == ("released", None) and RELEASED in money["message"]
    wait_until(
        lambda: money_mails(booking, "released").filter(state=NotificationState.SENT).exists(),
        what="the mail about support's void",
    )
    assert money_mails(booking, "released").count() == 1
    assert money_mails(booking, "release_refused").count() == 1
    assert len(mailed(sink, booking, RELEASED)) == 1
    assert Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY).count() == 2
