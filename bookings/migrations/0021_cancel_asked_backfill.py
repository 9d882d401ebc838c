from django.db import migrations
from django.db.models import F, OuterRef, Subquery


def cancels_asked_before_the_field(apps, schema_editor):
    """Bookings whose cancel stood when `cancel_asked_at` came: those still `cancel_requested`
    (asked when they moved there), and those with support because that cancel did not complete
    (their last move was `cancel_requested` -> `needs_attention`, never shown confirmed). Without
    it, a cancel that fails after the deploy would show them `pending` again, and the customer
    would be offered to cancel again what support already has. Their view itself changes at its
    next refresh (support's action), as any view does: a migration mails nobody."""
    Booking = apps.get_model("bookings", "Booking")
    BookingEvent = apps.get_model("bookings", "BookingEvent")
    Booking.objects.filter(status="cancel_requested", cancel_asked_at__isnull=True).update(
        cancel_asked_at=F("status_changed_at")
    )
    last_move = (
        BookingEvent.objects.filter(booking_id=OuterRef("pk"))
        .exclude(to_state="")
        .order_by("-occurred_at", "-id")
    )
    Booking.objects.filter(
        status="needs_attention", cancel_asked_at__isnull=True, confirmed_shown_at__isnull=True
    ).annotate(came_from=Subquery(last_move.values("from_state")[:1])).filter(
        came_from="cancel_requested"
    ).update(cancel_asked_at=F("status_changed_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0020_cancel_asked_at"),
    ]

    operations = [
        migrations.RunPython(cancels_asked_before_the_field, migrations.RunPython.noop, elidable=True),
    ]
