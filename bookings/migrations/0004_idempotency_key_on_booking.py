"""The customer's Idempotency-Key moves onto the booking it made: one insert less per booking
request, and the same guarantee (unique per customer, committed with the booking)."""

from django.db import migrations, models
from django.db.models import OuterRef, Q, Subquery


def copy_keys_to_bookings(apps, schema_editor):
    Booking = apps.get_model("bookings", "Booking")
    IdempotencyRecord = apps.get_model("bookings", "IdempotencyRecord")
    records = IdempotencyRecord.objects.filter(booking=OuterRef("pk"))
    Booking.objects.filter(pk__in=IdempotencyRecord.objects.values("booking")).update(
        idempotency_key=Subquery(records.values("key")[:1]),
        request_fingerprint=Subquery(records.values("request_fingerprint")[:1]),
    )


def copy_keys_to_records(apps, schema_editor):
    Booking = apps.get_model("bookings", "Booking")
    IdempotencyRecord = apps.get_model("bookings", "IdempotencyRecord")
    IdempotencyRecord.objects.bulk_create(
        IdempotencyRecord(
            customer_id=booking.customer_id,
            key=booking.idempotency_key,
            request_fingerprint=booking.request_fingerprint,
            booking=booking,
            response_status=202,
        )
        for booking in Booking.objects.exclude(idempotency_key="").iterator()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0003_sweeper_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="booking",
            name="idempotency_key",
            field=models.CharField(blank=True, editable=False, max_length=255),
        ),
        migrations.AddField(
            model_name="booking",
            name="request_fingerprint",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.RunPython(copy_keys_to_bookings, copy_keys_to_records),
        migrations.AddConstraint(
            model_name="booking",
            constraint=models.UniqueConstraint(
                condition=Q(("idempotency_key", ""), _negated=True),
                fields=("customer", "idempotency_key"),
                name="booking_idempotency_key_per_customer",
            ),
        ),
        migrations.DeleteModel(name="IdempotencyRecord"),
    ]
