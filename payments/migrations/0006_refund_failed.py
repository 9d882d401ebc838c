from decimal import Decimal

from django.db import migrations, models


class Migration(migrations.Migration):
    # Database defaults: processes still on the old code insert payments and operations without
    # these columns during a rolling deploy.
    dependencies = [
        ("payments", "0005_operation_key_spent"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="failed_refunds_owed",
            field=models.DecimalField(
                db_default=Decimal("0.00"), decimal_places=2, default=Decimal("0.00"), max_digits=12
            ),
        ),
        migrations.AddField(
            model_name="paymentoperation",
            name="failed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="paymentoperation",
            name="failure_reason",
            field=models.CharField(blank=True, db_default="", max_length=64),
        ),
        migrations.AlterField(
            model_name="paymentoperation",
            name="state",
            field=models.CharField(
                choices=[
                    ("open", "Open: its outcome is not known"),
                    ("succeeded", "Succeeded"),
                    ("declined", "Declined"),
                    ("refused", "Refused by the provider: nothing happened"),
                    ("abandoned", "Abandoned: it never reached the provider"),
                    ("not_made", "Not made: its one call provably did nothing; decided again"),
                    ("failed", "Failed after it was made: the card refused the refund"),
                ],
                default="open",
                max_length=10,
            ),
        ),
    ]
