"""Data the benchmarks need: a partner with an offer, customers with API tokens, bookings in bulk."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

PARTNER_CODE = "bench-ref"
PRODUCT_ID = "bench-room"


def webhook_url(receiver_base: str) -> str:
    """Where the bench partner's sandbox sends its webhooks: our webhook receiver."""
    return f"{receiver_base}/partners/{PARTNER_CODE}/webhooks/"


def bench_partner(
    *, base_url: str, max_concurrency: int = 8, webhooks: bool = True, offers: int = 1
) -> tuple[Any, Any]:
    """The reference-protocol partner of the benchmarks and its first offer (via the service);
    `offers` of them in all (a full page of offers for the customer pages)."""
    from bench.common import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET
    from bookings.models import Offer
    from partners.models import Adapter
    from partners.services.registry import OfferSpec, partner_upsert

    products = [PRODUCT_ID, *(f"{PRODUCT_ID}-{index}" for index in range(1, offers))]
    partner, _ = partner_upsert(
        code=PARTNER_CODE,
        name="Benchmark partner (reference sandbox)",
        adapter=Adapter.REFERENCE,
        base_url=base_url,
        api_key=SANDBOX_API_KEY,
        webhook_secret=SANDBOX_WEBHOOK_SECRET if webhooks else "",
        max_concurrency=max_concurrency,
        offers=[OfferSpec.parse(f"{product}:{120 + 10 * i}.00:EUR:4") for i, product in enumerate(products)],
    )
    return partner, Offer.objects.get(partner=partner, product_id=PRODUCT_ID)


def customers(count: int, *, prefix: str = "bench-customer") -> list[tuple[Any, str]]:
    """`count` customers, each with an API token: (user, token key)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [
            user_model(username=f"{prefix}-{index}", email=f"{prefix}-{index}@example.com")
            for index in range(count)
        ]
    )
    tokens = Token.objects.bulk_create([Token(user=user, key=secrets.token_hex(20)) for user in users])
    return [(user, token.key) for user, token in zip(users, tokens, strict=True)]


def stay_dates(today: date | None = None) -> tuple[date, date]:
    start = (today or date.today()) + timedelta(days=60)  # noqa: DTZ011 - a calendar date
    return start, start + timedelta(days=3)


def booking_body(offer_id: int) -> dict[str, Any]:
    start, end = stay_dates()
    return {"offer": offer_id, "start_date": start.isoformat(), "end_date": end.isoformat(), "guests": 2}


def bulk_bookings(
    *,
    count: int,
    customer: Any,
    offer: Any,
    due_from: datetime,
    due_until: datetime,
    batch_size: int = 5000,
) -> int:
    """`count` open bookings (requested) with `next_check_at` spread evenly over
    [due_from, due_until], written with `bulk_create` (no timeline rows, no messages)."""
    from bookings.models import Booking, new_reference

    start, end = stay_dates()
    step = (due_until - due_from) / max(count - 1, 1)
    deadline = due_until + timedelta(hours=1)
    references: set[str] = set()
    created = 0
    while created < count:
        rows = []
        for index in range(created, min(created + batch_size, count)):
            reference = new_reference()
            while reference in references:
                reference = new_reference()
            references.add(reference)
            rows.append(
                Booking(
                    reference=reference,
                    customer=customer,
                    offer=offer,
                    partner_id=offer.partner_id,
                    start_date=start,
                    end_date=end,
                    guests=2,
                    total_price=Decimal("360.00"),
                    currency="EUR",
                    deadline=deadline,
                    next_check_at=due_from + step * index,
                )
            )
        Booking.objects.bulk_create(rows)
        created += len(rows)
    return created


def one_booking_each(users: list[Any], *, offer: Any) -> list[Any]:
    """An open booking (requested, at version 1 of what its customer is shown) for each of
    `users`, written with `bulk_create` (no timeline rows, no messages)."""
    from bookings.models import Booking, new_reference

    start, end = stay_dates()
    references: set[str] = set()
    while len(references) < len(users):
        references.add(new_reference())
    rows = [
        Booking(
            reference=reference,
            customer=user,
            offer=offer,
            partner_id=offer.partner_id,
            start_date=start,
            end_date=end,
            guests=2,
            total_price=Decimal("360.00"),
            currency="EUR",
            deadline=datetime.now(UTC) + timedelta(days=1),
        )
        for user, reference in zip(users, sorted(references), strict=True)
    ]
    return Booking.objects.bulk_create(rows, batch_size=5000)
