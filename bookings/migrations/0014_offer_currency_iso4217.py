# An offer's currency is an active ISO 4217 code with a minor unit (bookings.currencies): a validator only, no schema change.

from django.db import migrations, models

import bookings.currencies


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0013_audit_queue_by_truth_learned"),
    ]

    operations = [
        migrations.AlterField(
            model_name="offer",
            name="currency",
            field=models.CharField(
                help_text="ISO 4217, such as EUR or JPY.",
                max_length=3,
                validators=[bookings.currencies.validate_currency],
            ),
        ),
    ]
