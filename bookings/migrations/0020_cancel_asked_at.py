# A cancel the customer asked for stands (`Booking.cancel_asked_at`): a booking whose cancel did not
# complete stays `cancelling` while support has it, and is mailed so (`cancel_not_done`). Nullable:
# the column is added without a rewrite, and code still running before it inserts bookings without it.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0019_notification_money_words"),
    ]

    operations = [
        migrations.AddField(
            model_name="booking",
            name="cancel_asked_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="notification",
            name="kind",
            field=models.CharField(
                choices=[
                    ("confirmed", "Confirmed"),
                    ("not_confirmed", "Not confirmed"),
                    ("cancelled", "Cancelled"),
                    ("disrupted", "Disrupted"),
                    ("taking_longer", "Taking longer"),
                    ("cancel_not_done", "Cancellation not done yet"),
                    ("money", "Money (charged, refunded, released)"),
                ],
                max_length=16,
            ),
        ),
    ]
