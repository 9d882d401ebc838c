"""What we asked the payment provider for and what it holds, for each booking that pays.

`Payment` is our record of one booking's money: its own state machine (django-fsm-2), whose
`unknown` state fences a second authorization as an unresolved create fences a second partner
create, and the provider's truth as the one door last applied it (held, captured, refunded).
`PaymentOperation` is each thing we asked the provider to do, under one idempotency key derived
from the payment and the operation, committed before its first call; while one is open (its
outcome not known) no other starts. `PaymentEvent` is every webhook delivery, verified, as
received.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Authorization to ask for"
    AUTHORIZING = "authorizing", "Authorizing (a call may be out)"
    UNKNOWN = "unknown", "Authorization outcome unknown"
    AUTHORIZED = "authorized", "Authorized (held)"
    DECLINED = "declined", "Declined"
    CAPTURED = "captured", "Captured"
    VOIDED = "voided", "Voided (released)"
    LAPSED = "lapsed", "Lapsed at the provider (released)"
    ABANDONED = "abandoned", "Never authorized (the booking ended first)"


# Asked for, or being asked: the provider may answer for these with a hold.
BEFORE_AUTHORIZATION = (PaymentStatus.PENDING, PaymentStatus.AUTHORIZING, PaymentStatus.UNKNOWN)
# An authorization's answer is not known: nothing may be concluded, nothing asked again.
AUTHORIZATION_UNANSWERED = (PaymentStatus.AUTHORIZING, PaymentStatus.UNKNOWN)
# What the provider's word of a hold (or of its end) may move: besides those asked, a payment we
# abandoned, should the provider hold money for it after all. The truth wins, and the run then
# releases what nobody owes, where a word taken as stale would leave the hold to lapse.
BEFORE_PROVIDER_WORD = (*BEFORE_AUTHORIZATION, PaymentStatus.ABANDONED)


class OutsideMethod(models.TextChoices):
    """How support paid the customer money owed back outside the provider (`services/outside.py`):
    finance reconciles each against its own books (a bank statement, the till, the voucher
    ledger), so the means is a choice, not words in a note."""

    BANK_TRANSFER = "bank_transfer", "Bank transfer"
    CASH = "cash", "Cash"
    VOUCHER = "voucher", "Voucher or credit"
    OTHER = "other", "Other (the note says how)"


class Payment(ConcurrentTransitionMixin, models.Model):
    """One booking's money. The amounts are the provider's truth as last applied, in the
    booking's currency (Decimal here, minor units only at the connector)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    booking = models.OneToOneField("bookings.Booking", on_delete=models.PROTECT, related_name="payment")
    status = FSMField(
        max_length=12, choices=PaymentStatus.choices, default=PaymentStatus.PENDING, protected=True
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    # The customer's payment method as the provider names it (a card element's `pm_...`).
    payment_method = models.CharField(max_length=255)

    # The provider's truth, as the one door (services/observations.py) last applied it.
    provider_intent_id = models.CharField(max_length=255, blank=True)
    provider_status = models.CharField(max_length=32, blank=True)
    captured_amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    refunded_amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    # Refunds the provider made and then failed (the card refused the money), less what refunds
    # made since gave back: owed to the customer, and support's (automation never asks again).
    # The provider's totals carry no time, so one may predate a failure: each is read less this.
    failed_refunds_owed = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0.00"), db_default=Decimal("0.00")
    )
    # A refund the provider refused every time it was asked (`runs._leave_to_support`: a 4xx,
    # never made), less what support gave back since: owed to the customer, and support's, as a
    # failed refund is. Never made, it is in no total of the provider's, so apart from
    # `failed_refunds_owed` (which every provider total is read less of).
    refused_refunds_owed = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0.00"), db_default=Decimal("0.00")
    )
    # Of what failed refunds owed, what support paid back another way (a bank transfer to a
    # customer whose card takes nothing back) and recorded: given back, though not by the
    # provider, so never in `refunded_amount` (the provider's refunds only, compared with its).
    refunded_outside = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0.00"), db_default=Decimal("0.00")
    )
    # When the held authorization lapses at the provider, by the provider's word.
    authorization_expires_at = models.DateTimeField(null=True, blank=True)
    # The booking owes nothing and the provider refused to release the hold (a void) every time it
    # was asked (`runs._keep_given_up`): nothing is being released by us, the hold lapses at
    # the provider (`authorization_expires_at`) unless support voids it. Cleared once not held.
    release_refused = models.BooleanField(default=False, db_default=False)
    decline_code = models.CharField(max_length=64, blank=True)
    decline_message = models.CharField(max_length=500, blank=True)
    # The provider placed the authorization in review (it stays capturable: support is told).
    in_review = models.BooleanField(default=False)
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)

    # When automation should look at this payment next; null: at rest (money matches what the
    # booking owes, or the booking has not moved since it did).
    next_check_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_check_at"], name="payment_due", condition=Q(next_check_at__isnull=False)
            ),
            # /metrics: payments by status, and how long the oldest has been in each (the unknown
            # outcomes'), one index-only scan (reconciliation.metrics.collector).
            models.Index(fields=["status", "status_changed_at"], name="payment_status_age"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["provider_intent_id"],
                condition=~Q(provider_intent_id=""),
                name="payment_one_per_intent",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded_amount__lte=models.F("captured_amount")),
                name="payment_refunds_within_captures",
            ),
        ]
        permissions = [("view_provider_truth", "Can see the provider's ids and truth of a payment")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} ({self.status})"

    @property
    def net_amount(self) -> Decimal:
        """What the customer has paid: captured less refunded (by the provider, and another way)."""
        return self.captured_amount - self.refunded_amount - self.refunded_outside

    @property
    def owed_back(self) -> Decimal:
        """What refunds to the card that could not be made still owe the customer: made and then
        refused by the card, or refused by the provider every time it was asked. Support's."""
        return self.failed_refunds_owed + self.refused_refunds_owed

    # --- transitions: pure, own row only --------------------------------------------------------
    def _moved(self) -> None:
        self.status_changed_at = timezone.now()

    @transition(field=status, source=PaymentStatus.PENDING, target=PaymentStatus.AUTHORIZING)
    def start_authorization(self) -> None:
        self._moved()

    @transition(field=status, source=list(AUTHORIZATION_UNANSWERED), target=PaymentStatus.PENDING)
    def release_authorization(self) -> None:
        """The call provably did nothing (refused before it ran), or a complete read of the
        provider found nothing made for the payment: ask again later."""
        self._moved()

    @transition(field=status, source=PaymentStatus.AUTHORIZING, target=PaymentStatus.UNKNOWN)
    def mark_outcome_unknown(self) -> None:
        self._moved()

    # The provider's truth may arrive before our own call's answer (a webhook), so each of these
    # takes every state that precedes it.
    @transition(field=status, source=list(BEFORE_PROVIDER_WORD), target=PaymentStatus.AUTHORIZED)
    def mark_authorized(self) -> None:
        self._moved()

    @transition(field=status, source=list(BEFORE_AUTHORIZATION), target=PaymentStatus.DECLINED)
    def mark_declined(self) -> None:
        self._moved()

    @transition(
        field=status, source=[*BEFORE_PROVIDER_WORD, PaymentStatus.AUTHORIZED], target=PaymentStatus.CAPTURED
    )
    def mark_captured(self) -> None:
        self._moved()

    @transition(
        field=status, source=[*BEFORE_PROVIDER_WORD, PaymentStatus.AUTHORIZED], target=PaymentStatus.VOIDED
    )
    def mark_voided(self) -> None:
        self._moved()

    @transition(
        field=status, source=[*BEFORE_PROVIDER_WORD, PaymentStatus.AUTHORIZED], target=PaymentStatus.LAPSED
    )
    def mark_lapsed(self) -> None:
        self._moved()

    @transition(field=status, source=PaymentStatus.PENDING, target=PaymentStatus.ABANDONED)
    def abandon(self) -> None:
        """The booking ended before any authorization reached the provider."""
        self._moved()


class OperationKind(models.TextChoices):
    AUTHORIZE = "authorize", "Authorize (create and confirm)"
    CAPTURE = "capture", "Capture"
    VOID = "void", "Void (cancel the authorization)"
    REFUND = "refund", "Refund"


class OperationState(models.TextChoices):
    OPEN = "open", "Open: its outcome is not known"
    SUCCEEDED = "succeeded", "Succeeded"
    DECLINED = "declined", "Declined"
    REFUSED = "refused", "Refused by the provider: nothing happened"
    ABANDONED = "abandoned", "Abandoned: it never reached the provider"
    NOT_MADE = "not_made", "Not made: its one call provably did nothing; decided again"
    # A refund the provider made and later failed (its card refused the money): nothing given back.
    FAILED = "failed", "Failed after it was made: the card refused the refund"


class CallOutcome(models.TextChoices):
    """How one call of an operation ended, as the connector classifies it."""

    OK = "ok", "OK"
    DECLINED = "declined", "Declined"
    REFUSED = "refused", "Refused: nothing happened, asking again changes nothing"
    TRANSIENT = "transient", "Transient: nothing happened, ask again"
    AMBIGUOUS = "ambiguous", "Ambiguous: it may have happened"


class PaymentOperationQuerySet(models.QuerySet["PaymentOperation"]):
    def open(self) -> PaymentOperationQuerySet:
        return self.filter(state=OperationState.OPEN)

    def refunds_made(self) -> Decimal:
        """What the succeeded refunds among these gave back (0 when none)."""
        made = self.filter(kind=OperationKind.REFUND, state=OperationState.SUCCEEDED).aggregate(
            total=models.Sum("amount")
        )["total"]
        return made if made is not None else Decimal("0.00")


class PaymentOperation(models.Model):
    """One thing asked of the provider, under one idempotency key: committed before its first
    call, tried (the same key each time) until its outcome is known. The key is derived from our
    payment and the operation (`<payment id>:<kind>:<n>`), never from the customer's key."""

    id = models.BigAutoField(primary_key=True)
    # Indexed by `operation_one_open_per_payment` and `operation_per_payment` (payment first).
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="operations", db_index=False)
    kind = models.CharField(max_length=10, choices=OperationKind.choices)
    seq = models.PositiveSmallIntegerField(help_text="The n-th operation of this kind on the payment.")
    idempotency_key = models.CharField(max_length=255, editable=False)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    # A refund's: the payment's refunded total when it was opened, under the payment's lock with
    # no other operation open, so with none of this refund in it. Made, the refund adds to that
    # total, whoever made the rest of it (our refunds, or the provider's dashboard): a sum of our
    # own refunds alone would leave one made beside a dashboard refund uncounted, to be made again.
    refunded_before = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    state = models.CharField(max_length=10, choices=OperationState.choices, default=OperationState.OPEN)
    tries = models.PositiveSmallIntegerField(default=0)
    # Calls under the key that may have changed something at the provider: counted when a run
    # claims the operation (committed before its call), taken back when that call's answer proves
    # it did nothing (a 429). Only at 0 is "nothing was made under this key" known: a call in
    # flight in another run, or one whose run died, keeps the fence up.
    calls_in_doubt = models.PositiveSmallIntegerField(default=0)
    last_outcome = models.CharField(max_length=10, choices=CallOutcome.choices, blank=True)
    last_http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # The provider's id of what it made (the intent of an authorization, the refund of a refund).
    provider_object_id = models.CharField(max_length=255, blank=True)
    # The provider replayed a 5xx saved under the key: its change committed and its answer is
    # lost, so asking again tells nothing: the next try reads instead.
    answer_lost = models.BooleanField(default=False)
    # The provider replayed an answer saved under the key: the key's one request has finished, so
    # nothing under it is still running or will run again (a replayed 500 may follow a change or
    # none: Stripe keeps the 500 of a request that began). A 500's outcome is indeterminate all the
    # same (the provider reconciles it afterwards), so a complete read that finds nothing is the
    # whole truth only after PAYMENTS_SERVER_ERROR_GRACE_S (`runs._read_is_whole_truth`).
    key_spent = models.BooleanField(default=False, db_default=False)
    # A refund that failed after it was made: when we learnt it, and the provider's reason.
    failed_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=64, blank=True, db_default="")
    opened_at = models.DateTimeField(default=timezone.now)
    last_tried_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = PaymentOperationQuerySet.as_manager()

    class Meta:
        ordering = ["opened_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="operation_key_unique"),
            models.UniqueConstraint(fields=["payment", "kind", "seq"], name="operation_per_payment"),
            # The fence, kept by the database: one operation at a time whose outcome is unknown.
            models.UniqueConstraint(
                fields=["payment"], condition=Q(state="open"), name="operation_one_open_per_payment"
            ),
        ]

    def __str__(self) -> str:
        return self.idempotency_key


class EventState(models.TextChoices):
    RECEIVED = "received", "Received, not processed"
    PROCESSED = "processed", "Processed"
    # Recognised on receipt (or by the worker, before any lock) as nothing new: our row already
    # holds what it says (the echo of our own operation's answer) or has gone past it.
    KNOWN = "known", "Already known: nothing new"
    IGNORED = "ignored", "Ignored (nothing of ours, or a type we do not handle)"
    FAILED = "failed", "Gave up after its tries"


# Deliveries done with: processed, known or ignored (never one still to process, nor one set aside
# as failed, which support reads).
SETTLED_EVENT_STATES = [EventState.PROCESSED, EventState.KNOWN, EventState.IGNORED]


class PaymentEvent(models.Model):
    """A webhook delivery from the provider, verified (Stripe-Signature) and stored as received;
    its event id is unique, so a redelivery is recognised and never applied twice."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=64)
    body = models.BinaryField()
    # When the retention cleared the body of this settled delivery (WEBHOOK_BODY_RETENTION_DAYS);
    # its event id stays, so a redelivery is still recognised.
    body_pruned_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=EventState.choices, default=EventState.RECEIVED)
    tries = models.PositiveSmallIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["event_id"], name="payment_event_unique")]
        indexes = [
            models.Index(
                fields=["received_at"], name="payment_event_unprocessed", condition=Q(state="received")
            ),
            # /metrics: the deliveries set aside, counted without reading every delivery ever kept.
            models.Index(fields=["received_at"], name="payment_event_set_aside", condition=Q(state="failed")),
            # The retention's queue: settled deliveries whose body is still kept.
            models.Index(
                fields=["received_at"],
                name="payment_event_body_kept",
                condition=Q(state__in=SETTLED_EVENT_STATES, body_pruned_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
