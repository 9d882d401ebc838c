"""Writes of the booking core. Each service owns its transaction; views and actors call these."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, TransitionNotAllowed, can_proceed

from bookings import catalogue, customer_view, ports
from bookings.cancelling import fee_if_cancelled, fee_told
from bookings.customer_money import MONEY_HELD, PaymentFacts
from bookings.models import Actor, Booking, Offer, Quote, new_reference
from bookings.pricing import Stay, amount_text, confirmation_deadline, price_stay, unit_count, validate_stay
from bookings.states import CANCEL_ACCEPTED, BookingState, did_not_go_ahead
from bookings.timeline import new_event
from config.db import insert_together
from config.errors import Conflict, InvalidTransition, Unprocessable, ValidationFailed
from config.logging import log_context

logger = logging.getLogger(__name__)


# --- the one way a booking changes state -----------------------------------------------------
def lock_booking(booking_id: UUID) -> Booking:
    """Load a booking with a row lock; call inside `transaction.atomic()`.

    The lock is PostgreSQL's FOR NO KEY UPDATE of the booking row alone. It serialises the
    booking's writers, yet leaves alone what only references rows: the foreign key checks of
    other transactions (a customer's new booking on the same partner, a timeline row, an
    attempt) take KEY SHARE locks, which FOR UPDATE would block, and a plain FOR UPDATE with
    the partner joined would also lock the partner's one row, serialising every booking of it.
    """
    return (
        Booking.objects.select_for_update(of=("self",), no_key=True)
        .select_related("partner")
        .get(pk=booking_id)
    )


def apply_transition(
    booking: Booking,
    transition: str,
    *,
    actor: Actor | str,
    actor_label: str = "",
    kind: str | None = None,
    summary: str = "",
    data: dict[str, Any] | None = None,
    partner_time: datetime | None = None,
    skew_ms: int | None = None,
    extra_fields: tuple[str, ...] = (),
    payment: PaymentFacts | None = None,
    **transition_kwargs: Any,
) -> Booking:
    """Run a transition on a locked booking, save it and write its timeline row.

    What the customer is shown follows in the same UPDATE and on the same row: a transition that
    changes the view carries the change (`customer_view.stage`, with the payment side's news
    when it moves the booking: `payment`), so the common path writes no row of its own for it.
    A paying booking's money follows a move that decides what it owes (`ports.money_follows`), and
    the partner side's records beside the booking follow every move (`ports.partner_follows`).
    Must run inside the caller's `atomic()` block, on a row from `lock_booking`.
    """
    method = getattr(booking, transition)
    old = booking.status
    if not can_proceed(method):
        raise InvalidTransition(
            f"Booking {booking.reference} cannot {transition.replace('_', ' ')} from {old}.",
            fields={"status": [old]},
        )
    try:
        method(**transition_kwargs)
        change = customer_view.stage(booking, actor=actor, payment=payment)
        booking.save(
            update_fields=[
                "status",
                "status_changed_at",
                "submission_count",
                "attention_reason",
                "attention_detail",
                "cancellation_fee",  # fixed by a cancel, dropped by a move off its road
                "cancel_asked_at",  # the same
                "attention_from",  # set by a move to support, cleared by any move out of it
                "updated_at",
                *(customer_view.VIEW_FIELDS if change else ()),
                *extra_fields,
            ]
        )
    except (TransitionNotAllowed, ConcurrentTransition) as exc:
        raise InvalidTransition(str(exc)) from exc
    event = new_event(
        booking,
        kind or f"booking.{booking.status}",
        actor=actor,
        actor_label=actor_label,
        summary=summary or f"{old} → {booking.status}",
        from_state=old,
        to_state=booking.status,
        partner_time=partner_time,
        skew_ms=skew_ms,
        data={**(data or {}), **({"customer_view": change.as_data()} if change else {})},
    )
    customer_view.save_row(booking, event, change, money_follows=ports.money_due(booking))
    ports.partner_follows(booking, actor=actor, actor_label=actor_label)
    ports.money_follows(booking)
    logger.info(
        "booking transition",
        extra={
            "booking": booking.reference,
            "transition": transition,
            "from": old,
            "to": booking.status,
        },
    )
    return booking


# --- quotes ---------------------------------------------------------------------------------
def _active_offer(offer_id: int) -> Offer:
    offer = catalogue.offer_with_partner(offer_id)
    if offer is None:
        raise ValidationFailed("Unknown offer.", fields={"offer": ["No such offer."]})
    return offer


def quote_create(*, customer, offer_id: int, start_date: date, end_date: date, guests: int) -> Quote:
    stay = Stay(offer=_active_offer(offer_id), start_date=start_date, end_date=end_date, guests=guests)
    validate_stay(stay)
    price = price_stay(stay)
    return Quote.objects.create(
        customer=customer,
        offer=stay.offer,
        start_date=start_date,
        end_date=end_date,
        guests=guests,
        total_price=price.total,
        currency=price.currency,
        expires_at=timezone.now() + settings.QUOTE_TTL,
        **stay.offer.cancellation_terms(),  # the terms the quote page shows are the booking's
    )


# --- bookings -------------------------------------------------------------------------------
# A customer's Idempotency-Key, however it comes (the API's header, the pages' Book form): 1 to
# 255 printable ASCII characters, without surrounding spaces (HTTP drops those from a header).
IDEMPOTENCY_KEY_MAX_LENGTH = Booking._meta.get_field("idempotency_key").max_length
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"


@dataclass(frozen=True)
class BookingRequest:
    offer_id: int
    start_date: date
    end_date: date
    guests: int
    quote_id: UUID | None = None
    # The customer's payment method as the provider names it (a card element's `pm_...`): the
    # booking pays, and awaits its payment before the partner is asked. Empty: it does not pay.
    payment_method: str = ""

    def fingerprint(self) -> str:
        fields = {
            "offer": self.offer_id,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "guests": self.guests,
            "quote": str(self.quote_id) if self.quote_id else None,
        }
        if self.payment_method:  # absent otherwise: the fingerprints of earlier bookings hold
            fields["payment_method"] = self.payment_method
        canonical = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class BookingCreated:
    booking: Booking
    created: bool  # False when an earlier request with the same key made it


def _replay(
    *, customer, idempotency_key: str, request: BookingRequest, page_attempt: bool
) -> BookingCreated | None:
    """The booking an earlier request made: the one of this key (refused if it came with another
    request), else the one of this request's quote, whatever key booked it (a quote books once).
    A page's key (`page_attempt`) names its attempt to book the quote, not one body: the quote
    booked under it with another card is refused as the quote's booking, as any other key's is
    (`_refuse_booked_otherwise`), never as a key reused."""
    fingerprint = request.fingerprint()
    booking = Booking.objects.filter(customer=customer, idempotency_key=idempotency_key).first()
    if booking is not None and booking.request_fingerprint != fingerprint:
        if page_attempt and request.quote_id is not None and booking.quote_id == request.quote_id:
            raise _refuse_booked_otherwise(booking)
        raise Unprocessable(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
        )
    if booking is None and request.quote_id is not None:
        booking = Booking.objects.filter(
            customer=customer, quote_id=request.quote_id, request_fingerprint=fingerprint
        ).first()
    return None if booking is None else BookingCreated(booking=booking, created=False)


def _booked_otherwise(*, customer, request: BookingRequest) -> Booking | None:
    """The request's quote's booking, for the stay the request asks (the quote fixes it), made by
    a request that differs in how it pays (the same request is its replay); None if there is none."""
    if request.quote_id is None:
        return None
    return (
        Booking.objects.filter(
            customer=customer,
            quote_id=request.quote_id,
            quote__offer_id=request.offer_id,
            quote__start_date=request.start_date,
            quote__end_date=request.end_date,
            quote__guests=request.guests,
        )
        .only("reference", "customer_status", "customer_message")
        .first()
    )


def _refuse_booked_otherwise(booking: Booking) -> Unprocessable:
    """A quote books once (`booking_one_per_quote`), whatever became of its booking: one that did
    not go ahead is said so, with the way to the same stay, a new quote (support may still move
    that booking on, so the quote stays its)."""
    if did_not_go_ahead(customer_status=booking.customer_status, customer_message=booking.customer_message):
        return Unprocessable(
            f"This quote's booking {booking.reference} did not go ahead, and a quote is booked only "
            "once: get a new quote for the same stay, and book that.",
            code="quote_booking_did_not_go_ahead",
        )
    return Unprocessable(
        "This quote is booked already, with another payment method.", code="quote_booked_otherwise"
    )


def _quote_for(*, customer, request: BookingRequest, offer: Offer) -> Quote | None:
    if request.quote_id is None:
        return None
    quote = Quote.objects.filter(pk=request.quote_id, customer=customer).first()
    if quote is None:
        raise ValidationFailed("Unknown quote.", fields={"quote": ["No such quote."]})
    if quote.is_expired():
        raise ValidationFailed("The quote has expired.", fields={"quote": ["This quote has expired."]})
    mismatched = [
        name
        for name, value in (
            ("offer", offer.pk),
            ("start_date", request.start_date),
            ("end_date", request.end_date),
            ("guests", request.guests),
        )
        if getattr(quote, "offer_id" if name == "offer" else name) != value
    ]
    if mismatched:
        raise ValidationFailed(
            "The quote does not match this booking.",
            fields={name: ["Differs from the quote."] for name in mismatched},
        )
    return quote


def booking_create(
    *, customer, request: BookingRequest, idempotency_key: str, page_attempt: bool = False
) -> BookingCreated:
    """Validate, price and store a booking, and queue its submission after commit.

    The customer's Idempotency-Key commits with the booking (unique per customer), so the same
    key gives the same booking even when two requests race: a used key makes the insert fail,
    and the failure is answered from the stored record. A quote is booked once (unique too):
    booking it again under another key answers with its booking the same way. `page_attempt`:
    the key is the quote page's Book attempt (`_replay`).
    """
    fingerprint = request.fingerprint()
    try:
        offer = _active_offer(request.offer_id)
        stay = Stay(
            offer=offer, start_date=request.start_date, end_date=request.end_date, guests=request.guests
        )
        validate_stay(stay)
        quote = _quote_for(customer=customer, request=request, offer=offer)
        price = price_stay(stay)
    except ValidationFailed:
        # Most keys are new, so the key is looked up only when the fast path fails: a replay
        # answers as the first request did even if its stay no longer validates (dates passed).
        replay = _replay(
            customer=customer, idempotency_key=idempotency_key, request=request, page_attempt=page_attempt
        )
        if replay:
            return replay
        # A quote booked already is answered as booked, whatever else is now wrong with it
        # (expired since, the offer withdrawn): that is moot, the booking is what matters.
        if booked := _booked_otherwise(customer=customer, request=request):
            raise _refuse_booked_otherwise(booked) from None
        raise
    now = timezone.now()

    booking = Booking(
        reference=new_reference(),
        customer=customer,
        offer=offer,
        partner=offer.partner,
        quote=quote,
        start_date=request.start_date,
        end_date=request.end_date,
        guests=request.guests,
        total_price=quote.total_price if quote else price.total,
        currency=quote.currency if quote else price.currency,
        **(quote or offer).cancellation_terms(),  # kept: what the customer was shown before Book
        deadline=confirmation_deadline(start_date=request.start_date, now=now),
        next_check_at=now + settings.BOOKING_SUBMIT_GRACE,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        # A booking that pays awaits its payment before the partner is asked.
        **({"status": BookingState.AWAITING_PAYMENT} if request.payment_method else {}),
    )
    rows = []
    if request.payment_method:
        payment, facts = ports.payment_for(booking, payment_method=request.payment_method)
        customer_view.initial(booking, payment=facts)
        rows.append(payment)
    requested = new_event(
        booking,
        f"booking.{booking.status}",
        actor=Actor.CUSTOMER,
        actor_label=customer.get_username(),
        summary=(
            f"Requested {offer.product_id}, {unit_count(stay.nights, offer.price_unit)}, "
            f"{booking.total_price} {booking.currency}"
        ),
        to_state=booking.status,
        data={
            "price": {
                "unit_price": str(price.unit_price),
                "nights": price.nights,
                "fee": str(price.fee),
                "total": str(booking.total_price),
                "currency": booking.currency,
            },
            "quote": str(quote.pk) if quote else None,
            "deadline": booking.deadline.isoformat(),
        },
    )
    for attempt in range(3):  # a new random reference on the (very rare) reference collision
        if attempt:
            booking.reference = new_reference()
        try:
            # The booking and its first timeline row (and its payment): one statement on
            # PostgreSQL, the hot path.
            insert_together(booking, requested, *rows)
        except IntegrityError:
            replay = _replay(
                customer=customer, idempotency_key=idempotency_key, request=request, page_attempt=page_attempt
            )
            if replay:
                return replay
            if Booking.objects.filter(reference=booking.reference).exists():
                continue  # the random reference was taken: draw another
            if booked := _booked_otherwise(customer=customer, request=request):
                # The quote's booking exists, made by a request that differs only in how it pays
                # (the quote fixes the stay): it is not this request's to answer.
                raise _refuse_booked_otherwise(booked) from None
            raise
        # Published before the next step is queued: its worker's first change comes after it.
        customer_view.created(booking)
        if rows:
            ports.payment_run_on_commit(booking.pk)  # the partner is asked once the money is held
        else:
            ports.submit_on_commit(booking.pk, offer.partner.code)
        with log_context(booking=booking.reference, partner_key=booking.partner_key):
            logger.info("booking requested", extra={"partner": offer.partner.code})
        return BookingCreated(booking=booking, created=True)
    raise IntegrityError("Could not allocate a unique booking reference.")


def _not_cancellable(booking: Booking) -> InvalidTransition:
    """The refusal of a cancel, in the words the customer is shown of the booking (its status
    message), never its internal state: "rejected" would contradict a page saying `pending` while
    the partner releases it, or `disrupted` once it was confirmed."""
    shown = booking.customer_message_text
    return InvalidTransition(
        f"Booking {booking.reference} can no longer be cancelled: {shown[:1].lower()}{shown[1:]}",
        code="not_cancellable",
    )


def _fee_changed(booking: Booking, *, shown: Decimal, now: Decimal) -> Conflict:
    """The refusal of a cancel that would now cost more than the customer was shown when they
    confirmed it (the cut-off passed, the partner confirmed meanwhile): nothing is cancelled, and
    the customer is told the new fee, to confirm again or keep the booking."""
    fee = amount_text(now, booking.currency)
    if shown == 0:
        change = f"Cancelling is no longer free: it now costs a cancellation fee of {fee}."
    else:
        change = f"The cancellation fee is now {fee}, not {amount_text(shown, booking.currency)}."
    return Conflict(
        f"The cost of cancelling booking {booking.reference} has changed since it was shown to you. "
        f"{change} Nothing has been cancelled: check what cancelling does now, and confirm again "
        "if you still want to cancel.",
        code="cancellation_fee_changed",
    )


def booking_request_cancel(
    *,
    booking_id: UUID,
    actor: Actor | str,
    actor_label: str = "",
    kind: str = "booking.cancel_requested",
    summary: str = "Cancellation requested",
    data: dict[str, Any] | None = None,
    expected_fee: Decimal | None = None,
) -> Booking:
    """Ask for a cancellation; idempotent while one is under way or done, and, for the customer,
    while their cancel is with our support team (`Booking.cancel_with_support`: asked again, it
    is the same cancel, and would only send it round the same failure). The move writes one
    timeline row: support names it as its correction (`kind`, `summary`, `data`).

    `expected_fee` is the fee the customer was shown when they confirmed (the cancel page's,
    the API's `if_cancelled.fee`): a cancel that would now take more (`fee_told`, judged under
    the booking's lock) is refused, nothing cancelled and no fee fixed, so that nobody is charged
    a fee they were not shown; one that takes as much or less goes ahead. Support's cancel
    passes the fee its preview showed. Without it (an API client that sends none) the fee is
    fixed as it stands now."""
    with transaction.atomic():
        booking = lock_booking(booking_id)
        if booking.status in CANCEL_ACCEPTED:
            return booking
        if actor == Actor.CUSTOMER and booking.cancel_with_support:
            return booking
        if actor == Actor.CUSTOMER and booking.ended_with_support:
            # It had ended before support got it: answered as that end was, never moved back.
            if booking.attention_from in CANCEL_ACCEPTED:
                return booking
            raise _not_cancellable(booking)
        if not booking.is_cancellable:
            raise _not_cancellable(booking)
        now = timezone.now()
        if expected_fee is not None and (fee := fee_told(booking, at=now)) > expected_fee:
            raise _fee_changed(booking, shown=expected_fee, now=fee)
        booking.next_check_at = now + settings.BOOKING_SUBMIT_GRACE
        fields = ("next_check_at",)
        # What cancelling costs is fixed now, by the offer's policy, whenever it completes (asked
        # again, the fee the first cancel fixed: `fee_if_cancelled`); None clears any other.
        booking.cancellation_fee = fee_if_cancelled(booking, at=now)
        if booking.cancellation_fee is not None:
            data = {**(data or {}), "cancellation_fee": str(booking.cancellation_fee)}
        money = None
        held = booking.customer_money.get("code") in MONEY_HELD
        if booking.status == BookingState.AWAITING_PAYMENT or held:
            # Its card may not have been asked yet (the run queued, not run: ~1 s, or a broker
            # outage): then nothing will be. Or its hold is being charged (a confirmed booking's
            # capture out to a slow provider): then not only the fee may be taken. Either way the
            # customer is told so with this change.
            money = ports.payment_at_cancel(
                booking, ending=BookingState.CANCEL_REQUESTED, actor=actor, actor_label=actor_label
            )
        apply_transition(
            booking,
            "request_cancel",
            actor=actor,
            actor_label=actor_label,
            kind=kind,
            summary=summary,
            data=data,
            extra_fields=fields,
            payment=money,
        )
        ports.cancel_on_commit(booking.pk, booking.partner.code)
        return booking
