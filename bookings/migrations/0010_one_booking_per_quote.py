"""A quote is booked once, whatever Idempotency-Key books it (the pages' keys are made in the
browser now). Its unique index also serves the quote's foreign key, which loses its own: first,
since dropping a column's index drops every index on it, a unique one too."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count


def unlink_later_bookings_of_a_quote(apps, schema_editor):
    """Before the rule, two keys could book one quote: the first booking keeps the link (the
    price it holds is on every booking anyway)."""
    Booking = apps.get_model("bookings", "Booking")
    booked_twice = (
        Booking.objects.filter(quote__isnull=False)
        .values("quote")
        .annotate(bookings=Count("id"))
        .filter(bookings__gt=1)
        .values_list("quote", flat=True)
    )
    for quote_id in booked_twice:
        later = (
            Booking.objects.filter(quote_id=quote_id)
            .order_by("created_at", "id")
            .values_list("id", flat=True)[1:]
        )
        Booking.objects.filter(id__in=list(later)).update(quote=None)


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0009_payments"),
    ]

    operations = [
        migrations.RunPython(unlink_later_bookings_of_a_quote, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="booking",
            name="quote",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="bookings.quote",
            ),
        ),
        migrations.AddConstraint(
            model_name="booking",
            constraint=models.UniqueConstraint(
                condition=models.Q(("quote__isnull", False)), fields=("quote",), name="booking_one_per_quote"
            ),
        ),
    ]
