"""Everything we know about partners and what they told us.

`Partner` rows carry an adapter and capabilities: recovery rules read capabilities, never codes.
`PartnerAttempt` is written (and committed) before each outbound call and completed after it.
`PartnerReservation` is every reservation a partner holds that we know of.
`PartnerObservation` is every piece of partner truth that came in (response, webhook, lookup,
listing), applied or ignored: the one door of invariant 1 writes it.
`InboundEvent` is every webhook delivery as received, raw.
`OrphanCase` is support's case about a live reservation no booking wants, with its own history.
"""

from __future__ import annotations

import os
import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from bookings.models import Actor


class Adapter(models.TextChoices):
    REFERENCE = "reference", "Reference (JSON, webhooks)"
    LEGACY = "legacy", "Legacy (listing only)"


class Capability(models.TextChoices):
    IDEMPOTENCY_KEYS = "idempotency_keys", "Honours idempotency keys"
    LOOKUP_BY_REFERENCE = "lookup_by_reference", "Lookup by client reference"
    WEBHOOKS = "webhooks", "Sends webhooks"
    ASYNC_CONFIRMATION = "async_confirmation", "Confirms asynchronously"
    CHANGE_LISTING = "change_listing", "Lists changes since a time"


class Partner(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    adapter = models.CharField(max_length=20, choices=Adapter.choices)
    base_url = models.URLField()
    # The API key, or `env:VARIABLE` to read it from the environment. Never shown in the admin.
    api_key = models.CharField(max_length=500, blank=True)
    capabilities = models.JSONField(default=list, blank=True)
    connect_timeout_s = models.FloatField(default=2.0)
    read_timeout_s = models.FloatField(default=10.0)
    max_concurrency = models.PositiveIntegerField(default=8)
    webhook_secret = models.CharField(max_length=500, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", help_text="Legacy partners' local time.")
    enabled = models.BooleanField(default=True)
    # Estimated partner clock minus ours (ms), from Date headers and webhook timestamps, and
    # how far off that estimate may be (±ms: half the round trip and the stamps' whole second).
    clock_skew_ms = models.IntegerField(null=True, blank=True)
    clock_skew_uncertainty_ms = models.PositiveIntegerField(null=True, blank=True)
    clock_skew_measured_at = models.DateTimeField(null=True, blank=True)
    # Legacy change listing: the partner-local `modified` time up to which we have read.
    listing_checkpoint = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def has(self, capability: str) -> bool:
        return capability in (self.capabilities or [])

    @property
    def queue_name(self) -> str:
        return f"partner-{self.code}"

    @property
    def audit_queue_name(self) -> str:
        """The sweeper's audit reads only (`partners.queues`). Not `partner-<code>-audit`: that
        is the queue of a partner coded `<code>-audit`. No dots: Dramatiq's delay and dead-letter
        queues are `.DQ` and `.XQ`."""
        return f"audit-{self.code}"

    @property
    def queue_names(self) -> tuple[str, str]:
        return (self.queue_name, self.audit_queue_name)

    def resolved_api_key(self) -> str:
        return _resolve_secret(self.api_key)

    def resolved_webhook_secret(self) -> str:
        return _resolve_secret(self.webhook_secret)


def _resolve_secret(value: str) -> str:
    if value.startswith("env:"):
        return os.environ.get(value.removeprefix("env:"), "")
    return value


class ReservationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    # Never a partner's word: two reads, apart, found nothing where it held this reservation.
    LOST = "lost", "Lost by the partner"


LIVE_RESERVATION_STATUSES = (ReservationStatus.PENDING, ReservationStatus.CONFIRMED)


class Source(models.TextChoices):
    RESPONSE = "response", "Call response"
    WEBHOOK = "webhook", "Webhook"
    LOOKUP = "lookup", "Lookup"
    LISTING = "listing", "Change listing"


class ReservationRole(models.TextChoices):
    PRIMARY = "primary", "The booking's reservation"
    DUPLICATE = "duplicate", "Duplicate (to compensate)"
    ORPHAN = "orphan", "Orphan (no booking wants it)"


class PartnerReservation(models.Model):
    # The foreign keys below without an index of their own are indexed by a constraint or
    # index that starts with them (every insert pays per index; these would be read by none).
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="reservations", db_index=False
    )
    partner_ref = models.CharField(max_length=100, help_text="The partner's id / booking number.")
    booking = models.ForeignKey(
        "bookings.Booking",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="partner_reservations",
        db_index=False,
    )
    client_reference = models.CharField(max_length=100, blank=True, db_index=True)
    role = models.CharField(max_length=12, choices=ReservationRole.choices, default=ReservationRole.PRIMARY)
    status = models.CharField(max_length=12, choices=ReservationStatus.choices)
    reason = models.CharField(max_length=100, blank=True)
    version = models.PositiveIntegerField(null=True, blank=True)
    partner_created_at = models.DateTimeField(null=True, blank=True)
    partner_modified_at = models.DateTimeField(null=True, blank=True)
    # The booking's terms as the partner last stated them (null: never stated; legacy create
    # answers carry none). Every observation's terms are compared with the booking's.
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    guests = models.PositiveIntegerField(null=True, blank=True)
    total_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    learned_from = models.CharField(max_length=10, choices=Source.choices)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_observed_at = models.DateTimeField(default=timezone.now)
    # Compensation: set when we decided to cancel it at the partner; done when verified.
    compensation_requested_at = models.DateTimeField(null=True, blank=True)
    compensation_reason = models.CharField(max_length=64, blank=True)
    compensated_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["partner", "partner_ref"], name="reservation_unique_per_partner")
        ]
        indexes = [
            models.Index(fields=["booking", "status"], name="reservation_booking_status"),
            # Compensations decided but not verified: the sweeper re-sends them.
            models.Index(
                fields=["compensation_requested_at"],
                name="reservation_owed_compensation",
                condition=Q(compensation_requested_at__isnull=False, compensated_at__isnull=True),
            ),
        ]
        ordering = ["first_seen_at", "id"]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.partner_ref}"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_RESERVATION_STATUSES


class Operation(models.TextChoices):
    CREATE = "create", "Create"
    GET = "get", "Get"
    LOOKUP = "lookup", "Lookup by reference"
    LIST = "list", "Change listing"
    CANCEL = "cancel", "Cancel"


class Outcome(models.TextChoices):
    IN_FLIGHT = "in_flight", "In flight"
    OK = "ok", "OK"
    REJECTED = "rejected", "Rejected by partner"
    AMBIGUOUS = "ambiguous", "Ambiguous (may have happened)"
    TRANSIENT = "transient", "Transient (did not happen)"
    PERMANENT = "permanent", "Permanent error"


class PartnerAttemptQuerySet(models.QuerySet["PartnerAttempt"]):
    def fencing(self) -> PartnerAttemptQuerySet:
        """Create attempts whose outcome is not known: they fence the booking (invariant 4)."""
        return self.filter(
            operation=Operation.CREATE,
            outcome__in=[Outcome.IN_FLIGHT, Outcome.AMBIGUOUS],
            resolved_at__isnull=True,
        )


class PartnerAttempt(models.Model):
    id = models.BigAutoField(primary_key=True)
    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Indexed by `attempt_partner_time` and `attempt_booking_time`, not by indexes of their own.
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="attempts", db_index=False)
    booking = models.ForeignKey(
        "bookings.Booking",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="partner_attempts",
        db_index=False,
    )
    reservation = models.ForeignKey(
        PartnerReservation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="attempts",
    )
    operation = models.CharField(max_length=10, choices=Operation.choices)
    idempotency_key = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.IN_FLIGHT)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Why the partner's answer was refused at our edge (malformed, or a value out of range);
    # empty when it was usable. Counted in partner health; repeated, it hands the booking over.
    refusal = models.CharField(max_length=300, blank=True)
    partner_time = models.DateTimeField(null=True, blank=True)
    # An ambiguous create stays a fence until a lookup says what the partner holds.
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=40, blank=True)

    objects = PartnerAttemptQuerySet.as_manager()

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["booking", "started_at"], name="attempt_booking_time"),
            models.Index(fields=["partner", "started_at"], name="attempt_partner_time"),
            # Unresolved creates (fences): checked before every create and by every sweep.
            models.Index(
                fields=["booking", "started_at"],
                name="attempt_fencing",
                condition=Q(
                    operation="create", outcome__in=["in_flight", "ambiguous"], resolved_at__isnull=True
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.outcome} ({self.request_id})"


class ObservationResult(models.TextChoices):
    APPLIED = "applied", "Applied"
    STALE = "stale", "Ignored: older than what we hold"
    DUPLICATE = "duplicate", "Ignored: same as what we hold"


class PartnerObservation(models.Model):
    """One piece of partner truth about one reservation, as it came in, applied or ignored."""

    id = models.BigAutoField(primary_key=True)
    reservation = models.ForeignKey(PartnerReservation, on_delete=models.PROTECT, related_name="observations")
    # Indexed by `observation_booking_time` (booking first), not by an index of its own.
    booking = models.ForeignKey(
        "bookings.Booking",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="partner_observations",
        db_index=False,
    )
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=12, choices=ReservationStatus.choices)
    version = models.PositiveIntegerField(null=True, blank=True)
    partner_modified_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    result = models.CharField(max_length=10, choices=ObservationResult.choices)
    attempt = models.ForeignKey(
        PartnerAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    inbound_event = models.ForeignKey(
        "partners.InboundEvent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="observations",
    )
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["received_at", "id"]
        indexes = [models.Index(fields=["booking", "received_at"], name="observation_booking_time")]

    def __str__(self) -> str:
        return f"{self.reservation_id} {self.status} v{self.version} {self.result}"


class InboundState(models.TextChoices):
    RECEIVED = "received", "Received, not processed"
    PROCESSED = "processed", "Processed"
    REJECTED = "rejected", "Refused on receipt"
    # Authentic, but its content cannot be parsed or is out of range: never retried.
    INVALID = "invalid", "Invalid content (quarantined)"
    FAILED = "failed", "Gave up after its tries"


class InboundResult(models.TextChoices):
    APPLIED = "applied", "Applied"
    STALE = "stale", "Stale (older than what we hold)"
    DUPLICATE = "duplicate", "Duplicate"
    UNLINKED = "unlinked", "For no booking of ours (orphan case)"
    REJECTED = "rejected", "Unverified (signature or size)"
    LATE = "late", "Authentic, but signed outside the time tolerance (synced instead)"
    UNSUPPORTED = "unsupported", "Authentic, but of an event type we do not handle"


class InboundEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="inbound_events", db_index=False
    )
    event_id = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    # The body as delivered; of a refused delivery only its first WEBHOOK_EVIDENCE_BYTES.
    raw_body = models.BinaryField()
    body_size = models.PositiveIntegerField(null=True, blank=True)  # as delivered (or declared)
    body_sha256 = models.CharField(max_length=64, blank=True)  # of the whole body, when read
    # Only the headers needed to re-verify and to estimate skew; no credentials.
    headers = models.JSONField(default=dict)
    # When the retention cleared the body of this processed delivery (WEBHOOK_BODY_RETENTION_DAYS);
    # its id, hash, size and headers stay, so a redelivery is still recognised.
    body_pruned_at = models.DateTimeField(null=True, blank=True)
    source_address = models.CharField(max_length=64, blank=True)  # config.network.client_ip
    partner_timestamp = models.DateTimeField(null=True, blank=True)
    # The HMAC verifies with the partner's secret: the content is the partner's (however late).
    signature_valid = models.BooleanField(default=False)
    # A verified redelivery of an event we already hold: recorded, never applied again.
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=InboundState.choices, default=InboundState.RECEIVED)
    result = models.CharField(max_length=12, choices=InboundResult.choices, blank=True)
    error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    tries = models.PositiveSmallIntegerField(default=0)  # processing runs begun (WEBHOOK_PROCESS_MAX_TRIES)
    booking = models.ForeignKey(
        "bookings.Booking",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="inbound_events",
    )
    reservation = models.ForeignKey(
        PartnerReservation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="inbound_events",
    )

    class Meta:
        constraints = [
            # Only verified, accepted deliveries claim an event id: a forged one cannot block the
            # real one, and a refused one (late, or invalid content) is refused again, not a crash.
            models.UniqueConstraint(
                fields=["partner", "event_id"],
                condition=Q(signature_valid=True, duplicate_of__isnull=True)
                & ~Q(state__in=["rejected", "invalid"]),
                name="inbound_event_unique_verified",
            )
        ]
        indexes = [
            models.Index(fields=["state", "received_at"], name="inbound_state_time"),
            # A partner's feed and health (newest first, over a window).
            models.Index(fields=["partner", "received_at"], name="inbound_partner_time"),
            # The retention's queue: processed authentic deliveries whose body is still kept.
            models.Index(
                fields=["received_at"],
                name="inbound_body_kept",
                condition=Q(signature_valid=True, state="processed", body_pruned_at__isnull=True),
            ),
        ]
        ordering = ["-received_at", "-id"]
        permissions = [("replay_inboundevent", "Can re-verify and replay a stored webhook")]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.event_id}"

    @property
    def evidence_complete(self) -> bool:
        """Is the whole delivered body kept (not only its first bytes)?"""
        return self.body_size is None or len(self.raw_body or b"") == self.body_size


class OrphanCaseState(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class OrphanFinding(models.TextChoices):
    """Why no booking wants the reservation: as the one door found it, or (a booking's duplicate)
    as its compensation gave up on it."""

    UNKNOWN_REFERENCE = "unknown_reference", "Its client reference names no booking of ours at this partner"
    NO_REFERENCE = "no_reference", "It carries no client reference"
    # Its booking keeps a reservation of its own and goes on as it is: only this one is left.
    DUPLICATE = "duplicate", "A duplicate of its booking's reservation that we could not cancel"


class OrphanAutomation(models.TextChoices):
    """What automation does (or did) about the orphan."""

    CANCELLING = "cancelling", "Cancelling it at the partner"
    LEFT_TO_SUPPORT = "left_to_support", "Left to support (PARTNER_COMPENSATE_ORPHANS is off)"
    # The compensation's tries are exhausted: support owns it, the sweeper stops re-sending it.
    CANCEL_FAILED = "cancel_failed", "Gave up cancelling it (tries exhausted)"
    CANCEL_VERIFIED = "cancel_verified", "Cancelled it at the partner, verified"


class OrphanClosing(models.TextChoices):
    CANCEL_VERIFIED = "cancel_verified", "Cancelled at the partner, verified"
    PARTNER_SETTLED = "partner_settled", "The partner no longer holds it live"
    LINKED = "linked", "Linked to a booking"
    SUPPORT = "support", "Closed by support with a note"
    # A duplicate's case, once its booking no longer keeps its own reservation (a cancel, an end,
    # a move to support): the stray holds the booking up again, and the booking's move takes it up.
    TAKEN_UP = "taken_up", "Taken up by its booking, no longer going ahead"


class OrphanCase(models.Model):
    """A support case about a partner reservation that no booking of ours wants.

    Opened by the one door when it finds such a reservation live, or by the compensation when it
    gives up cancelling a booking's duplicate whose booking keeps its own reservation (the stray
    is support's, the booking is left as it is); closed by automation when the cancel is verified
    (or the partner settles an orphan), or by support (cancel it, link an orphan to a booking, or
    close it with a note). Its history is its own append-only `OrphanCaseEvent` rows.
    """

    reservation = models.OneToOneField(
        PartnerReservation, on_delete=models.PROTECT, related_name="orphan_case"
    )
    state = models.CharField(max_length=8, choices=OrphanCaseState.choices, default=OrphanCaseState.OPEN)
    opened_at = models.DateTimeField(default=timezone.now)
    opened_because = models.CharField(max_length=20, choices=OrphanFinding.choices)
    automation = models.CharField(max_length=16, choices=OrphanAutomation.choices)
    # The booking support linked it to (it is that booking's reservation from then on).
    booking = models.ForeignKey(
        "bookings.Booking", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_because = models.CharField(max_length=16, choices=OrphanClosing.choices, blank=True)
    closed_by = models.CharField(max_length=150, blank=True)
    closed_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["state", "opened_at"], name="orphan_case_queue")]
        permissions = [
            ("cancel_orphan", "Can cancel an orphan reservation at the partner"),
            ("link_orphan", "Can link an orphan reservation to a booking"),
            ("close_orphan", "Can close an orphan case the partner no longer holds live"),
            ("close_live_orphan", "Can close an orphan case while the partner still holds it live"),
        ]

    def __str__(self) -> str:
        return f"orphan case #{self.pk} ({self.reservation_id})"

    @property
    def is_open(self) -> bool:
        return self.state == OrphanCaseState.OPEN

    @property
    def of_duplicate(self) -> bool:
        """The stray duplicate of a booking that keeps its own reservation (`reservation.booking`)."""
        return self.opened_because == OrphanFinding.DUPLICATE

    @property
    def flagged(self) -> bool:
        """Automation gave up: a person must act."""
        return self.is_open and self.automation == OrphanAutomation.CANCEL_FAILED


class OrphanCaseEventQuerySet(models.QuerySet["OrphanCaseEvent"]):
    def update(self, **kwargs):  # type: ignore[override]
        raise TypeError("An orphan case's history is append-only.")

    def delete(self):  # type: ignore[override]
        raise TypeError("An orphan case's history is append-only.")


class OrphanCaseEvent(models.Model):
    """One append-only row of an orphan case's history: every automation step and support action
    on it, with the actor and the time (an orphan has no booking timeline of its own)."""

    id = models.BigAutoField(primary_key=True)
    # Indexed by `orphan_event_case_time` (case first), not by an index of its own.
    case = models.ForeignKey(OrphanCase, on_delete=models.PROTECT, related_name="events", db_index=False)
    kind = models.CharField(max_length=64)  # namespaced: orphan.opened, support.orphan_linked, ...
    actor = models.CharField(max_length=16, choices=Actor.choices)
    actor_label = models.CharField(max_length=150, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict, blank=True)

    objects = OrphanCaseEventQuerySet.as_manager()

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["case", "occurred_at", "id"], name="orphan_event_case_time")]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.occurred_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise TypeError("An orphan case's history is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("An orphan case's history is append-only.")
