from django.db import migrations, models


def count_open_operations_as_in_doubt(apps, schema_editor):
    # An operation open before this field existed may have been called: it keeps its fence. But
    # an authorization whose payment was released to pending: its calls were refused for now.
    PaymentOperation = apps.get_model("payments", "PaymentOperation")
    PaymentOperation.objects.filter(state="open").exclude(kind="authorize", payment__status="pending").update(
        calls_in_doubt=1
    )


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0003_operation_not_made"),
    ]

    operations = [
        migrations.AddField(
            model_name="paymentoperation",
            name="calls_in_doubt",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.RunPython(count_open_operations_as_in_doubt, migrations.RunPython.noop),
    ]
