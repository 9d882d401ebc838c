# A refund paid another way may be proposed too (the two-person rule), saying how it was paid.

from django.db import migrations, models


class Migration(migrations.Migration):
    # Database defaults: processes still on the old code insert refund proposals without these
    # columns during a rolling deploy (and what they insert is a refund through the provider).
    dependencies = [
        ("reconciliation", "0003_owed_messages"),
    ]

    operations = [
        migrations.AddField(
            model_name="refundproposal",
            name="kind",
            field=models.CharField(
                choices=[
                    ("refund", "Refund through the provider"),
                    ("outside", "Refund paid another way (recorded)"),
                ],
                db_default="refund",
                default="refund",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="refundproposal",
            name="method",
            field=models.CharField(
                blank=True,
                choices=[
                    ("bank_transfer", "Bank transfer"),
                    ("cash", "Cash"),
                    ("voucher", "Voucher or credit"),
                    ("other", "Other (the note says how)"),
                ],
                db_default="",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="refundproposal",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("kind", "refund"), ("method", "")),
                    models.Q(("kind", "outside"), models.Q(("method", ""), _negated=True)),
                    _connector="OR",
                ),
                name="refund_proposal_method_of_outside",
            ),
        ),
    ]
