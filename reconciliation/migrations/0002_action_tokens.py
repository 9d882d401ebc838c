# What each support action token was first used for: the same token asking anything else is refused.

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0001_refund_proposals"),
    ]

    operations = [
        migrations.CreateModel(
            name="ActionToken",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("token", models.CharField(max_length=64, unique=True)),
                ("action", models.CharField(max_length=40)),
                ("targets", models.JSONField()),
                ("params", models.JSONField(default=dict)),
                ("operator_label", models.CharField(max_length=150)),
                ("used_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
    ]
