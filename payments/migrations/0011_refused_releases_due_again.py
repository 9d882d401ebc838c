from django.db import migrations
from django.db.models.functions import Now


def refused_releases_due_again(apps, schema_editor):
    """Holds a run left to support after the provider refused to release them, before runs kept
    `release_refused`: their customer is still told "we are holding" (or, cancelled, "we are
    releasing"). Due again, the next run decides the same void, finds it refused for good and
    tells the customer the truth (`runs._keep_given_up`). Only those of bookings that ended
    (owing nothing, as a release is told only then): a lapse guard's void refused for a booking
    still undecided is told nothing, and made due would only be left to support a second time."""
    Payment = apps.get_model("payments", "Payment")
    Payment.objects.filter(
        status="authorized",
        next_check_at__isnull=True,
        release_refused=False,
        operations__kind="void",
        operations__state="refused",
        booking__status__in=("rejected", "failed", "expired", "cancelled"),
    ).update(next_check_at=Now())


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0010_release_refused"),
    ]

    operations = [
        migrations.RunPython(refused_releases_due_again, migrations.RunPython.noop, elidable=True),
    ]
