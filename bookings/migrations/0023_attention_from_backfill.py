from django.db import migrations
from django.db.models import F, OuterRef, Q, Subquery

# Bookings with support are few; a batch bounds how many rows one UPDATE locks all the same.
BATCH = 500


def where_support_got_them(apps, schema_editor):
    """Bookings with support when `attention_from` came (bookings/0022) kept '': one that had
    ended before support got it (a stray reservation) was still offered the cancel that moves it
    back to `cancelling`. Each gets the state its latest move into `needs_attention` came from
    (its timeline row), as `flag_for_attention` would have written it. Only bookings in
    `needs_attention` whose value differs are updated (a targeted UPDATE, by primary key, in
    batches); one with no such row is left as it is. Its view is unchanged: a migration mails
    nobody, and what it shows is derived from `needs_attention` either way."""
    Booking = apps.get_model("bookings", "Booking")
    BookingEvent = apps.get_model("bookings", "BookingEvent")
    came_from = Subquery(
        BookingEvent.objects.filter(booking_id=OuterRef("pk"), to_state="needs_attention")
        .exclude(from_state__in=["", "needs_attention"])
        .order_by("-occurred_at", "-id")
        .values("from_state")[:1]
    )
    with_support = Booking.objects.filter(status="needs_attention").order_by("pk")
    ids = list(with_support.values_list("pk", flat=True))
    for start in range(0, len(ids), BATCH):
        (
            Booking.objects.filter(pk__in=ids[start : start + BATCH], status="needs_attention")
            .annotate(came_from=came_from)
            .filter(came_from__isnull=False)
            .filter(~Q(attention_from=F("came_from")))
            .update(attention_from=came_from)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0022_attention_from"),
    ]

    operations = [
        migrations.RunPython(where_support_got_them, migrations.RunPython.noop, elidable=True),
    ]
