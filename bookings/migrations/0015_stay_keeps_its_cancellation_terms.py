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


def terms(model_name: str, operation=migrations.AddField) -> list:
    # With defaults in the database: a process still on the code before these columns (a rolling
    # deploy) inserts quotes and bookings without them.
    return [
        operation(
            model_name=model_name,
            name="cancellation_fee_percent",
            field=models.DecimalField(db_default=0, decimal_places=2, default=0, max_digits=5),
        ),
        operation(
            model_name=model_name,
            name="free_cancellation_hours",
            field=models.PositiveIntegerField(db_default=24, default=24),
        ),
    ]


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0014_offer_currency_iso4217"),
    ]

    operations = [
        *terms("booking"),
        *terms("quote"),
        *terms("offer", migrations.AlterField),
        migrations.RunPython(keep_the_offers_terms, migrations.RunPython.noop),
    ]
