"""Create or refresh the console's staff groups (support, ops) with their permissions."""

from __future__ import annotations

import json

from django.core.management.base import CommandParser

from config.commands import JsonCommand
from reconciliation.services.support.groups import GROUP_PERMISSIONS, ensure_groups


class Command(JsonCommand):
    help = (
        "Create the support and ops groups, or set their permissions back to the documented ones "
        "(docs/console.md). Creates no user: add staff to a group in the admin. Safe to run again, "
        "and in production."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print each group's permissions as JSON.")

    def handle(self, *args, **options) -> None:
        groups = ensure_groups()
        if options["json"]:
            self.stdout.write(json.dumps({name: GROUP_PERMISSIONS[name] for name in groups}))
            return
        for name in groups:
            self.stdout.write(self.style.SUCCESS(f"Group {name}: {len(GROUP_PERMISSIONS[name])} permissions"))
