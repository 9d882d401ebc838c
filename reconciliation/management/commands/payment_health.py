"""Payment health: the provider's reachability, open operations, unknown-outcome fences, holds near
their lapse, overdue runs, refunds the card refused, refunds waiting for approval, and webhook
deliveries by result."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import CommandParser

from bookings.web.templatetags import duration
from config.commands import JsonCommand
from reconciliation.management.commands._ops import console_for, dump, rows_table, window_help, window_option
from reconciliation.selectors.payment_health import payment_health


class Command(JsonCommand):
    help = (
        "Now: whether the provider answers (one timed read; --no-probe skips it), operations whose "
        "outcome is not known yet, authorizations fenced by an unknown outcome, holds lapsing within "
        "--hours, payment runs overdue, refunds the card refused (owed to the customer), refund "
        "proposals waiting; over the last --minutes: webhook "
        "deliveries by result, holds that lapsed, payments left to support. Problems are listed last."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--minutes",
            type=int,
            default=60,
            help=f"Window in minutes (default 60, {window_help(timedelta(minutes=1))}).",
        )
        parser.add_argument(
            "--hours",
            type=float,
            help="Holds lapsing within this many hours (default: 2 x the lapse margin; more than 0, "
            f"{window_help(timedelta(hours=1))}).",
        )
        parser.add_argument("--no-probe", action="store_true", help="Do not ask the provider.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **options) -> None:
        window = window_option("--minutes", options["minutes"], timedelta(minutes=1))
        # `is not None`: --hours 0 is a mistake to refuse, not a request for the default.
        hours = options["hours"]
        horizon = None if hours is None else window_option("--hours", hours, timedelta(hours=1))
        health = payment_health(
            window=window,
            horizon=horizon,
            probe=not options["no_probe"],
        )
        if options["json"]:
            dump(self, health.as_dict())
            return
        console = console_for(self)
        p = health.provider
        reach = p.said if p.reachable or not p.asked or p.slow else f"DOWN: {p.said}"
        console.print(
            rows_table(
                f"Payment health (window {options['minutes']} min)",
                ["", "now"],
                [
                    ("provider", reach),
                    (
                        "operations open",
                        ", ".join(f"{k}={n}" for k, n in health.open_operations.items()) or "none",
                    ),
                    ("answers lost (a read settles them)", health.answers_lost),
                    ("authorizations fenced (outcome unknown)", health.fenced),
                    (f"holds lapsing within {duration(health.horizon)}", len(health.near_lapse)),
                    ("holds lapsed in the window", health.lapsed),
                    ("payment runs overdue", health.overdue_runs),
                    ("left to support in the window", health.left_to_support),
                    (
                        "confirmed, payment holds no money",
                        ", ".join(health.unpaid_confirmed) or "none",
                    ),
                    (
                        "refunds the card refused, owed back",
                        ", ".join(f"{r.booking} ({r.owed} {r.currency})" for r in health.refunds_failed)
                        or "none",
                    ),
                    (
                        "holds the provider would not release",
                        ", ".join(
                            f"{r.booking} ({r.amount} {r.currency}, lapses {r.expires_at:%Y-%m-%d %H:%M} UTC)"
                            if r.expires_at
                            else f"{r.booking} ({r.amount} {r.currency})"
                            for r in health.releases_refused
                        )
                        or "none",
                    ),
                    ("refund proposals waiting", health.pending_proposals),
                    (
                        "webhook deliveries in the window",
                        " ".join(f"{state}={n}" for state, n in health.deliveries.items())
                        + f"; stale {health.stale_deliveries}",
                    ),
                ],
            )
        )
        if health.oldest_open:
            console.print(
                rows_table(
                    "Oldest open operations",
                    ["booking", "kind", "amount", "tries", "last outcome", "opened", "key"],
                    [
                        (
                            o.booking,
                            o.kind + (" (answer lost)" if o.answer_lost else ""),
                            o.amount or "-",
                            o.tries,
                            o.last_outcome or "-",
                            o.opened_at.strftime("%Y-%m-%d %H:%M:%S"),
                            o.key,
                        )
                        for o in health.oldest_open
                    ],
                )
            )
        if health.near_lapse:
            console.print(
                rows_table(
                    "Holds near their lapse",
                    ["booking", "state", "held", "lapses", ""],
                    [
                        (
                            h.booking,
                            h.booking_status,
                            f"{h.amount} {h.currency}",
                            h.expires_at.strftime("%Y-%m-%d %H:%M:%S"),
                            "past the void time" if h.guard_passed else "",
                        )
                        for h in health.near_lapse
                    ],
                )
            )
        for problem in health.problems:
            console.print(problem, style="red")
