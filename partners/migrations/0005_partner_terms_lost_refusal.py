"""Partner reservations keep the terms the partner states (compared with the booking's), a
reservation the partner no longer knows can be `lost`, and an attempt records why its answer
was refused at the edge."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0004_inbound_quarantine"),
    ]

    operations = [
        migrations.AddField(
            model_name="partnerattempt",
            name="refusal",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name="partnerreservation",
            name="currency",
            field=models.CharField(blank=True, max_length=3),
        ),
        migrations.AddField(
            model_name="partnerreservation",
            name="end_date",
            field=models.DateField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="partnerreservation",
            name="guests",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="partnerreservation",
            name="start_date",
            field=models.DateField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="partnerreservation",
            name="total_price",
            field=models.DecimalField(blank=True, decimal_places=2, max_digits=12, null=True),
        ),
        migrations.AlterField(
            model_name="partnerobservation",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("confirmed", "Confirmed"),
                    ("rejected", "Rejected"),
                    ("cancelled", "Cancelled"),
                    ("lost", "Lost by the partner"),
                ],
                max_length=12,
            ),
        ),
        migrations.AlterField(
            model_name="partnerreservation",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("confirmed", "Confirmed"),
                    ("rejected", "Rejected"),
                    ("cancelled", "Cancelled"),
                    ("lost", "Lost by the partner"),
                ],
                max_length=12,
            ),
        ),
    ]
