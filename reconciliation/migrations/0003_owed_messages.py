# A support action's message, owed until it is on the queue: the sweeper sends what the broker did not take.

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0016_cancellation_fee_share_validators"),
        ("reconciliation", "0002_action_tokens"),
    ]

    operations = [
        migrations.CreateModel(
            name="OwedMessage",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("actor_name", models.CharField(max_length=40)),
                ("action_token", models.CharField(blank=True, db_default="", max_length=64)),
                ("owed_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "booking",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="bookings.booking"
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("sent_at__isnull", True)),
                        fields=["owed_at"],
                        name="owed_message_unsent",
                    )
                ],
            },
        ),
    ]
