from django.db import migrations, models


class Migration(migrations.Migration):
    # Operations open before this field keep the old rule (a read that finds nothing waits for
    # the key window): which of their lost answers were replayed is not recorded. The database
    # default lets processes still on the old code insert operations during a rolling deploy.
    dependencies = [
        ("payments", "0004_operation_calls_in_doubt"),
    ]

    operations = [
        migrations.AddField(
            model_name="paymentoperation",
            name="key_spent",
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
