"""The booking core's admin: how a booking and its timeline rows are presented, read-only.

Nothing here changes a booking: states move only through services. The support console
(`reconciliation/admin.py`) extends these classes with the service-backed actions, the timeline
and the custom pages; the booking core itself knows nothing of the partner side (docs/design.md).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.timesince import timesince

from bookings import pricing
from bookings.models import Booking, BookingEvent, Offer
from bookings.states import CustomerStatus


class CustomerStatusFilter(admin.SimpleListFilter):
    title = "customer-facing status"
    parameter_name = "customer_status"

    def lookups(self, request, model_admin):
        return CustomerStatus.choices

    def queryset(self, request, queryset):
        if self.value() in CustomerStatus.values:
            return queryset.filter(customer_status=self.value())
        return queryset


class AttentionReasonFilter(admin.SimpleListFilter):
    title = "needs-attention reason"
    parameter_name = "attention_reason"

    def lookups(self, request, model_admin):
        reasons = (
            Booking.objects.exclude(attention_reason="")
            .order_by("attention_reason")
            .values_list("attention_reason", flat=True)
            .distinct()
        )
        return [(reason, reason) for reason in reasons]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(attention_reason=self.value())
        return queryset


AGE_BUCKETS = {
    # value: (label, newer than, older than)
    "lt5m": ("under 5 minutes", None, timedelta(minutes=5)),
    "5m-1h": ("5 minutes to 1 hour", timedelta(minutes=5), timedelta(hours=1)),
    "1h-1d": ("1 hour to 1 day", timedelta(hours=1), timedelta(days=1)),
    "gt1d": ("over 1 day", timedelta(days=1), None),
}


class AgeFilter(admin.SimpleListFilter):
    """Age of the booking (since it was requested)."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _, _) in AGE_BUCKETS.items()]

    def queryset(self, request, queryset: QuerySet[Booking]):
        bucket = AGE_BUCKETS.get(self.value() or "")
        if bucket is None:
            return queryset
        _, at_least, under = bucket
        now = timezone.now()
        if at_least is not None:
            queryset = queryset.filter(created_at__lte=now - at_least)
        if under is not None:
            queryset = queryset.filter(created_at__gt=now - under)
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _swapped(row: str | tuple[str, ...], names: dict[str, str]) -> str | tuple[str, ...]:
    """A fieldset's row (a field or a line of fields) with some fields in place of others."""
    if isinstance(row, str):
        return names.get(row, row)
    return tuple(names.get(name, name) for name in row)


@admin.register(Booking)
class BookingAdmin(ReadOnlyAdmin):
    list_display = (
        "reference",
        "status",
        "customer_status_label",
        "partner",
        "attention_reason",
        "age",
        "customer_email",
    )
    list_filter = ("status", CustomerStatusFilter, "partner", AttentionReasonFilter, AgeFilter)
    search_fields = ("reference", "customer__email")
    search_help_text = "Booking reference or the customer's email."
    list_select_related = ("partner", "customer")
    date_hierarchy = None
    ordering = ("-created_at",)
    show_full_result_count = False  # no COUNT(*) over 100,000 bookings on every page
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("reference", "status", "customer_status_label"),
                    ("attention_reason", "attention_detail"),
                    ("partner", "offer", "partner_key"),
                    ("customer", "customer_email"),
                )
            },
        ),
        (
            "Stay",
            {"fields": ("stay_dates", ("start_date", "end_date", "guests"), ("total_price", "currency"))},
        ),
        (
            "Automation",
            {
                "fields": (
                    ("created_at", "status_changed_at", "deadline"),
                    ("next_check_at", "last_synced_at", "submission_count"),
                )
            },
        ),
    )
    readonly_fields = (
        "reference",
        "status",
        "customer_status_label",
        "attention_reason",
        "attention_detail",
        "partner",
        "offer",
        "partner_key",
        "customer",
        "customer_account",
        "customer_email",
        "stay_dates",
        "start_date",
        "end_date",
        "guests",
        "total_price",
        "currency",
        "created_at",
        "status_changed_at",
        "deadline",
        "next_check_at",
        "last_synced_at",
        "submission_count",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Booking | None = None):
        """The customer's account links to its admin page only for those who may open it (Django
        links a read-only relation whatever the viewer may see: support met a 403 there)."""
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.has_perm("auth.view_user"):
            return fieldsets
        unlinked = {"customer": "customer_account"}
        return [
            (name, {**options, "fields": [_swapped(row, unlinked) for row in options["fields"]]})
            for name, options in fieldsets
        ]

    @admin.display(description="customer")
    def customer_account(self, booking: Booking) -> str:
        return str(booking.customer)

    @admin.display(description="dates (as the customer reads them)")
    def stay_dates(self, booking: Booking) -> str:
        """A day offer's by its days ("1 April 2027 (1 day)"); the end date beside it is the
        stored one, sent to the partner: the day after the last day."""
        return pricing.stay_dates_of(booking)

    @admin.display(description="customer sees")
    def customer_status_label(self, booking: Booking) -> str:
        return booking.get_customer_status_display()

    @admin.display(description="age", ordering="created_at")
    def age(self, booking: Booking) -> str:
        return timesince(booking.created_at, timezone.now())

    @admin.display(description="customer email", ordering="customer__email")
    def customer_email(self, booking: Booking) -> str:
        return booking.customer.email

    @admin.display(description="key sent to the partner")
    def partner_key(self, booking: Booking) -> str:
        return booking.partner_key


@admin.register(BookingEvent)
class BookingEventAdmin(ReadOnlyAdmin):
    """Append-only timeline rows: looked at, never touched."""

    list_display = (
        "occurred_at",
        "booking",
        "kind",
        "actor",
        "actor_label",
        "from_state",
        "to_state",
        "summary",
    )
    list_filter = ("actor", "kind")
    search_fields = ("=booking__reference", "kind", "actor_label")
    list_select_related = ("booking",)
    show_full_result_count = False
    readonly_fields = [f.name for f in BookingEvent._meta.fields]


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = (
        "product_id",
        "name",
        "partner",
        "unit_price",
        "price_unit",
        "currency",
        "capacity",
        "is_active",
    )
    list_filter = ("partner", "is_active")
    search_fields = ("product_id", "name")
