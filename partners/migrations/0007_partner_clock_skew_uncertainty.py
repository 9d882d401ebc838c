"""A partner's clock skew estimate keeps how far off it may be (±ms): half our round trip plus
half the stamps' whole second. Nullable: rows measured before it have no bound until their next
sample, and code still running without it never writes it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0006_orphan_cases"),
    ]

    operations = [
        migrations.AddField(
            model_name="partner",
            name="clock_skew_uncertainty_ms",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
