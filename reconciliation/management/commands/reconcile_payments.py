"""A day's settlement report: our payment ledger beside the provider's listing, every mismatch, and
the money support paid back another way that day (not the provider's: no mismatch)."""

from __future__ import annotations

from datetime import date, timedelta

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from rich.console import Console

from bookings.dates import NotADate, parse_date
from config.commands import JsonCommand, option_error
from config.errors import error_body
from reconciliation.management.commands._ops import console_for, dump, rows_table
from reconciliation.services.settlement import KINDS, ProviderUnavailable, Settlement, settle_day

# Exit codes: 0 the day settles, 1 mismatches were found, 2 the provider could not be read (its
# listing, or an intent by its id), each read tried up to connector.READ_TRIES times, 64 the
# command was used wrongly (sysexits' EX_USAGE: an unknown option, a --date that is not a day),
# which argparse would have said with 2, the provider's status here; 75 our database did not
# answer (`config.commands.OUTAGE_STATUS`, every command's outage).
MISMATCHES, UNAVAILABLE, USAGE = 1, 2, 64
UNAVAILABLE_CODE = "provider_unavailable"  # its --json error's code
# The provider counts time in Unix seconds: it created nothing before this day.
FIRST_DAY = date(1970, 1, 1)


def _day(text: str | None) -> date:
    """The UTC day to settle (default yesterday), refused unless it lies between FIRST_DAY and
    today: a day that has not begun has nothing to settle (and the ends of the calendar
    overflow the hour of margin either side)."""
    today = timezone.now().date()
    if text is None:  # the option left out; an empty one is a script's variable left unset
        return today - timedelta(days=1)
    if not text.strip():
        raise option_error(
            f"--date {text!r} is not a day: give one as YYYY-MM-DD, or leave --date out for yesterday."
        )
    try:
        # The product's one date rule: YYYY-MM-DD exactly (date.fromisoformat also took 20261206
        # and 2026-W49-7), and a date the calendar lacks said as such.
        day = parse_date(text)
    except NotADate as exc:
        why = "it is not written YYYY-MM-DD" if exc.code == "invalid" else exc.message
        raise option_error(f"--date {text!r} is not a day: {why}") from exc
    if day > today:
        raise option_error(f"--date {text}: that day has not happened yet (today is {today}, UTC).")
    if day < FIRST_DAY:
        raise option_error(f"--date {text}: the provider holds nothing before {FIRST_DAY}.")
    return day


def _print_paid_outside(console: Console, report: Settlement) -> None:
    day = report.day.isoformat()
    if not report.paid_outside:
        console.print(f"Paid back another way on {day}: nothing.")
        return
    console.print(f"Paid back another way on {day} (not through the provider: not compared, no mismatch):")
    console.print(
        rows_table(
            "",
            ["booking", "amount", "method", "recorded by", "approved by", "at (UTC)"],
            [
                (
                    o.booking,
                    f"{o.amount} {o.currency}",
                    o.method_label,
                    o.recorded_by,
                    o.approved_by or "-",
                    f"{o.at:%H:%M:%S}",
                )
                for o in report.paid_outside
            ],
        )
    )
    totals = ", ".join(f"{amount} {currency}" for currency, amount in report.paid_outside_totals.items())
    console.print(f"{len(report.paid_outside)} recording(s), {totals} in all.")


class Command(JsonCommand):
    help = (
        "Compare our payment ledger for a UTC day (every payment an operation of ours touched, our refund "
        "operations matched to the provider's refunds by id or key) with the provider's listing of the "
        "intents and refunds created that day, like a settlement report, and list every mismatch: an "
        "intent or refund on one side only, a status or an "
        "amount that differs; and, in a section of its own, what support recorded that day as paid back "
        "another way (a refund the card refused, paid by bank transfer, cash, a voucher: booking, amount, "
        "method, who recorded and approved it), which the provider never saw and is no mismatch. "
        "Exit status 0 when the day settles, 1 when there are mismatches (so a cron job "
        "can alert), 2 when the provider could not be read (each read is asked again, up to 3 tries in all, "
        "after a 5xx, a timeout or a 429), 64 when it was used wrongly (an unknown option, a --date that "
        "is not a day), 75 when our database did not answer (try again)."
    )
    usage_status = USAGE

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--date",
            dest="day",
            help=f"The UTC day, YYYY-MM-DD, from {FIRST_DAY} to today (default: yesterday, UTC).",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON only.")

    def handle(self, *args, **options) -> None:
        day = _day(options["day"])
        try:
            report = settle_day(day)
        except ProviderUnavailable as exc:
            if options["json"]:  # the one error shape, with the day and the tries
                said = error_body(UNAVAILABLE_CODE, exc.said)
                dump(self, {**said, "date": day.isoformat(), "tries": exc.tries, "mismatches": None})
            raise CommandError(exc.said, returncode=UNAVAILABLE) from exc
        if options["json"]:
            dump(self, report.as_dict())
        else:
            console = console_for(self)
            console.print(
                rows_table(
                    f"Settlement of {day.isoformat()} (UTC)",
                    ["currency", "captured ours", "captured provider", "refunded that day ours", "provider"],
                    [
                        (
                            t.currency,
                            t.captured_ours,
                            t.captured_provider,
                            t.refunded_on_day_ours,
                            t.refunded_on_day_provider,
                        )
                        for t in report.totals.values()
                    ],
                )
            )
            console.print(
                f"{report.intents_compared} intent(s) and {report.refunds_compared} refund(s) compared; "
                f"the provider listed {report.provider_intents_listed} intent(s) and "
                f"{report.provider_refunds_listed} refund(s) made that day."
            )
            _print_paid_outside(console, report)
            if report.mismatches:
                console.print(
                    rows_table(
                        f"{len(report.mismatches)} mismatch(es)",
                        ["kind", "booking", "intent", "refund", "detail", "open operation"],
                        [
                            (
                                m.kind,
                                m.booking,
                                m.intent,
                                m.refund,
                                m.detail,
                                "yes" if m.open_operation else "",
                            )
                            for m in report.mismatches
                        ],
                    )
                )
                for kind in sorted({m.kind for m in report.mismatches}):
                    console.print(f"  {kind}: {KINDS[kind]}")
            else:
                console.print("The day settles: no mismatch.", style="green")
        if report.mismatches:
            raise CommandError(
                f"{len(report.mismatches)} mismatch(es) on {day.isoformat()}.", returncode=MISMATCHES
            )
