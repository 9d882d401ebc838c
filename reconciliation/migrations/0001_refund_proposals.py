# The two-person rule of support refunds (reconciliation/models.py), and the payment actions' permissions.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("bookings", "0010_one_booking_per_quote"),
        ("payments", "0001_payments"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="RefundProposal",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("amount", models.DecimalField(decimal_places=2, max_digits=12)),
                ("currency", models.CharField(max_length=3)),
                ("note", models.TextField()),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Waiting for a second person's approval"),
                            ("approved", "Approved: the refund was asked of the provider"),
                            ("rejected", "Rejected (or withdrawn): nothing was refunded"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("proposed_by_label", models.CharField(max_length=150)),
                ("proposed_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("decided_by_label", models.CharField(blank=True, max_length=150)),
                ("decided_at", models.DateTimeField(blank=True, null=True)),
                ("decision_note", models.TextField(blank=True)),
                (
                    "booking",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refund_proposals",
                        to="bookings.booking",
                    ),
                ),
                (
                    "decided_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "operation",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refund_proposal",
                        to="payments.paymentoperation",
                    ),
                ),
                (
                    "payment",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refund_proposals",
                        to="payments.payment",
                    ),
                ),
                (
                    "proposed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-proposed_at", "-id"],
                "permissions": [
                    ("refund_payment", "Can refund a payment (above the approval amount: propose one)"),
                    ("approve_refund", "Can approve or reject another person's refund proposal"),
                    ("capture_payment", "Can retry the capture of a payment's hold"),
                    ("void_payment", "Can void a payment's hold"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("state", "pending")),
                        fields=("payment",),
                        name="refund_proposal_one_pending",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("amount__gt", 0)), name="refund_proposal_amount_positive"
                    ),
                ],
            },
        ),
    ]
