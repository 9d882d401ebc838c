"""The partner side's admin: partners (never their secrets), what they hold and told us, read-only.

The support console (`reconciliation/admin.py`) extends these with the partner health page,
the re-verify / replay actions for stored webhooks, and the orphan cases' queue and actions.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.utils.html import format_html

from bookings.admin import ReadOnlyAdmin
from partners.models import (
    InboundEvent,
    OrphanCase,
    Partner,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
)
from partners.services.skew import skew_verdict

SECRET_FIELDS = ("api_key", "webhook_secret")


def _set_or_not(value: str) -> str:
    if not value:
        return "not set"
    return "set (from the environment)" if value.startswith("env:") else "set"


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    """Secrets are excluded from every form and page; only whether they are set is shown."""

    list_display = (
        "code",
        "name",
        "adapter",
        "enabled",
        "capability_list",
        "api_key_status",
        "webhook_secret_status",
        "clock_skew",
    )
    list_filter = ("adapter", "enabled")
    search_fields = ("code", "name")
    exclude = SECRET_FIELDS
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = (
        "api_key_status",
        "webhook_secret_status",
        "clock_skew",
        "clock_skew_ms",
        "clock_skew_uncertainty_ms",
        "clock_skew_measured_at",
        "listing_checkpoint",
        "created_at",
        "updated_at",
    )

    @admin.display(description="API key")
    def api_key_status(self, partner: Partner) -> str:
        return _set_or_not(partner.api_key)

    @admin.display(description="webhook secret")
    def webhook_secret_status(self, partner: Partner) -> str:
        return _set_or_not(partner.webhook_secret)

    @admin.display(description="clock skew")
    def clock_skew(self, partner: Partner) -> str:
        return skew_verdict(partner).text

    @admin.display(description="capabilities")
    def capability_list(self, partner: Partner) -> str:
        return ", ".join(partner.capabilities or []) or "-"

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # bookings and the whole partner history point at it


@admin.register(PartnerReservation)
class PartnerReservationAdmin(ReadOnlyAdmin):
    list_display = (
        "partner_ref",
        "partner",
        "booking",
        "role",
        "status",
        "version",
        "partner_modified_at",
        "compensation_requested_at",
        "compensated_at",
    )
    list_filter = ("partner", "status", "role")
    search_fields = ("=partner_ref", "=booking__reference", "client_reference")
    list_select_related = ("partner", "booking")
    show_full_result_count = False
    readonly_fields = [f.name for f in PartnerReservation._meta.fields]


@admin.register(PartnerAttempt)
class PartnerAttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "partner",
        "booking",
        "operation",
        "outcome",
        "http_status",
        "latency_ms",
        "resolution",
    )
    list_filter = ("partner", "operation", "outcome")
    search_fields = ("=booking__reference", "=request_id", "=idempotency_key")
    list_select_related = ("partner", "booking")
    show_full_result_count = False
    readonly_fields = [f.name for f in PartnerAttempt._meta.fields]


@admin.register(PartnerObservation)
class PartnerObservationAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "reservation", "booking", "source", "status", "version", "result")
    list_filter = ("source", "result", "status")
    search_fields = ("=booking__reference", "=reservation__partner_ref")
    list_select_related = ("reservation", "booking")
    show_full_result_count = False
    readonly_fields = [f.name for f in PartnerObservation._meta.fields]


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "received_at",
        "partner",
        "event_id",
        "source_address",
        "signature_valid",
        "state",
        "result",
        "booking",
        "duplicate_of",
    )
    list_filter = ("partner", "state", "result", "signature_valid")
    search_fields = ("=event_id", "=booking__reference", "=source_address", "=body_sha256")
    list_select_related = ("partner", "booking")
    show_full_result_count = False
    readonly_fields = (
        "partner",
        "event_id",
        "received_at",
        "partner_timestamp",
        "source_address",
        "signature_valid",
        "duplicate_of",
        "state",
        "result",
        "error",
        "tries",
        "processed_at",
        "booking",
        "reservation",
        "body_size",
        "body_sha256",
        "headers_display",
        "body_display",
    )
    exclude = ("raw_body", "headers")

    @admin.display(description="headers (signature hidden)")
    def headers_display(self, event: InboundEvent) -> str:
        shown = {k: ("…" if k == "webhook-signature" else v) for k, v in (event.headers or {}).items()}
        return format_html("<pre>{}</pre>", json.dumps(shown, indent=2, sort_keys=True))

    @admin.display(description="body as received")
    def body_display(self, event: InboundEvent) -> str:
        raw = bytes(event.raw_body or b"")
        try:
            text = json.dumps(json.loads(raw), indent=2, sort_keys=True)
        except (ValueError, RecursionError):
            text = raw.decode(errors="replace")
        kept = (
            ""
            if event.evidence_complete
            else f"Only its first {len(raw)} of {event.body_size} bytes were kept. "
        )
        if event.body_pruned_at is not None:
            kept = (
                f"Its body was cleared on {event.body_pruned_at:%Y-%m-%d} (retention); hash and size stay. "
            )
        unverified = "" if event.signature_valid else "Unverified: anyone could have sent this. "
        return format_html("<p>{}{}</p><pre>{}</pre>", unverified, kept, text)


@admin.register(OrphanCase)
class OrphanCaseAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "reservation",
        "state",
        "automation",
        "opened_at",
        "opened_because",
        "closed_because",
    )
    list_filter = ("state", "automation", "opened_because")
    search_fields = ("=reservation__partner_ref", "reservation__client_reference")
    list_select_related = ("reservation",)
    readonly_fields = [f.name for f in OrphanCase._meta.fields]
