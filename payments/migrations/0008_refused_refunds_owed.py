from decimal import Decimal

from django.db import migrations, models


class Migration(migrations.Migration):
    # A database default: processes still on the old code insert payments without this column
    # during a rolling deploy.
    dependencies = [
        ("payments", "0007_refunded_outside"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="refused_refunds_owed",
            field=models.DecimalField(
                db_default=Decimal("0.00"), decimal_places=2, default=Decimal("0.00"), max_digits=12
            ),
        ),
    ]
