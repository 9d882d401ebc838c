from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def keep_the_offers_terms(apps, schema_editor):
    # Quotes and bookings made before this kept no terms: theirs are their offer's as they stand.
    Offer = apps.get_model("bookings", "Offer")
    for name in ("Quote", "Booking"):
        offer = Offer.objects.filter(pk=OuterRef("offer_id"))
        apps.get_model("bookings", name).objects.update(
            free_cancellation_hours=Subquery(offer.values("free_cancellation_hours")[:1]),
            cancellation_fee_percent=Subquery(offer.values("cancellation_fee_percent")[:1]),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0014_offer_currency_iso4217"),
    ]

    operations = [
        migrations.AddField(
            model_name="booking",
            name="cancellation_fee_percent",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=5),
        ),
        migrations.AddField(
            model_name="booking",
            name="free_cancellation_hours",
            field=models.PositiveIntegerField(default=24),
        ),
        migrations.AddField(
            model_name="quote",
            name="cancellation_fee_percent",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=5),
        ),
        migrations.AddField(
            model_name="quote",
            name="free_cancellation_hours",
            field=models.PositiveIntegerField(default=24),
        ),
        migrations.RunPython(keep_the_offers_terms, migrations.RunPython.noop),
    ]
