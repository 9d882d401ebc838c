"""List orphan cases: reservations a partner holds that no booking of ours wants, a booking's
duplicates automation could not cancel among them (the console's orphan queue)."""

from __future__ import annotations

from django.core.management.base import CommandParser

from config.commands import JsonCommand
from config.errors import NotFound
from partners.models import Partner
from reconciliation.management.commands._ops import console_for, dump, rows_table
from reconciliation.selectors.orphans import orphan_case_row, orphan_queue


class Command(JsonCommand):
    help = (
        "Open orphan cases, flagged first (automation gave up cancelling them), then the oldest: partner, "
        "their reference, the client reference, what they hold, since when, what automation did. Act on one "
        "with orphan_cancel, orphan_link or orphan_close."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--partner", metavar="CODE", help="Only this partner's cases.")
        parser.add_argument("--all", action="store_true", help="Closed cases too.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **options) -> None:
        partner = None
        if options["partner"]:
            partner = Partner.objects.filter(code=options["partner"]).first()
            if partner is None:
                raise NotFound(f"No partner {options['partner']!r}.")
        rows = [
            orphan_case_row(case) for case in orphan_queue(partner=partner, include_closed=options["all"])
        ]
        if options["json"]:
            dump(self, {"cases": rows})
            return
        console_for(self).print(
            rows_table(
                "Orphan cases" + ("" if options["all"] else " (open)"),
                [
                    "case",
                    "partner",
                    "their ref",
                    "client ref",
                    "they hold",
                    "since",
                    "automation",
                    "last step",
                ],
                [
                    (
                        f"#{r['case']}" + ("" if r["state"] == "open" else " closed"),
                        r["partner"],
                        r["partner_ref"],
                        (r["client_reference"] or "-") + (" (duplicate)" if r["duplicate_of"] else ""),
                        r["status"] + (f" v{r['version']}" if r["version"] is not None else ""),
                        r["opened_at"][:19].replace("T", " "),
                        ("FLAGGED " if r["flagged"] else "") + r["automation"],
                        r["last_step"] or "-",
                    )
                    for r in rows
                ],
            )
        )
