"""Print a booking's one timeline (the same rows as the console's booking page)."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser
from rich.table import Table

from config.commands import JsonCommand
from config.errors import ApplicationError
from reconciliation.apis import TimelineRowSerializer
from reconciliation.management.commands._ops import console_for, dump
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services import support


class Command(JsonCommand):
    help = (
        "Show everything that happened to a booking in one order: transitions, partner attempts, webhooks "
        "(ignored ones too), sync results, compensations and support actions; our time, the partner's, "
        "their skew, the actor and a summary."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference", metavar="REF", help="Booking reference, e.g. BK-7F3K2Q.")
        parser.add_argument("--json", action="store_true", help="Print JSON (with the raw data of each row).")
        parser.add_argument("--raw", action="store_true", help="Also print each row's raw data.")

    def handle(self, *args, **options) -> None:
        try:
            booking = support.booking_by_reference(options["reference"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        rows = booking_timeline(booking)
        if options["json"]:
            dump(
                self,
                {
                    "booking": booking.reference,
                    "status": booking.status,
                    "customer_status": str(booking.customer_status),
                    "partner": booking.partner.code,
                    "partner_key": booking.partner_key,
                    "timeline": TimelineRowSerializer(rows, many=True).data,
                },
            )
            return
        console = console_for(self)
        table = Table(
            title=(
                f"{booking.reference} · {booking.status} · {booking.partner.code} · key {booking.partner_key}"
            ),
            caption="times UTC; skew = partner clock minus ours",
        )
        for column in ("our time", "partner time", "skew ms", "actor", "kind", "summary", "state"):
            table.add_column(column, overflow="fold")
        for row in rows:
            style = "yellow" if row.is_support else ("dim" if row.mark else None)
            table.add_row(
                row.at.strftime("%H:%M:%S.%f")[:-3],
                row.partner_time.strftime("%H:%M:%S.%f")[:-3] if row.partner_time else "-",
                "-" if row.skew_ms is None else str(row.skew_ms),
                row.actor + (f" {row.actor_label}" if row.actor_label else ""),
                row.kind + (f" [{row.mark}]" if row.mark else ""),
                row.summary,
                row.transition,
                style=style,
            )
        console.print(table)
        if options["raw"]:
            for row in rows:
                console.print(f"{row.source} #{row.source_id} {row.kind}", style="bold")
                console.print_json(row.data_json)
