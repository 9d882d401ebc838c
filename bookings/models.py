"""The booking contract: offers, quotes, bookings with their state machine, and the timeline."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition

from bookings.currencies import validate_currency
from bookings.states import (
    AWAITING_PARTNER,
    CANCELLABLE_STATES,
    EXPIRABLE,
    OPEN_STATES,
    PARTNER_LET_GO,
    SETTLEABLE,
    TERMINAL_STATES,
    UNACKNOWLEDGED,
    BookingState,
    CustomerMessage,
    CustomerStatus,
)

REFERENCE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read over the phone


def new_reference() -> str:
    return "BK-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(6))


FEE_A_SHARE = "The cancellation fee is a share of the price: 0 to 100 percent."


class CancellationTerms(models.Model):
    """A cancellation policy (`bookings.pricing.cancellation_fee`): free until this many hours
    before the start, then this share of the price is kept. An offer's are its terms now; a quote
    and a booking keep the terms they were made under, the ones the customer was shown before
    Book, whatever the offer's become since."""

    # Defaults in the database too: during a rolling deploy, processes still on the code before
    # these columns insert quotes and bookings without them.
    free_cancellation_hours = models.PositiveIntegerField(default=24, db_default=24)
    # The constraint `offer_cancellation_fee_a_share` keeps the database right; these say it on
    # the field in a form (the admin's offer page) instead of naming the constraint.
    cancellation_fee_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        db_default=0,
        validators=[
            MinValueValidator(0, FEE_A_SHARE),
            MaxValueValidator(100, FEE_A_SHARE),
        ],
    )

    class Meta:
        abstract = True

    def cancellation_terms(self) -> dict[str, object]:
        """The terms, to be kept by what is made under them (a quote, a booking)."""
        return {
            "free_cancellation_hours": self.free_cancellation_hours,
            "cancellation_fee_percent": self.cancellation_fee_percent,
        }


class PriceUnit(models.TextChoices):
    """What an offer's unit price is for, as the customer is told it ("120.00 EUR a night").

    Ours, not the partner's: neither protocol describes a product, so whoever registers the
    offer says it (`partner_upsert`, the admin). Either way a stay is priced by the days from
    its start date to its end date (`bookings.pricing.price_stay`); the unit names what each
    of them is: a night (a room) or a day (a tour, an outing). Neither is per person: the price
    does not depend on the guests."""

    NIGHT = "night", "night"
    DAY = "day", "day"


class Offer(CancellationTerms):
    """Something a partner sells: priced per night or per day (`price_unit`), for up to
    `capacity` guests."""

    # Indexed by `offer_unique_product` (partner first), not by an index of its own.
    partner = models.ForeignKey(
        "partners.Partner", on_delete=models.PROTECT, related_name="offers", db_index=False
    )
    product_id = models.CharField(max_length=100, help_text="The partner's product id.")
    name = models.CharField(max_length=200, blank=True)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
    # A default in the database too: processes still on the code before this column insert
    # offers without it during a rolling deploy.
    price_unit = models.CharField(
        max_length=8,
        choices=PriceUnit.choices,
        default=PriceUnit.NIGHT,
        db_default=PriceUnit.NIGHT,
        help_text="What the unit price is for: each night (a room) or each day (a tour). Either "
        "way the price is the unit price times the days from the start date to the end date.",
    )
    currency = models.CharField(
        max_length=3, validators=[validate_currency], help_text="ISO 4217, such as EUR or JPY."
    )
    capacity = models.PositiveIntegerField(help_text="Most guests one booking may bring.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["partner", "product_id"], name="offer_unique_product"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="offer_price_not_negative"),
            models.CheckConstraint(
                condition=Q(cancellation_fee_percent__gte=0, cancellation_fee_percent__lte=100),
                name="offer_cancellation_fee_a_share",
            ),
        ]
        ordering = ["partner_id", "product_id"]

    def __str__(self) -> str:
        return self.name or self.product_id


class Quote(CancellationTerms):
    """A price locked for one customer and stay until it expires."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quotes")
    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="quotes")
    start_date = models.DateField()
    end_date = models.DateField()
    guests = models.PositiveIntegerField()
    total_price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Quote {self.id}"

    def is_expired(self, *, now=None) -> bool:
        return (now or timezone.now()) >= self.expires_at


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class BookingQuerySet(models.QuerySet["Booking"]):
    def open(self) -> BookingQuerySet:
        return self.filter(status__in=OPEN_STATES)

    def with_reference(self, reference: str) -> BookingQuerySet:
        """The booking a reference names however it was typed or read out: every lookup by a
        reference (the pages, the API, its streams, the console's commands) goes through here.
        References are made of capitals and digits only (`new_reference`), so any case names one
        booking. Normalised to how it is stored rather than compared with `iexact`, which would
        miss the unique index and read every booking.

        Text the database cannot hold (a NUL, `%00` in a URL; a lone surrogate, a command's
        argument that is not UTF-8) names no booking: compared with a reference it was a
        DataError, a 500 where every other unknown reference is a 404."""
        normalised = reference.strip().upper()
        if "\x00" in normalised or not _encodable(normalised):
            return self.none()
        return self.filter(reference=normalised)


class Booking(ConcurrentTransitionMixin, CancellationTerms):
    """Our booking record: the source of truth. State changes only through transitions."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Unique by a constraint rather than `unique=True`, which on PostgreSQL also builds a
    # pattern-matching (LIKE) index nobody queries; every insert and sweep update pays per index.
    reference = models.CharField(max_length=12, default=new_reference, editable=False)
    # Indexed by `booking_customer_recent` (customer first), not by an index of its own.
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings", db_index=False
    )
    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="bookings")
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="bookings")
    # Indexed by `booking_one_per_quote`, not by an index of its own.
    quote = models.ForeignKey(
        Quote, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    start_date = models.DateField()
    end_date = models.DateField()
    guests = models.PositiveIntegerField()
    total_price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)

    status = FSMField(
        max_length=20, choices=BookingState.choices, default=BookingState.REQUESTED, protected=True
    )
    status_changed_at = models.DateTimeField(default=timezone.now)
    # By this time the partner must have confirmed, or the booking expires (invariant 7).
    deadline = models.DateTimeField()
    # When automation should look at this booking next (sync, retry); the sweeper's index.
    next_check_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    submission_count = models.PositiveIntegerField(default=0)
    attention_reason = models.CharField(max_length=64, blank=True)
    attention_detail = models.TextField(blank=True)
    # The customer's Idempotency-Key and a hash of the request it came with: committed with the
    # booking, unique per customer, so a retried request finds the booking it made.
    idempotency_key = models.CharField(max_length=255, blank=True, editable=False)
    request_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    # What the customer owes for cancelling, fixed by its kept terms when the cancel of the
    # confirmed booking was asked for (null: never asked, or asked before the partner confirmed:
    # nothing is owed). It stands while that cancel is the booking's way out, a second cancel
    # included (`cancelling.fee_if_cancelled`), and goes with any other way: confirmed again
    # (the price is owed, a later cancel fixes its own), failed or sent again (`_cancel_dropped`).
    cancellation_fee = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    # When the customer (or support on their behalf) asked to cancel, for as long as that cancel is
    # the booking's way out: set by `request_cancel`, kept while the cancel is under way, done, or
    # with support because it did not complete (`cancel_with_support`: moved to support from
    # `cancel_requested`; a move to support from any other state drops it), and dropped with the
    # fee by any other way (`_cancel_dropped`). Null: no cancel stands. Nullable, so the column is added
    # without a rewrite, and a process still on the code before it inserts bookings without it.
    cancel_asked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The state the booking was in when support got it (`flag_for_attention`), for as long as
    # support has it ('' otherwise: any move out of needs_attention clears it). Support may get a
    # booking that had ended (cancelled, rejected, failed, expired) for what is left at the partner
    # (a stray reservation whose cancel failed every try): the customer's booking has still ended
    # (`ended_with_support`). A constant database default: added without a rewrite, and filled
    # for a process still on the code before it; bookings already with support got it from
    # bookings/0023 (their latest move into needs_attention).
    attention_from = models.CharField(max_length=20, blank=True, default="", db_default="", editable=False)

    # What the customer is shown, as `bookings.customer_view.refresh` last derived it (the one
    # writer). Stored so that every change has a number and "never backwards" has a memory.
    customer_status = models.CharField(
        max_length=12, choices=CustomerStatus.choices, default=CustomerStatus.PENDING, editable=False
    )
    customer_message = models.CharField(
        max_length=40,
        default=CustomerMessage.RECEIVED,
        editable=False,
        help_text="A code of the message catalogue (CustomerMessage); its words are rendered.",
    )
    # +1 on every change of status or message: the API's status_version, ETag and SSE event id.
    status_version = models.PositiveIntegerField(default=1, editable=False)
    confirmed_shown_at = models.DateTimeField(null=True, blank=True, editable=False)
    # What the customer is told about their money, with the amounts told (customer_money.Money);
    # empty for a booking without a payment.
    customer_money = models.JSONField(default=dict, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BookingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="booking_customer_recent"),
            models.Index(
                fields=["next_check_at"],
                name="booking_due_open",
                condition=Q(status__in=sorted(OPEN_STATES)),
            ),
            models.Index(fields=["status", "status_changed_at"], name="booking_status_age"),
            # The sweeper's audit of confirmed bookings against their partner: a queue by the
            # last time we learned the partner's truth (a read, else the confirmation itself).
            models.Index(
                Coalesce("last_synced_at", "status_changed_at"),
                name="booking_confirmed_audit",
                condition=Q(status=BookingState.CONFIRMED),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(end_date__gt=models.F("start_date")), name="booking_end_after_start"
            ),
            models.CheckConstraint(condition=Q(guests__gte=1), name="booking_guests_positive"),
            models.UniqueConstraint(fields=["reference"], name="booking_reference_unique"),
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="booking_idempotency_key_per_customer",
            ),
            # A quote is booked once, whatever Idempotency-Key books it (two tabs, a script-made
            # key and the server's fallback).
            models.UniqueConstraint(
                fields=["quote"], condition=Q(quote__isnull=False), name="booking_one_per_quote"
            ),
        ]
        permissions = [
            ("sync_booking", "Can force a partner sync of a booking"),
            ("retry_booking", "Can retry a booking's submission"),
            ("compensate_booking", "Can cancel a booking's reservation at the partner and fail it"),
            ("resolve_booking", "Can mark a booking that needs attention as resolved"),
            ("cancel_booking_support", "Can cancel a booking on a customer's behalf"),
        ]

    def __str__(self) -> str:
        return self.reference

    # --- derived -------------------------------------------------------------------------
    @property
    def partner_key(self) -> str:
        """The idempotency key / client reference we send the partner: ours, never the customer's."""
        return f"bk-{self.id.hex}"

    @property
    def nights(self) -> int:
        return (self.end_date - self.start_date).days

    @property
    def customer_message_text(self) -> str:
        return CustomerMessage(self.customer_message).label

    @property
    def is_cancellable(self) -> bool:
        return self.status in CANCELLABLE_STATES

    @property
    def sent_to_partner(self) -> bool:
        """Whether the partner was ever asked for the booking: a submission started (the counter
        moves before the call), or it was shown confirmed, which only the partner's word does."""
        return self.submission_count > 0 or self.confirmed_shown_at is not None

    @property
    def cancel_with_support(self) -> bool:
        """Whether a cancel the customer asked for did not complete and our support team has the
        booking (the partner would not cancel it, or our work on it kept failing): asked, not
        done, support's to settle, whether or not the partner had confirmed the booking (shown
        `cancelling`/`cancel_with_support` before, `disrupted`/`disrupted_cancel_not_done` after).
        Asked again by the customer, it is the same cancel (`booking_request_cancel` leaves the
        booking as it is), so it is not offered again (`customer_may_cancel`): the partner's
        refusals spent its tries, and support's cancel on the customer's behalf drives it again
        with fresh ones; a customer's would only hammer the partner."""
        return self.status == BookingState.NEEDS_ATTENTION and self.cancel_asked_at is not None

    @property
    def ended_with_support(self) -> bool:
        """Whether support has the booking after it had ended (`attention_from`): for something
        left at the partner, such as a stray reservation it could not release, not for the
        customer's booking, which has ended all the same. There is nothing for them to cancel."""
        return self.status == BookingState.NEEDS_ATTENTION and self.attention_from in TERMINAL_STATES

    @property
    def ended_as(self) -> str:
        """The end the booking had reached when support took it up (`ended_with_support`), ''
        otherwise: the customer's booking is in that end, and what it owes is that end's
        (`payments.decisions.owed`), as is what the customer is shown (`customer_view`)."""
        return self.attention_from if self.ended_with_support else ""

    @property
    def effective_state(self) -> str:
        """The state the customer's booking is in: its end while support has what the partner
        still holds of it (`ended_as`), else its status. Its money follows it (a refund less the
        fee, a hold released), and its customer is told of it as of that end."""
        return self.ended_as or self.status

    @property
    def customer_may_cancel(self) -> bool:
        """Whether the customer is offered to cancel (the page's button, the API's `links.cancel`
        and `if_cancelled`): the state allows it, their cancel is not already with support, and
        the booking had not ended before support got it."""
        return self.is_cancellable and not self.cancel_with_support and not self.ended_with_support

    @property
    def partner_let_go(self) -> bool:
        """Whether the customer is told the partner no longer holds the booking it had confirmed."""
        return self.customer_message in PARTNER_LET_GO

    # --- transitions: pure, own row only; services save and record them --------------------
    def _moved(self) -> None:
        self.status_changed_at = timezone.now()
        self.attention_from = ""  # only `flag_for_attention` enters needs_attention: it sets it

    def _cancel_dropped(self) -> None:
        """The booking leaves the road of a cancel asked earlier another way than cancelled: the
        fee that cancel fixed is owed by nothing any more (`payments.decisions.owed`), and left on
        the row it would be read by a later end (cancelled after the partner took it back). Nor
        does the cancel stand any more (`cancel_asked_at`): a later move to support is not it."""
        self.cancellation_fee = None
        self.cancel_asked_at = None

    @transition(field=status, source=BookingState.AWAITING_PAYMENT, target=BookingState.REQUESTED)
    def accept_payment(self) -> None:
        """The customer's money is held: the partner may be asked now, and only now."""
        self._moved()

    @transition(field=status, source=BookingState.AWAITING_PAYMENT, target=BookingState.FAILED)
    def refuse_payment(self) -> None:
        """The provider declined the payment: the booking never reaches the partner."""
        self._moved()

    @transition(field=status, source=BookingState.REQUESTED, target=BookingState.SUBMITTING)
    def start_submission(self) -> None:
        self._moved()
        self.submission_count += 1

    # REQUESTED appears among the sources below because partner truth may arrive for a booking
    # whose earlier attempt we had already given up on (a late listing entry after a requeue).
    @transition(field=status, source=sorted(UNACKNOWLEDGED), target=BookingState.PENDING_PARTNER)
    def mark_partner_pending(self) -> None:
        self._moved()

    @transition(field=status, source=BookingState.SUBMITTING, target=BookingState.UNKNOWN)
    def mark_outcome_unknown(self) -> None:
        self._moved()

    @transition(field=status, source=sorted(SETTLEABLE), target=BookingState.CONFIRMED)
    def confirm(self) -> None:
        self._moved()
        self._cancel_dropped()
        self.attention_reason = ""

    @transition(field=status, source=sorted(AWAITING_PARTNER), target=BookingState.REJECTED)
    def reject(self) -> None:
        self._moved()

    @transition(field=status, source=sorted(SETTLEABLE), target=BookingState.FAILED)
    def fail(self) -> None:
        self._moved()
        self._cancel_dropped()
        self.attention_reason = ""

    @transition(field=status, source=sorted(EXPIRABLE), target=BookingState.EXPIRED)
    def expire(self) -> None:
        self._moved()

    @transition(field=status, source=sorted(CANCELLABLE_STATES), target=BookingState.CANCEL_REQUESTED)
    def request_cancel(self) -> None:
        self._moved()
        self.cancel_asked_at = self.cancel_asked_at or self.status_changed_at

    @transition(
        field=status,
        source=[BookingState.CANCEL_REQUESTED, BookingState.NEEDS_ATTENTION],
        target=BookingState.CANCELLED,
    )
    def mark_cancelled(self) -> None:
        self._moved()
        self.attention_reason = ""

    @transition(
        field=status,
        # Terminal states too: a live partner reservation we cannot cancel needs a person.
        source=[
            BookingState.SUBMITTING,
            BookingState.UNKNOWN,
            BookingState.PENDING_PARTNER,
            BookingState.CONFIRMED,
            BookingState.CANCEL_REQUESTED,
            BookingState.REJECTED,
            BookingState.FAILED,
            BookingState.EXPIRED,
            BookingState.CANCELLED,
        ],
        target=BookingState.NEEDS_ATTENTION,
    )
    def flag_for_attention(self, *, reason: str, detail: str = "") -> None:
        if self.status != BookingState.CANCEL_REQUESTED:
            # Support has it for something else than a cancel under way: a cancel done before
            # (cancelled, then a problem) does not stand as one that did not complete. Its fee
            # stays: the refund less it is still what a cancelled booking owes.
            self.cancel_asked_at = None
        from_state = self.status  # the transition sets the target after this body
        self._moved()
        self.attention_from = from_state
        self.attention_reason = reason
        self.attention_detail = detail

    @transition(
        field=status,
        source=BookingState.NEEDS_ATTENTION,
        target=RETURN_VALUE(*sorted(TERMINAL_STATES)),
        conditions=[lambda booking: booking.ended_with_support],
    )
    def return_to_end(self) -> str:
        """Support had an ended booking for what the partner still held of it (`ended_with_support`)
        and the partner holds nothing of it any more: it returns to the end it had reached
        (`attention_from`), and to no other state. Its customer's booking never left that end
        (`effective_state`), so nothing it owes, nor what its customer is shown, changes: a
        cancelled booking keeps its fee (nothing here drops it)."""
        end = self.ended_as
        self._moved()
        self.attention_reason = ""
        return end

    @transition(
        field=status,
        source=[BookingState.UNKNOWN, BookingState.NEEDS_ATTENTION],
        target=BookingState.REQUESTED,
    )
    def requeue_submission(self) -> None:
        """Only once a lookup proved the partner holds nothing for this booking."""
        self._moved()
        self._cancel_dropped()
        self.attention_reason = ""

    @transition(field=status, source=[BookingState.SUBMITTING], target=BookingState.REQUESTED)
    def release_submission(self) -> None:
        """The call provably never left (connect error, partner circuit open): try again later."""
        self._moved()


def status_edges() -> list[tuple[str, str, str]]:
    """(transition, source, target) of every move the state machine allows, each target spelled
    out: `return_to_end` leads to the end its booking had (`RETURN_VALUE`), one edge per end. The
    graph's readers (the diagram, the chaos timelines check, the graph tests) read it here."""
    edges = []
    for t in Booking._meta.get_field("status").get_all_transitions(Booking):
        targets = t.target.allowed_states if isinstance(t.target, RETURN_VALUE) else [t.target]
        edges += [(t.name, str(t.source), str(target)) for target in targets]
    return edges


class BookingEventQuerySet(models.QuerySet["BookingEvent"]):
    def update(self, **kwargs):  # type: ignore[override]
        raise TypeError("The booking timeline is append-only.")

    def delete(self):  # type: ignore[override]
        raise TypeError("The booking timeline is append-only.")


class Actor(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    WORKER = "worker", "Worker"
    WEBHOOK = "webhook", "Webhook"
    SWEEPER = "sweeper", "Sweeper"
    SUPPORT = "support", "Support user"
    SYSTEM = "system", "System"


class BookingEvent(models.Model):
    """One append-only row of a booking's timeline.

    `kind` is a namespaced code (`booking.confirmed`, `partner.attempt.ambiguous`,
    `support.resolved`). `partner_time` is the partner's clock when the row reflects something
    the partner said; `skew_ms` is our estimate of the partner's clock offset at that moment.
    """

    id = models.BigAutoField(primary_key=True)
    # Indexed by `event_booking_time` (booking first), not by an index of its own.
    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="events", db_index=False)
    kind = models.CharField(max_length=64)
    actor = models.CharField(max_length=16, choices=Actor.choices)
    actor_label = models.CharField(max_length=150, blank=True, help_text="User name, worker id, ...")
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    partner_time = models.DateTimeField(null=True, blank=True)
    skew_ms = models.IntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    objects = BookingEventQuerySet.as_manager()

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["booking", "occurred_at", "id"], name="event_booking_time")]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.occurred_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise TypeError("The booking timeline is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("The booking timeline is append-only.")


class NotificationKind(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed"
    NOT_CONFIRMED = "not_confirmed", "Not confirmed"
    CANCELLED = "cancelled", "Cancelled"
    DISRUPTED = "disrupted", "Disrupted"
    TAKING_LONGER = "taking_longer", "Taking longer"
    # A cancel the customer asked for did not complete: support has it (`cancel_with_support`).
    CANCEL_NOT_DONE = "cancel_not_done", "Cancellation not done yet"
    MONEY = "money", "Money (charged, refunded, released)"


class NotificationState(models.TextChoices):
    QUEUED = "queued", "Queued"  # owed: no attempt under way
    SENDING = "sending", "Sending"  # claimed by an attempt that has not said how it ended
    SENT = "sent", "Sent"  # the mail server accepted it
    FAILED = "failed", "Failed"  # refused, or never handed over, on every attempt: never sent
    DELIVERY_UNKNOWN = "delivery_unknown", "Delivery unknown"  # an attempt ended without an answer
    # A change of the money alone told in the status mail before it, never mailed on its own
    # (bookings/notifications.py, "include"): it ends as that mail does.
    INCLUDED = "included", "Included in an earlier mail"


UNFINISHED_NOTIFICATION_STATES = (NotificationState.QUEUED, NotificationState.SENDING)


class NotificationQuerySet(models.QuerySet["Notification"]):
    def lost(self, *, before) -> NotificationQuerySet:
        """Owed, with no attempt since `before`: the message that should send it is lost."""
        return self.filter(state=NotificationState.QUEUED).filter(
            Q(claimed_at__isnull=True, created_at__lte=before) | Q(claimed_at__lte=before)
        )

    def abandoned(self, *, before) -> NotificationQuerySet:
        """Claimed before `before` and never finished: the attempt's worker stopped, before
        handing the message over (`handed_over_at` null) or after."""
        return self.filter(state=NotificationState.SENDING, claimed_at__lte=before)


class Notification(models.Model):
    """A message owed to the customer about one numbered change of what they are shown.

    Written by `customer_view.refresh` in the change's own transaction (an outbox): at most one
    per booking and `status_version`, so a change is never announced twice. Sent by
    `bookings.notifications`, which moves `state` and never sends one that left `queued`.
    """

    id = models.BigAutoField(primary_key=True)
    # Indexed by `notification_once_per_version` (booking first), not by an index of its own.
    booking = models.ForeignKey(
        Booking, on_delete=models.PROTECT, related_name="notifications", db_index=False
    )
    status_version = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=NotificationKind.choices)
    # What the customer was shown at `status_version` (a CustomerMessage code): what the mail says,
    # however the booking has moved on by the time it is sent.
    message = models.CharField(max_length=40)
    # What the customer was told about their money at `status_version` (Booking.customer_money),
    # and in what words (`cancelling.money_words`, as the page and the API said it then): a mail
    # sent after the booking moved on (a cancel asked meanwhile) says what was true at its change.
    money = models.JSONField(default=dict, blank=True)
    money_words = models.TextField(blank=True, default="", db_default="")
    state = models.CharField(
        max_length=16, choices=NotificationState.choices, default=NotificationState.QUEUED
    )
    created_at = models.DateTimeField(default=timezone.now)
    # When the latest attempt began.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # When the latest attempt began handing the message to the mail server (committed just
    # before it did). Null on a `sending` row: that attempt certainly sent nothing yet.
    handed_over_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The latest attempt's error; kept after a later attempt succeeds.
    error = models.TextField(blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["booking", "status_version"], name="notification_once_per_version"
            )
        ]
        indexes = [
            # The sweeper's look for lost and abandoned ones: only the few not finished.
            models.Index(
                fields=["created_at"],
                name="notification_unfinished",
                condition=Q(state__in=UNFINISHED_NOTIFICATION_STATES),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.status_version}"

    @property
    def message_text(self) -> str:
        return CustomerMessage(self.message).label
