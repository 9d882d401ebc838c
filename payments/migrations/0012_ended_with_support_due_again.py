from django.db import migrations
from django.db.models.functions import Now

ENDS = ("cancelled", "rejected", "failed", "expired")


def ended_with_support_due_again(apps, schema_editor):
    """Payments of bookings support took up after they had ended (`Booking.ended_with_support`),
    before what such a booking owes followed its end (`payments.decisions.owed`): their refund (a
    cancelled booking's, less its fee) or their hold's release waited for support. A run left a
    charge at rest and a hold due only before it lapses; due now, the next run refunds or
    releases it, and one with nothing to do finds nothing."""
    Payment = apps.get_model("payments", "Payment")
    Payment.objects.filter(
        status__in=("authorized", "captured"),
        booking__status="needs_attention",
        booking__attention_from__in=ENDS,
    ).update(next_check_at=Now())


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0011_refused_releases_due_again"),
        ("bookings", "0023_attention_from_backfill"),
    ]

    operations = [
        migrations.RunPython(ended_with_support_due_again, migrations.RunPython.noop, elidable=True),
    ]
