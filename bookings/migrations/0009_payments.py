"""Payments (issue 20): a booking may await its payment before it reaches the partner
(`awaiting_payment`, watched by the sweeper like the other open states), offers carry their
cancellation policy, and the customer's view and its notifications carry what they were told
about their money."""

import django_fsm
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0008_notification_state_and_message"),
    ]

    operations = [
        migrations.AddField(
            model_name="offer",
            name="free_cancellation_hours",
            field=models.PositiveIntegerField(default=24),
        ),
        migrations.AddField(
            model_name="offer",
            name="cancellation_fee_percent",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=5),
        ),
        migrations.AddConstraint(
            model_name="offer",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("cancellation_fee_percent__gte", 0), ("cancellation_fee_percent__lte", 100)
                ),
                name="offer_cancellation_fee_a_share",
            ),
        ),
        migrations.AddField(
            model_name="booking",
            name="cancellation_fee",
            field=models.DecimalField(blank=True, decimal_places=2, max_digits=12, null=True),
        ),
        migrations.AddField(
            model_name="booking",
            name="customer_money",
            field=models.JSONField(blank=True, default=dict, editable=False),
        ),
        migrations.AddField(
            model_name="notification",
            name="money",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="booking",
            name="status",
            field=django_fsm.FSMField(
                choices=[
                    ("awaiting_payment", "Awaiting payment"),
                    ("requested", "Requested"),
                    ("submitting", "Submitting"),
                    ("pending_partner", "Pending at partner"),
                    ("unknown", "Outcome unknown"),
                    ("confirmed", "Confirmed"),
                    ("rejected", "Rejected"),
                    ("failed", "Failed"),
                    ("expired", "Expired"),
                    ("cancel_requested", "Cancel requested"),
                    ("cancelled", "Cancelled"),
                    ("needs_attention", "Needs attention"),
                ],
                default="requested",
                max_length=20,
                protected=True,
            ),
        ),
        # The sweeper's index of open bookings now covers those awaiting their payment.
        migrations.RemoveIndex(model_name="booking", name="booking_due_open"),
        migrations.AddIndex(
            model_name="booking",
            index=models.Index(
                condition=models.Q(
                    (
                        "status__in",
                        [
                            "awaiting_payment",
                            "cancel_requested",
                            "pending_partner",
                            "requested",
                            "submitting",
                            "unknown",
                        ],
                    )
                ),
                fields=["next_check_at"],
                name="booking_due_open",
            ),
        ),
    ]
