"""The documented start (`make run`, on PostgreSQL too) loads the demo data, and its printed API
token works; with DEBUG off (production) it refuses, unless told `--allow-production`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from bookings.models import Offer
from reconciliation.management.commands.create_demo_data import DEMO_TOKEN
from tests import production

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def debug_on(settings):
    settings.DEBUG = True  # as `make run` has it (config.settings.dev)


def load_demo_data(*args: str) -> dict:
    out = io.StringIO()
    call_command("create_demo_data", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_the_demo_data_loads_and_its_printed_token_lists_the_demo_offers(db, debug_on):
    # PostgreSQL enforces the token column's length (SQLite does not): the suite's PostgreSQL run
    # is the documented `DATABASE_URL=postgres://... make run`.
    credentials = load_demo_data()
    token = credentials["api_token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = client.get("/api/v1/offers")

    assert len(token) == Token._meta.get_field("key").max_length
    assert response.status_code == 200
    assert sorted(offer["product_id"] for offer in response.json()["results"]) == [
        "hotel-42-dbl",
        "hotel-42-fam",
        "tour-7-city",
    ]


def test_the_demo_offers_have_names_for_customers_and_the_tour_is_priced_by_the_day(db, debug_on):
    """Tester: the demo offers were shown by their product ids, and the tour was priced "a night"."""
    load_demo_data()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {DEMO_TOKEN}")

    offers = {offer["product_id"]: offer for offer in client.get("/api/v1/offers").json()["results"]}
    page = Client().get("/").content.decode()

    assert {code: (offer["name"], offer["price_unit"]) for code, offer in offers.items()} == {
        "hotel-42-dbl": ("Hotel 42, double room", "night"),
        "hotel-42-fam": ("Hotel 42, family room", "night"),
        "tour-7-city": ("Tour 7, city tour", "day"),
    }
    assert "Tour 7, city tour" in page and "45.00 EUR a day" in page and "120.00 EUR a night" in page
    assert "tour-7-city" not in page and "hotel-42-dbl" not in page


def test_the_demo_tour_is_booked_by_its_first_day_and_days_and_reads_as_one_day(db, debug_on):
    """Tester: a one-day tour was chosen as 1 to 2 April and read as two days."""
    load_demo_data()
    tour = Offer.objects.get(product_id="tour-7-city")
    web = Client()
    web.force_login(get_user_model().objects.get(username="demo-customer"))
    first = timezone.now().date() + timedelta(days=30)

    form = web.get(f"/offers/{tour.pk}/").content.decode()
    posted = web.post(f"/offers/{tour.pk}/", {"start_date": first.isoformat(), "days": "1", "guests": "2"})

    assert "First day" in form and "Number of days" in form
    assert posted.status_code == 302, posted.content.decode()
    quote = web.get(posted["Location"]).content.decode()
    assert f"{first.day} {first:%B} {first.year} (1 day)" in quote


def test_loading_the_demo_data_twice_keeps_one_token(db, debug_on):
    first = load_demo_data()
    second = load_demo_data()

    assert second["api_token"] == first["api_token"]
    assert list(Token.objects.values_list("key", flat=True)) == [first["api_token"]]


def test_with_debug_off_the_demo_data_is_refused_and_nothing_is_made(db):
    with pytest.raises(CommandError, match=r"DEBUG is off .* --allow-production"):
        load_demo_data()

    assert not get_user_model().objects.filter(username__in=["admin", "support", "ops"]).exists()
    assert not Token.objects.exists()


def test_allow_production_loads_it_with_debug_off(db):
    credentials = load_demo_data("--allow-production")

    assert get_user_model().objects.get(username="admin").is_superuser
    assert Token.objects.get().key == credentials["api_token"]


def test_under_the_production_settings_the_command_says_why_it_refuses():
    done = subprocess.run(
        [sys.executable, "manage.py", "create_demo_data"],
        cwd=ROOT,
        env=production.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr.startswith("CommandError: DEBUG is off (production settings?)"), done.stderr[-2000:]
    assert "manage.py createsuperuser" in done.stderr
