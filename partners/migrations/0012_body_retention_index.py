from django.db import migrations, models

from config.migration_operations import AddIndexLive


class Migration(migrations.Migration):
    # The retention's queue of delivered bodies still kept, built without blocking the deliveries'
    # writes (config/migration_operations.py): a migration of its own, outside a transaction.
    atomic = False

    dependencies = [
        ("partners", "0011_body_retention"),
    ]

    operations = [
        AddIndexLive(
            model_name="inboundevent",
            index=models.Index(
                condition=models.Q(
                    ("body_pruned_at__isnull", True), ("signature_valid", True), ("state", "processed")
                ),
                fields=["received_at"],
                name="inbound_body_kept",
            ),
        ),
    ]
