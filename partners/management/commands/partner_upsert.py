"""Register or update a partner and its offers."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from config.commands import JsonCommand, option_error
from config.errors import ValidationFailed
from partners.models import Adapter
from partners.services import signatures
from partners.services.registry import (
    MAX_CAPACITY,
    OFFER_FORMAT,
    PRICE_LIMIT,
    OfferSpec,
    partner_upsert,
    unset_variables,
)


def _timeouts(text: str) -> tuple[float, float]:
    try:
        connect, read = (float(part) for part in text.split(","))
    except ValueError:
        raise option_error(f"--timeouts {text!r}: expected CONNECT,READ seconds, e.g. 2,10") from None
    return connect, read


class Command(JsonCommand):
    help = "Register or update a partner (adapter, URL, credentials, capabilities) and its offers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--code", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--adapter", required=True, choices=Adapter.values)
        parser.add_argument("--base-url", required=True)
        parser.add_argument(
            "--api-key",
            required=True,
            help="The key, or env:VARIABLE to read it at call time (warned of when unset here).",
        )
        parser.add_argument(
            "--capabilities",
            help="Comma-separated: idempotency_keys,lookup_by_reference,webhooks,async_confirmation,"
            "change_listing. Default: everything the adapter's protocol offers.",
        )
        parser.add_argument(
            "--webhook-secret",
            default="",
            help=f"The Standard Webhooks secret: {signatures.SECRET_RULE} (or env:VARIABLE, warned of "
            "when unset here).",
        )
        parser.add_argument("--timezone", default="UTC", help="The partner's local time zone (legacy).")
        parser.add_argument("--timeouts", default="2,10", help="CONNECT,READ seconds (default 2,10).")
        parser.add_argument("--max-concurrency", type=int, default=8)
        parser.add_argument("--disabled", action="store_true", help="Register it disabled.")
        parser.add_argument(
            "--offer",
            action="append",
            default=[],
            metavar=OFFER_FORMAT,
            help=f"Repeatable. UNIT_PRICE above 0 and below {PRICE_LIMIT}, digits 0-9 in whole cents (whole "
            f"units for zero-decimal currencies such as JPY); CURRENCY an active ISO 4217 code such as EUR; "
            f"CAPACITY 1 to {MAX_CAPACITY} guests; PRICE_UNIT what the price is for, night (a room, "
            f"the default) or day (a tour); NAME what customers see (the rest of the text, colons "
            f"and all; without it they see PRODUCT_ID). An offer registered before keeps the unit "
            f"and name it has unless they are given.",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, **options) -> None:
        try:
            offers = [OfferSpec.parse(text) for text in options["offer"]]
            caps = options["capabilities"]
            partner, created = partner_upsert(
                code=options["code"],
                name=options["name"],
                adapter=options["adapter"],
                base_url=options["base_url"],
                api_key=options["api_key"],
                capabilities=[c.strip() for c in caps.split(",") if c.strip()] if caps is not None else None,
                webhook_secret=options["webhook_secret"],
                timezone_name=options["timezone"],
                timeouts=_timeouts(options["timeouts"]),
                max_concurrency=options["max_concurrency"],
                enabled=not options["disabled"],
                offers=offers,
            )
        except ValidationFailed as exc:
            details = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
            raise CommandError(f"{exc.message} {details}".strip()) from exc  # --json: its code and fields
        for warning in unset_variables(partner):
            self.stderr.write(self.style.WARNING(f"Warning: {warning}"))
        result = {
            "code": partner.code,
            "created": created,
            "adapter": partner.adapter,
            "base_url": partner.base_url,
            "capabilities": partner.capabilities,
            "queue": partner.queue_name,
            "audit_queue": partner.audit_queue_name,
            "offers": [o.product_id for o in offers],
        }
        if options["json"]:
            self.write_json(result)
        else:
            verb = "Registered" if created else "Updated"
            self.stdout.write(self.style.SUCCESS(f"{verb} partner {partner.code} ({partner.adapter})"))
            for product in result["offers"]:
                self.stdout.write(f"  offer {product}")
