from django.db import migrations, models


class Migration(migrations.Migration):
    # A database default: processes still on the old code insert payments without this column
    # during a rolling deploy.
    dependencies = [
        ("payments", "0009_refused_refunds_due_again"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="release_refused",
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
