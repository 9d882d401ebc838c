"""The console's staff groups and what each may do: `support` looks and takes the everyday
actions, `ops` adds the ones that move money or end a booking (docs/console.md, "Who may do
what"). Made by `manage.py support_groups` on a real deployment and by the demo data."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

GROUP_PERMISSIONS = {
    "support": [
        "bookings.view_booking",
        "bookings.view_bookingevent",
        "bookings.view_offer",
        "bookings.sync_booking",
        "bookings.retry_booking",
        "partners.view_partner",
        "partners.view_partnerreservation",
        "partners.view_partnerattempt",
        "partners.view_inboundevent",
        "partners.view_orphancase",
        "partners.close_orphan",
        "reconciliation.view_refundproposal",
        "reconciliation.refund_payment",
    ],
}
GROUP_PERMISSIONS["ops"] = [
    *GROUP_PERMISSIONS["support"],
    "bookings.compensate_booking",
    "bookings.resolve_booking",
    "bookings.cancel_booking_support",
    "partners.replay_inboundevent",
    "partners.cancel_orphan",
    "partners.link_orphan",
    "partners.close_live_orphan",
    "payments.view_provider_truth",
    "reconciliation.capture_payment",
    "reconciliation.void_payment",
    "reconciliation.approve_refund",
]


@transaction.atomic
def ensure_groups() -> dict[str, Group]:
    """Create the groups or set their permissions back to these; by name."""
    groups = {}
    for name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = [
            Permission.objects.get(content_type__app_label=label, codename=codename)
            for label, codename in (p.split(".") for p in codenames)
        ]
        group.permissions.set(perms)
        groups[name] = group
    return groups
