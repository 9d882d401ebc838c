"""The documented start (`make run`, on PostgreSQL too) loads the demo data, and its printed API
token works."""

from __future__ import annotations

import io
import json

from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def load_demo_data() -> dict:
    out = io.StringIO()
    call_command("create_demo_data", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_the_demo_data_loads_and_its_printed_token_lists_the_demo_offers(db):
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


def test_loading_the_demo_data_twice_keeps_one_token(db):
    first = load_demo_data()
    second = load_demo_data()

    assert second["api_token"] == first["api_token"]
    assert list(Token.objects.values_list("key", flat=True)) == [first["api_token"]]
