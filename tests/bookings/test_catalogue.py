"""The booking path's per-process offer cache (`bookings.catalogue`)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from bookings import catalogue
from bookings.models import Offer
from bookings.services import booking_create
from config.errors import ValidationFailed
from tests.bookings.test_services import a_request

pytestmark = pytest.mark.django_db


def test_a_second_booking_on_an_offer_does_not_read_the_offer_again(customer, offer):
    booking_create(customer=customer, request=a_request(offer), idempotency_key="first")

    with CaptureQueriesContext(connection) as captured:
        booking_create(customer=customer, request=a_request(offer), idempotency_key="second")

    statements = [query["sql"] for query in captured.captured_queries]
    assert any("INSERT" in sql for sql in statements)
    assert not [sql for sql in statements if 'FROM "bookings_offer"' in sql], statements


def test_an_offer_withdrawn_in_this_process_is_refused_at_once(customer, offer):
    booking_create(customer=customer, request=a_request(offer), idempotency_key="first")

    offer.is_active = False
    offer.save(update_fields=["is_active"])

    with pytest.raises(ValidationFailed) as error:
        booking_create(customer=customer, request=a_request(offer), idempotency_key="second")
    assert error.value.fields["offer"] == ["This offer is no longer available."]


def test_a_partner_disabled_in_this_process_is_refused_at_once(customer, offer):
    booking_create(customer=customer, request=a_request(offer), idempotency_key="first")

    offer.partner.enabled = False
    offer.partner.save(update_fields=["enabled"])

    with pytest.raises(ValidationFailed) as error:
        booking_create(customer=customer, request=a_request(offer), idempotency_key="second")
    assert "not taking bookings" in error.value.fields["offer"][0]


def test_a_price_changed_by_another_process_is_used_once_the_ttl_has_passed(customer, offer, settings):
    settings.CATALOGUE_CACHE_TTL_S = 5
    with time_machine.travel(0, tick=False) as clock:
        first = booking_create(customer=customer, request=a_request(offer), idempotency_key="first")
        # another process changes the price: no signal reaches this one
        Offer.objects.filter(pk=offer.pk).update(unit_price=Decimal("200.00"))

        within = booking_create(customer=customer, request=a_request(offer), idempotency_key="within")
        clock.shift(timedelta(seconds=6))
        after = booking_create(customer=customer, request=a_request(offer), idempotency_key="after")

    assert within.booking.total_price == first.booking.total_price
    assert after.booking.total_price > first.booking.total_price


def test_with_a_ttl_of_zero_every_booking_reads_the_offer(customer, offer, settings):
    settings.CATALOGUE_CACHE_TTL_S = 0
    booking_create(customer=customer, request=a_request(offer), idempotency_key="first")
    Offer.objects.filter(pk=offer.pk).update(is_active=False)

    with pytest.raises(ValidationFailed):
        booking_create(customer=customer, request=a_request(offer), idempotency_key="second")


def test_an_unknown_offer_is_not_cached(customer, offer):
    assert catalogue.offer_with_partner(offer.pk + 1000) is None
    with pytest.raises(ValidationFailed) as error:
        booking_create(
            customer=customer, request=a_request(offer, offer_id=offer.pk + 1000), idempotency_key="x"
        )
    assert error.value.fields == {"offer": ["No such offer."]}


@pytest.mark.django_db(transaction=True)
def test_a_change_clears_the_cache_again_once_committed(customer, offer):
    # given a change in an open transaction, and a read (as by a racing request) caching the
    # row as it was before the change committed
    with transaction.atomic():
        offer.is_active = False
        offer.save(update_fields=["is_active"])
        catalogue._cache().set(catalogue._key(offer.pk), Offer.objects.get(pk=offer.pk), 60)
        stale = catalogue.offer_with_partner(offer.pk)
        assert stale is not None

    # when it commits, then the next read goes to the database
    assert catalogue._cache().get(catalogue._key(offer.pk)) is None
