from django.db import migrations, models

# The generic words of each kind, for a change whose own timeline row cannot be found.
KIND_MESSAGE = {
    "confirmed": "confirmed",
    "not_confirmed": "not_completed",
    "cancelled": "cancelled",
    "disrupted": "disrupted",
    "taking_longer": "taking_longer",
}


def message_of_existing(apps, schema_editor):
    """What the customer was shown at each existing notification's version, from the timeline
    row that recorded the change."""
    Notification = apps.get_model("bookings", "Notification")
    BookingEvent = apps.get_model("bookings", "BookingEvent")
    for notification in Notification.objects.iterator():
        data = (
            BookingEvent.objects.filter(
                booking_id=notification.booking_id,
                data__customer_view__status_version=notification.status_version,
            )
            .values_list("data", flat=True)
            .first()
        )
        notification.message = (data or {}).get("customer_view", {}).get("message") or KIND_MESSAGE[
            notification.kind
        ]
        notification.save(update_fields=["message"])


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0007_honest_customer_view"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="message",
            field=models.CharField(default="", max_length=40),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="notification",
            name="state",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("sending", "Sending"),
                    ("sent", "Sent"),
                    ("failed", "Failed"),
                    ("delivery_unknown", "Delivery unknown"),
                ],
                default="queued",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("state__in", ("queued", "sending"))),
                fields=["created_at"],
                name="notification_unfinished",
            ),
        ),
        migrations.RunPython(message_of_existing, migrations.RunPython.noop, elidable=True),
    ]
