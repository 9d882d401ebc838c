"""One reconciliation sweep, now."""

from __future__ import annotations

import redis
from django.conf import settings
from django.core.management.base import CommandParser
from rich.progress import Progress
from rich.table import Table

from config.commands import JsonCommand, unavailable, unavailable_error
from config.errors import NotFound
from partners.models import Partner
from reconciliation.management.commands._ops import console_for
from reconciliation.services.support.owed import queue_answers
from reconciliation.services.sweeper import SweepReport, sweep


class Command(JsonCommand):
    help = "Run one sweep: queue due syncs, re-submissions, expiries, stale webhooks and listing walks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report what is due; change nothing.")
        parser.add_argument("--partner", help="Only this partner's work (its code).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, **options) -> None:
        partner = None
        if options["partner"]:
            partner = Partner.objects.filter(code=options["partner"]).first()
            if partner is None:
                known = ", ".join(Partner.objects.values_list("code", flat=True)) or "none"
                raise NotFound(f"No partner {options['partner']!r} (known: {known}).")
        if not options["dry_run"] and not queue_answers():
            raise unavailable("Our queue (Redis) is not answering; nothing was swept. Try again shortly.")
        if options["json"]:
            report = self._sweep(dry_run=options["dry_run"], partner=partner)
            self.write_json(report.as_dict())
            return
        console = console_for(self)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("sweeping", total=None)
            report = self._sweep(
                dry_run=options["dry_run"], partner=partner, progress=lambda n: progress.advance(task, n)
            )
        table = Table(title="Sweep" + (" (dry run)" if options["dry_run"] else ""))
        table.add_column("work")
        table.add_column("count", justify="right")
        for state, count in sorted(report.due.items()):
            table.add_row(f"due booking: {state}", str(count))
        table.add_row("stale webhooks re-queued", str(report.inbound_requeued))
        table.add_row("refused webhooks' expired evidence deleted", str(report.refused_pruned))
        table.add_row("processed webhooks' old bodies cleared", str(report.webhook_bodies_pruned))
        table.add_row("payment webhooks' old bodies cleared", str(report.payment_bodies_pruned))
        table.add_row("expired sessions cleared", str(report.sessions_cleared))
        table.add_row("old login logs deleted", str(report.login_logs_pruned))
        table.add_row("settled bookings with an unresolved create", str(report.fenced_terminal))
        table.add_row("payments run (due, not at rest)", str(report.payments_queued))
        table.add_row("stale payment webhooks re-queued", str(report.payment_events_requeued))
        table.add_row("support messages sent (owed since Redis was down)", str(report.support_messages_sent))
        table.add_row("change listings walked", ", ".join(report.listings) or "-")
        console.print(table)

    def _sweep(self, **kwargs) -> SweepReport:
        try:
            return sweep(**kwargs)
        except redis.RedisError as exc:  # it stopped answering meanwhile: a line, not a traceback
            if unavailable_error(exc) is None:
                raise  # not an outage: a bug
            raise unavailable(
                f"Our queue (Redis) stopped answering during the sweep ({type(exc).__name__}); what it did "
                f"not queue is due again within {settings.RECONCILE_SYNC_AGE_S} s. Try again shortly."
            ) from exc
