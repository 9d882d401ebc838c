"""Demo data for `make run`: two sandbox partners with offers, a customer with an API token, a
support and an ops user, and the support/ops groups. Safe to run again.

The offers are named as customers read them, from what their product ids say (the sandbox's
catalogue holds no names), and the tour is priced by the day, the rooms by the night.

Its passwords and token are printed and in this file: with DEBUG off (production) it refuses to
run unless told `--allow-production`, so that following `make run`'s steps on a server does not
leave a superuser whose password anyone can read here."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from config.commands import JsonCommand
from partners.models import Adapter
from partners.services.registry import OfferSpec, partner_upsert
from reconciliation.services.support.groups import ensure_groups

DEMO_TOKEN = "demo0customer0token000000000000000000000"  # demo only, printed on purpose
CUSTOMER_PASSWORD = "customer-demo-pass"  # the customer site's demo login, printed on purpose
USERS = [
    # username, password, group, superuser
    ("support", "support-demo-pass", "support", False),
    ("ops", "ops-demo-pass", "ops", False),
    ("admin", "admin-demo-pass", None, True),
]


class Command(JsonCommand):
    help = "Create (or refresh) the demo partners, offers, customer, support and ops users."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the credentials as JSON.")
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Run with DEBUG off (production settings, the test suite) all the same. The demo "
            "users' passwords (a superuser's among them) and the customer's API token are public "
            "(printed, and in this command's source): anyone could log in with them.",
        )

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG and not options["allow_production"]:
            raise CommandError(
                "DEBUG is off (production settings?): the demo data's users have public passwords "
                "(a superuser, admin/admin-demo-pass) and its customer a public API token. Create "
                "your own users instead (manage.py createsuperuser), or pass --allow-production "
                "for demo data on purpose."
            )
        self._create(**options)

    @transaction.atomic
    def _create(self, **options) -> None:
        partner_upsert(
            code="demo-reference",
            name="Demo hotels (reference protocol)",
            adapter=Adapter.REFERENCE,
            base_url=settings.REFERENCE_SANDBOX_URL,
            api_key=settings.SANDBOX_API_KEY,
            webhook_secret=settings.SANDBOX_WEBHOOK_SECRET,
            offers=[
                OfferSpec.parse("hotel-42-dbl:120.00:EUR:2:night:Hotel 42, double room"),
                OfferSpec.parse("hotel-42-fam:180.00:EUR:4:night:Hotel 42, family room"),
            ],
        )
        partner_upsert(
            code="demo-legacy",
            name="Demo tours (legacy protocol)",
            adapter=Adapter.LEGACY,
            base_url=settings.LEGACY_SANDBOX_URL,
            api_key=settings.SANDBOX_API_KEY,
            timezone_name="Europe/Berlin",
            # A tour: priced by the day, as the stay's days are counted (bookings.models.PriceUnit).
            offers=[OfferSpec.parse("tour-7-city:45.00:EUR:6:day:Tour 7, city tour")],
        )
        groups = ensure_groups()
        user_model = get_user_model()
        customer, _ = user_model.objects.get_or_create(
            username="demo-customer", defaults={"email": "demo-customer@example.com"}
        )
        if not customer.password:  # new, or made before the customer site; a changed one is kept
            customer.set_password(CUSTOMER_PASSWORD)
            customer.save(update_fields=["password"])
        Token.objects.filter(user=customer).exclude(key=DEMO_TOKEN).delete()
        Token.objects.get_or_create(user=customer, key=DEMO_TOKEN)
        for username, password, group, superuser in USERS:
            user, created = user_model.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            user.is_staff = True
            user.is_superuser = superuser
            if created:
                user.set_password(password)
            user.save()
            if group:
                user.groups.set([groups[group]])
        credentials = {
            "api_token": DEMO_TOKEN,
            "customer_site": {"username": "demo-customer", "password": CUSTOMER_PASSWORD},
            "console": [{"username": u, "password": p, "role": g or "superuser"} for u, p, g, _ in USERS],
            "partners": ["demo-reference", "demo-legacy"],
        }
        if options["json"]:
            self.stdout.write(json.dumps(credentials))
            return
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  API token (demo-customer): {DEMO_TOKEN}")
        self.stdout.write(f"  Customer site login: demo-customer / {CUSTOMER_PASSWORD}")
        for entry in credentials["console"]:
            self.stdout.write(f"  Console login: {entry['username']} / {entry['password']} ({entry['role']})")
