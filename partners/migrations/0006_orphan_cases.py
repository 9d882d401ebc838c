"""Orphan cases: a support case, with its own append-only history, for every live partner
reservation no booking wants; the orphans already live get theirs."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def open_cases_for_live_orphans(apps, schema_editor):
    reservations = apps.get_model("partners", "PartnerReservation")
    cases = apps.get_model("partners", "OrphanCase")
    events = apps.get_model("partners", "OrphanCaseEvent")
    for reservation in reservations.objects.filter(
        booking__isnull=True, status__in=["pending", "confirmed"], compensated_at__isnull=True
    ):
        case = cases.objects.create(
            reservation=reservation,
            opened_at=reservation.first_seen_at,
            opened_because="unknown_reference" if reservation.client_reference else "no_reference",
            automation="cancelling" if reservation.compensation_requested_at else "left_to_support",
        )
        events.objects.create(
            case=case,
            kind="orphan.opened",
            actor="system",
            summary=f"{reservation.partner_ref} ({reservation.status}) was an orphan before cases existed",
        )


class Migration(migrations.Migration):
    dependencies = [
        ("bookings", "0006_fk_indexes_covered_by_composites"),
        ("partners", "0005_partner_terms_lost_refusal"),
    ]

    operations = [
        migrations.CreateModel(
            name="OrphanCase",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[("open", "Open"), ("closed", "Closed")], default="open", max_length=8
                    ),
                ),
                ("opened_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "opened_because",
                    models.CharField(
                        choices=[
                            (
                                "unknown_reference",
                                "Its client reference names no booking of ours at this partner",
                            ),
                            ("no_reference", "It carries no client reference"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "automation",
                    models.CharField(
                        choices=[
                            ("cancelling", "Cancelling it at the partner"),
                            ("left_to_support", "Left to support (PARTNER_COMPENSATE_ORPHANS is off)"),
                            ("cancel_failed", "Gave up cancelling it (tries exhausted)"),
                            ("cancel_verified", "Cancelled it at the partner, verified"),
                        ],
                        max_length=16,
                    ),
                ),
                ("closed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "closed_because",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("cancel_verified", "Cancelled at the partner, verified"),
                            ("partner_settled", "The partner no longer holds it live"),
                            ("linked", "Linked to a booking"),
                            ("support", "Closed by support with a note"),
                        ],
                        max_length=16,
                    ),
                ),
                ("closed_by", models.CharField(blank=True, max_length=150)),
                ("closed_note", models.TextField(blank=True)),
                (
                    "booking",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="bookings.booking",
                    ),
                ),
                (
                    "reservation",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="orphan_case",
                        to="partners.partnerreservation",
                    ),
                ),
            ],
            options={
                "ordering": ["-opened_at", "-id"],
                "permissions": [
                    ("cancel_orphan", "Can cancel an orphan reservation at the partner"),
                    ("link_orphan", "Can link an orphan reservation to a booking"),
                    ("close_orphan", "Can close an orphan case the partner no longer holds live"),
                    ("close_live_orphan", "Can close an orphan case while the partner still holds it live"),
                ],
            },
        ),
        migrations.CreateModel(
            name="OrphanCaseEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("kind", models.CharField(max_length=64)),
                (
                    "actor",
                    models.CharField(
                        choices=[
                            ("customer", "Customer"),
                            ("worker", "Worker"),
                            ("webhook", "Webhook"),
                            ("sweeper", "Sweeper"),
                            ("support", "Support user"),
                            ("system", "System"),
                        ],
                        max_length=16,
                    ),
                ),
                ("actor_label", models.CharField(blank=True, max_length=150)),
                ("summary", models.CharField(blank=True, max_length=300)),
                ("occurred_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("data", models.JSONField(blank=True, default=dict)),
                (
                    "case",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="partners.orphancase",
                    ),
                ),
            ],
            options={
                "ordering": ["occurred_at", "id"],
            },
        ),
        migrations.AddIndex(
            model_name="orphancase",
            index=models.Index(fields=["state", "opened_at"], name="orphan_case_queue"),
        ),
        migrations.AddIndex(
            model_name="orphancaseevent",
            index=models.Index(fields=["case", "occurred_at", "id"], name="orphan_event_case_time"),
        ),
        migrations.RunPython(open_cases_for_live_orphans, migrations.RunPython.noop),
    ]
