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
        events = {
            e.pk: e
            for e in InboundEvent.objects.select_related("partner", "booking").filter(
                pk__in=[pk for pk in wanted.values() if pk is not None]
            )
        }
        missing = [text for text, pk in wanted.items() if pk not in events]
        if missing:
            raise NotFound(f"No inbound event {', '.join(missing)}.")
        batch = [support.target_key(event) for event in events.values()]
        rows = []
        with progress_over(self, list(events.values()), "replaying") as step:
            for event in events.values():
                entry = {
                    "inbound_event": event.pk,
                    "event_id": event.event_id,
                    "partner": event.partner.code,
                    "verifies": support.inbound_event_reverify(event),
                }
                if options["dry_run"]:  # the replay's own question: what it would refuse, and why
                    refused = support.inbound_event_replay_refusal(event)
                    entry["refusal"] = (
                        None if refused is None else {"code": refused.code, "message": refused.message}
                    )
                else:
                    try:
                        entry.update(
                            support.support_replay_inbound(
                                event_id=event.pk, operator=operator, token=token, batch=batch
                            ).as_dict()
                        )
                    except ApplicationError as exc:
                        entry["error"] = {"code": exc.code, "message": exc.message}
                rows.append(entry)
                step()
        if options["json"]:
            dump(self, {"dry_run": options["dry_run"], "token": token, "results": rows})
        else:
            console_for(self).print(
                rows_table(
                    "Stored webhooks" + (" (re-verify only)" if options["dry_run"] else ""),
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
                            or ("would be replayed" if options["dry_run"] else ""),
                        )
                        for r in rows
                    ],
                )
            )
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
