from django.db import migrations, models

from config.migration_operations import AddIndexLive


class Migration(migrations.Migration):
    # The retention's queue of provider deliveries whose body is still kept, built without blocking
    # the deliveries' writes (config/migration_operations.py): outside a transaction.
    atomic = False

    dependencies = [
        ("payments", "0014_body_retention"),
    ]

    operations = [
        AddIndexLive(
            model_name="paymentevent",
            index=models.Index(
                condition=models.Q(
                    ("body_pruned_at__isnull", True), ("state__in", ["processed", "known", "ignored"])
                ),
                fields=["received_at"],
                name="payment_event_body_kept",
            ),
        ),
    ]
