"""A refund the provider refuses every time it is asked, end to end: a real provider process (its
fault `refund_refused_rate`: a refund answered `400 charge_not_refundable`, nothing made), a
sandbox partner, a real worker and the SMTP sink. After PAYMENTS_REFUSED_MAX_TRIES refusals the
refund is left to support, and nothing is being refunded any more: the customer is told it is
owed and support will be in touch (page, API, exactly one mail), where they were told "we are
refunding" for as long as support did nothing. Support's refund then gives it back, and the
words become "refunded"."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from bookings.models import Notification, NotificationKind, NotificationState
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from payments.models import OperationKind, OperationState, PaymentOperation
from reconciliation.selectors.payment_health import payment_health
from tests.helpers import wait_until
from tests.mail import telling
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import assert_money_at_rest, kinds, payment_of, wait_for_money
from tests.payments.test_refund_failed import PRICE, TOLD, ZERO, operator, refund_again

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
REFUNDED = "We refunded the 360.00 EUR we charged to your card: you paid nothing."


def money_mails(booking, code: str):
    return Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY, money__code=code)


def test_a_refund_the_provider_refuses_for_good_is_told_owed_once_and_support_s_refund_makes_it(
    paying, api_client, customer, groups, request, settings
):
    sink = request.getfixturevalue("mail_sink")
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("1000.00")  # support refunds without a second person
    booking = paying.book("pm_card_visa", customer=customer)
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    paying.provider.set_faults(refund_refused_rate=1)  # every refund refused whole, nothing made

    booking_request_cancel(booking_id=booking.pk, actor="customer")  # free: all 360.00 owed back
    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "refund_failed")

    # refused every time asked, then left to support: nothing made, the whole price owed back
    refunds = PaymentOperation.objects.filter(payment__booking=booking, kind=OperationKind.REFUND)
    assert list(refunds.values_list("state", flat=True)) == [OperationState.REFUSED] * 2
    payment = payment_of(booking)
    assert (payment.refunded_amount, payment.failed_refunds_owed, payment.refused_refunds_owed) == (
        ZERO,
        ZERO,
        PRICE,
    )
    assert payment.next_check_at is None
    [intent] = paying.intents(booking)
    assert paying.provider.refunds(intent["id"]) == []
    assert kinds(booking).count("payment.left_to_support") == 1
    health = payment_health(probe=False)
    assert [(r.booking, r.owed) for r in health.refunds_failed] == [(booking.reference, "360.00")]

    # the customer is told: the page, the API (no "we are refunding"), exactly one mail
    web = Client()
    web.force_login(customer)
    page = web.get(f"/bookings/{booking.reference}/").content.decode()
    assert TOLD in page and "are refunding" not in page
    money = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]
    assert (money["code"], money["message"]) == ("refund_failed", TOLD)
    assert (money["charged"], money["refunded"], money["refund_failed"]) == ("360.00", "0.00", "360.00")
    # (its own mail, or the cancel's that it was told in: the refusals came within its settle)
    refused = money_mails(booking, "refund_failed").get()
    [mail] = wait_until(lambda: telling(sink, refused), what="the mail about the refund left to support")
    assert TOLD in mail.get_body(("plain",)).get_content()
    assert money_mails(booking, "refund_failed").count() == 1

    # support sees it owed on the booking's console, apart from refunds the card refused
    who, console = operator(groups)
    panel = console.get(reverse("admin:bookings_booking_change", args=[booking.pk])).content.decode()
    assert 'id="payment-refund-refused">360.00 EUR' in panel and 'id="payment-refund-failed"' not in panel

    # support refunds once the provider takes it: made under a new key, the words move on
    paying.provider.set_faults(refund_refused_rate=0)
    result = refund_again(booking, who)

    assert result.operation_state == OperationState.SUCCEEDED
    wait_for_money(booking, "refunded")
    assert_money_at_rest(paying, booking, owed=ZERO, code="refunded")
    assert payment_of(booking).refused_refunds_owed == ZERO
    assert payment_health(probe=False).refunds_failed == []
    page = web.get(f"/bookings/{booking.reference}/").content.decode()
    assert REFUNDED in page and TOLD not in page
    money = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]
    assert (money["code"], money["refunded"]) == ("refunded", "360.00") and REFUNDED in money["message"]
    wait_until(
        lambda: money_mails(booking, "refunded").filter(state=NotificationState.SENT).exists(),
        what="the mail about support's refund",
    )
    assert money_mails(booking, "refunded").count() == 1
    assert money_mails(booking, "refund_failed").count() == 1
    assert money_mails(booking, "charged").count() == 1  # the capture's: support's refund is told once
    assert kinds(booking).count("payment.left_to_support") == 1
