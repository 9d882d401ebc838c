from django.db import migrations
from django.db.models.functions import Now


def refused_refunds_due_again(apps, schema_editor):
    """Payments a run left to support after the provider refused their refund, before runs kept
    `refused_refunds_owed`: their customer is still told "we are refunding". Due again, the next
    run decides the same step, finds it refused for good and tells the customer it is owed
    (`runs._keep_given_up`); one whose refund was made since finds nothing to do."""
    Payment = apps.get_model("payments", "Payment")
    Payment.objects.filter(
        status="captured",
        next_check_at__isnull=True,
        refused_refunds_owed=0,
        operations__kind="refund",
        operations__state="refused",
    ).update(next_check_at=Now())


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0008_refused_refunds_owed"),
    ]

    operations = [
        migrations.RunPython(refused_refunds_due_again, migrations.RunPython.noop, elidable=True),
    ]
