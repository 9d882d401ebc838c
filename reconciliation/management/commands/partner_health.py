"""Partner health: calls, error rate, p50/p99 latency, queue depth, circuit, webhooks, skew, and
what waits for support (bookings by urgency and reason, open orphan cases)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import CommandParser

from config.commands import JsonCommand
from config.errors import NotFound
from reconciliation.management.commands._ops import console_for, dump, rows_table, window_help, window_option
from reconciliation.selectors.partner_health import partner_health


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


class Command(JsonCommand):
    help = (
        "Per partner over the last hour (or --minutes): calls, error rate, latency, queue, circuit, "
        "webhooks; and now: bookings waiting for support by urgency and reason, open orphan cases."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--minutes",
            type=int,
            default=60,
            help=f"Window in minutes (default 60, {window_help(timedelta(minutes=1))}).",
        )
        parser.add_argument("--partner", help="Only this partner (its code).")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **options) -> None:
        window = window_option("--minutes", options["minutes"], timedelta(minutes=1))
        rows = partner_health(window=window)
        if options["partner"]:
            rows = [r for r in rows if r.partner.code == options["partner"]]
            if not rows:
                raise NotFound(f"No partner {options['partner']!r}.")
        if options["json"]:
            dump(self, {"window_minutes": options["minutes"], "partners": [r.as_dict() for r in rows]})
            return
        console = console_for(self)
        health = rows_table(
            f"Partner health, last {options['minutes']} min",
            [
                "partner",
                "calls",
                "error rate",
                "p50 ms",
                "p99 ms",
                "queue ready/delayed, audit",
                "circuit",
                "last webhook",
                "webhooks ok/unverified/late/invalid/failed",
                "clock skew",
            ],
            [
                (
                    r.partner.code + ("" if r.partner.enabled else " (disabled)"),
                    r.calls,
                    "-" if r.error_rate is None else f"{r.error_rate:.1%}",
                    r.p50_ms if r.p50_ms is not None else "-",
                    r.p99_ms if r.p99_ms is not None else "-",
                    f"{_n(r.queue_ready)}/{_n(r.queue_delayed)}, {_n(r.audit_ready)}/{_n(r.audit_delayed)}",
                    (r.circuit or {}).get("circuit", "?"),
                    r.last_webhook_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_webhook_at else "never",
                    "/".join(str(n) for n in r.deliveries.values()),
                    r.clock_skew.text if r.clock_skew.known else "-",
                )
                for r in rows
            ],
        )
        for column in (health.columns[0], health.columns[-1]):  # a code, "behind by 4.4 s (±1.4)"
            column.no_wrap = True
        console.print(health)
        horizon_h = settings.ATTENTION_URGENT_HORIZON_H
        console.print(
            rows_table(
                f"Waiting for support (urgent: the stay starts within {horizon_h} h)",
                [
                    "partner",
                    "bookings urgent",
                    "later",
                    "by reason (urgent/later)",
                    "orphan cases open",
                    "flagged",
                ],
                [
                    (
                        r.partner.code,
                        r.attention.urgent,
                        r.attention.later,
                        ", ".join(f"{reason or '(none)'} {u}/{n}" for reason, u, n, _ in r.attention.reasons),
                        r.orphans.open,
                        r.orphans.flagged,
                    )
                    for r in rows
                ],
            )
        )
        for r in rows:
            for problem in r.problems:
                console.print(f"{r.partner.code}: {problem}", style="red")
