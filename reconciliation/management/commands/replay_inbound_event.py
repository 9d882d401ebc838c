"""Re-verify and replay stored webhooks (the console's inbound-event replay)."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from config.commands import JsonCommand
from config.errors import ApplicationError, NotFound
from config.ids import row_id
from partners.models import InboundEvent
from reconciliation.management.commands._ops import (
    add_operator_arguments,
    console_for,
    dump,
    operator_from,
    progress_over,
    require,
    rows_table,
    run_stopped,
    token_from,
)
from reconciliation.services import support


class Command(JsonCommand):
    help = (
        "Verify a stored webhook's signature again and process it again through the one door (which "
        "records, and ignores, what it already holds). A delivery that does not verify, or whose body "
        "cannot be applied, is not replayed; the command exits non-zero when any was not (with "
        "--dry-run, which asks the replay's own question, when any would not be). No "
        "confirmation: a replay applies only what the partner sent, through the door that never regresses "
        "state."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="+", metavar="ID", help="Inbound event id(s) (the admin's #).")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only say what a replay would do, or why it would refuse; replay nothing (exits "
            "non-zero when it would refuse any).",
        )
        parser.add_argument("--token", help="Action token: a repeated run with it does nothing extra.")
        add_operator_arguments(parser)

    def handle(self, *args, **options) -> None:
        token = token_from(options)
        operator = operator_from(options)
        require(operator, support.REPLAY_PERMISSION)
        # An id past our ids' range is "no such event", never sent to the database to overflow.
        wanted = {text: row_id(text) for text in options["ids"]}
        found = {
            e.pk: e
            for e in InboundEvent.objects.select_related("partner", "booking").filter(
                pk__in=[pk for pk in wanted.values() if pk is not None]
            )
        }
        missing = [text for text, pk in wanted.items() if pk not in found]
        if missing:
            raise NotFound(f"No inbound event {', '.join(missing)}.")
        # Replayed in the order given: the report, and where an outage stopped the run, read so.
        events = {pk: found[pk] for pk in wanted.values() if pk is not None}
        batch = [support.target_key(event) for event in events.values()]
        rows: list[dict] = []
        with progress_over(self, list(events.values()), "replaying") as step:
            for number, event in enumerate(events.values()):
                try:
                    rows.append(self._replayed(event, operator, token, batch, options["dry_run"]))
                except Exception as exc:  # an outage, or a bug: the run stops here, keeping what it did
                    if not options["json"]:
                        self._print(rows, options["dry_run"])
                    outage = run_stopped(
                        self,
                        exc,
                        f"inbound event #{event.pk}",
                        left=len(events) - number - 1,
                        report={"dry_run": options["dry_run"], "token": token, "results": rows},
                        json=options["json"],
                        recorded="its state in the console says whether it was replayed",
                    )
                    if outage is None:
                        raise  # a bug, as it is
                    raise outage from exc
                step()
        if options["json"]:
            dump(self, {"dry_run": options["dry_run"], "token": token, "results": rows})
        else:
            self._print(rows, options["dry_run"])
        if options["dry_run"]:  # as the replay would exit: non-zero when it would refuse any
            refusals = [r["refusal"]["message"] for r in rows if r["refusal"]]
            if refusals and len(refusals) == len(rows):
                why = refusals[0] if len(rows) == 1 else "each one's refusal is on its line"
                raise CommandError(f"Nothing would be replayed: {why}")
            if refusals:
                raise CommandError(
                    f"{len(refusals)} of {len(rows)} would not be replayed (each one's refusal is on its "
                    "line), the others would; a dry run replays nothing."
                )
            return
        refused = sum("error" in r for r in rows)
        if refused == len(rows):
            raise CommandError("Nothing was replayed.")
        if refused:  # a cron job must not read success while some deliveries stay unapplied
            raise CommandError(f"{refused} of {len(rows)} not replayed, the others replayed.")

    def _replayed(
        self, event: InboundEvent, operator: support.Operator, token: str, batch: list[str], dry_run: bool
    ) -> dict:
        """One event's row: its replay's result or refusal (on a dry run, what the replay would say)."""
        entry = {
            "inbound_event": event.pk,
            "event_id": event.event_id,
            "partner": event.partner.code,
            "verifies": support.inbound_event_reverify(event),
        }
        if dry_run:  # the replay's own question: what it would refuse, and why
            refused = support.inbound_event_replay_refusal(event)
            entry["refusal"] = None if refused is None else {"code": refused.code, "message": refused.message}
            return entry
        try:
            entry.update(
                support.support_replay_inbound(
                    event_id=event.pk, operator=operator, token=token, batch=batch
                ).as_dict()
            )
        except ApplicationError as exc:
            entry["error"] = {"code": exc.code, "message": exc.message}
        return entry

    def _print(self, rows: list[dict], dry_run: bool) -> None:
        console_for(self).print(
            rows_table(
                "Stored webhooks" + (" (re-verify only)" if dry_run else ""),
                ["#", "partner", "event id", "signature", "state", "result", "booking", "message"],
                [
                    (
                        r["inbound_event"],
                        r["partner"],
                        r["event_id"],
                        "verifies" if r["verifies"] else "DOES NOT VERIFY",
                        r.get("state", ""),
                        r.get("result", ""),
                        r.get("booking", ""),
                        r.get("message", "")
                        or (r.get("error") or r.get("refusal") or {}).get("message", "")
                        or ("would be replayed" if dry_run else ""),
                    )
                    for r in rows
                ],
            )
        )
