from django.db import migrations, models

from config.migration_operations import AddIndexLive


class Migration(migrations.Migration):
    # Two indexes /metrics reads through (reconciliation.metrics.collector): payments by status
    # with each status's oldest move, and the deliveries set aside. New indexes only, no rewrite:
    # processes still on the old code read and write as before during a rolling deploy. Built
    # without blocking the tables' writes (config/migration_operations.py): outside a transaction.
    atomic = False
    dependencies = [
        ("payments", "0012_ended_with_support_due_again"),
    ]

    operations = [
        AddIndexLive(
            model_name="payment",
            index=models.Index(fields=["status", "status_changed_at"], name="payment_status_age"),
        ),
        AddIndexLive(
            model_name="paymentevent",
            index=models.Index(
                condition=models.Q(("state", "failed")),
                fields=["received_at"],
                name="payment_event_set_aside",
            ),
        ),
    ]
