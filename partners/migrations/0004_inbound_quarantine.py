"""Webhook deliveries: refused ones kept as bounded evidence (size, hash, source), authentic
content that cannot be used quarantined as `invalid`, and processing tries counted."""

import django.db.models.deletion
from django.db import migrations, models


def quarantine_unusable(apps, schema_editor):
    """Authentic deliveries refused for their body, and stored ones that could not be read,
    were `rejected` and `failed`; both are what `invalid` now means."""
    InboundEvent = apps.get_model("partners", "InboundEvent")
    InboundEvent.objects.filter(state="rejected", signature_valid=True).update(state="invalid", result="")
    InboundEvent.objects.filter(state="failed").update(state="invalid")


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0003_fk_indexes_covered_by_composites"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="inboundevent", name="inbound_event_unique_verified"),
        migrations.AddField(
            model_name="inboundevent",
            name="body_size",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="inboundevent",
            name="body_sha256",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="inboundevent",
            name="source_address",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="inboundevent",
            name="tries",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="inboundevent",
            name="state",
            field=models.CharField(
                choices=[
                    ("received", "Received, not processed"),
                    ("processed", "Processed"),
                    ("rejected", "Refused on receipt"),
                    ("invalid", "Invalid content (quarantined)"),
                    ("failed", "Gave up after its tries"),
                ],
                default="received",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="inboundevent",
            name="result",
            field=models.CharField(
                blank=True,
                choices=[
                    ("applied", "Applied"),
                    ("stale", "Stale (older than what we hold)"),
                    ("duplicate", "Duplicate"),
                    ("unlinked", "For no booking of ours (orphan case)"),
                    ("rejected", "Unverified (signature or size)"),
                    ("late", "Authentic, but signed outside the time tolerance (synced instead)"),
                    ("unsupported", "Authentic, but of an event type we do not handle"),
                ],
                max_length=12,
            ),
        ),
        # Before the foreign key's own index goes: the composite covers it.
        migrations.AddIndex(
            model_name="inboundevent",
            index=models.Index(fields=["partner", "received_at"], name="inbound_partner_time"),
        ),
        migrations.AlterField(
            model_name="inboundevent",
            name="partner",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="inbound_events",
                to="partners.partner",
            ),
        ),
        migrations.RunPython(quarantine_unusable, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="inboundevent",
            constraint=models.UniqueConstraint(
                condition=models.Q(("duplicate_of__isnull", True), ("signature_valid", True))
                & ~models.Q(("state__in", ["rejected", "invalid"])),
                fields=("partner", "event_id"),
                name="inbound_event_unique_verified",
            ),
        ),
    ]
