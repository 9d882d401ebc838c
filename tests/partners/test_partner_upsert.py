"""`manage.py partner_upsert`: registers or updates a partner and its offers."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from bookings.models import Offer
from partners.models import Partner
from tests.partners.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.django_db

BASE = [
    "--code",
    "acme",
    "--adapter",
    "reference",
    "--base-url",
    "http://127.0.0.1:8101/",
    "--api-key",
    "k-1",
]


def upsert(*args: str) -> str:
    out = StringIO()
    call_command("partner_upsert", *args, stdout=out)
    return out.getvalue()


def test_creates_a_reference_partner_with_its_protocols_capabilities_and_offers():
    output = upsert(
        *BASE,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--timeouts",
        "0.5,3",
        "--max-concurrency",
        "4",
        "--offer",
        "hotel-42-dbl:120.00:eur:2",
        "--offer",
        "hotel-42-fam:180:EUR:4",
    )

    partner = Partner.objects.get(code="acme")
    assert output.splitlines() == [
        "Registered partner acme (reference)",
        "  offer hotel-42-dbl",
        "  offer hotel-42-fam",
    ]
    assert (partner.adapter, partner.base_url, partner.api_key, partner.webhook_secret) == (
        "reference",
        "http://127.0.0.1:8101",
        "k-1",
        WEBHOOK_SECRET,
    )
    assert partner.capabilities == [
        "idempotency_keys",
        "lookup_by_reference",
        "webhooks",
        "async_confirmation",
    ]
    assert (partner.connect_timeout_s, partner.read_timeout_s, partner.max_concurrency, partner.enabled) == (
        0.5,
        3.0,
        4,
        True,
    )
    assert list(
        Offer.objects.order_by("product_id").values_list("product_id", "unit_price", "currency", "capacity")
    ) == [
        ("hotel-42-dbl", Decimal("120.00"), "EUR", 2),
        ("hotel-42-fam", Decimal("180.00"), "EUR", 4),
    ]


def test_legacy_partner_defaults_to_the_change_listing_and_keeps_its_timezone():
    upsert(
        "--code",
        "old-tours",
        "--adapter",
        "legacy",
        "--base-url",
        "http://sandbox-legacy:8102",
        "--api-key",
        "env:LEGACY_KEY",
        "--timezone",
        "Europe/Berlin",
    )

    partner = Partner.objects.get(code="old-tours")
    assert (partner.capabilities, partner.timezone, partner.api_key) == (
        ["change_listing"],
        "Europe/Berlin",
        "env:LEGACY_KEY",
    )


def test_running_it_again_updates_the_partner_and_its_offers():
    upsert(*BASE, "--offer", "hotel-42-dbl:120.00:EUR:2")

    output = upsert(
        *BASE[:4],
        "--base-url",
        "http://127.0.0.1:9999",
        "--api-key",
        "k-2",
        "--capabilities",
        "idempotency_keys, webhooks",
        "--disabled",
        "--offer",
        "hotel-42-dbl:99.50:EUR:3",
    )

    assert output.startswith("Updated partner acme (reference)")
    partner = Partner.objects.get()
    assert (partner.base_url, partner.api_key, partner.capabilities, partner.enabled) == (
        "http://127.0.0.1:9999",
        "k-2",
        ["idempotency_keys", "webhooks"],
        False,
    )
    offer = Offer.objects.get()
    assert (offer.unit_price, offer.capacity) == (Decimal("99.50"), 3)


def test_an_offer_is_named_and_priced_per_its_unit_and_keeps_them_when_they_are_not_given():
    # given a tour registered with its price unit and a name (colons and all), and a room without
    upsert(*BASE, "--offer", "tour-7-city:45.00:EUR:6:day:City tour: old town", "--offer", "room-1:10:EUR:1")

    tour, room = Offer.objects.get(product_id="tour-7-city"), Offer.objects.get(product_id="room-1")
    assert (tour.price_unit, tour.name, str(tour)) == ("day", "City tour: old town", "City tour: old town")
    # a name left unsaid is none, not the product id: the pages show the id themselves then
    assert (room.price_unit, room.name, str(room)) == ("night", "", "room-1")

    # when it is registered again without them (the room named in the admin meanwhile)
    Offer.objects.filter(pk=room.pk).update(name="Single room")
    upsert(*BASE, "--offer", "tour-7-city:50.00:EUR:6", "--offer", "room-1:10:EUR:1")

    # then they keep their unit and names: only what was given changes
    tour.refresh_from_db()
    room.refresh_from_db()
    assert (tour.unit_price, tour.price_unit, tour.name) == (Decimal("50.00"), "day", "City tour: old town")
    assert room.name == "Single room"


def test_json_output():
    result = json.loads(upsert(*BASE, "--json", "--offer", "room-1:10:EUR:1"))

    assert result == {
        "code": "acme",
        "created": True,
        "adapter": "reference",
        "base_url": "http://127.0.0.1:8101",
        "capabilities": ["idempotency_keys", "lookup_by_reference", "webhooks", "async_confirmation"],
        "queue": "partner-acme",
        "audit_queue": "audit-acme",
        "offers": ["room-1"],
    }
    assert json.loads(upsert(*BASE, "--json"))["created"] is False


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(_replace(BASE, "--adapter", "soap"), "invalid choice: 'soap'", id="adapter"),
        pytest.param(_replace(BASE, "--code", "bad code!"), "code:", id="code"),
        pytest.param(_replace(BASE, "--base-url", "not-a-url"), "base_url:", id="base-url"),
        pytest.param(_replace(BASE, "--base-url", "ftp://x/"), "base_url:", id="base-url-scheme"),
        pytest.param(_replace(BASE, "--api-key", " "), "api_key:", id="api-key"),
        # What the partners table holds: refused before writing, never a database error's traceback.
        pytest.param(
            _replace(BASE, "--base-url", f"http://{'h' * 300}.com"),
            "base_url: At most 200 characters",
            id="base-url-too-long",
        ),
        pytest.param(
            _replace(BASE, "--api-key", "k" * 501), "api_key: At most 500 characters", id="key-long"
        ),
        pytest.param(
            [*BASE, "--webhook-secret", f"env:{'S' * 500}"],
            "webhook_secret: At most 500 characters",
            id="secret-too-long",
        ),
        pytest.param([*BASE, "--name", "n" * 201], "name: At most 200 characters", id="name-too-long"),
        pytest.param(
            [*BASE, "--timezone", f"Europe/{'a' * 300}"],
            "timezone: Unknown time zone",
            id="timezone-too-long",
        ),
        *(
            pytest.param(
                _replace(BASE, "--base-url", f"http://127.0.0.1:{port}"),
                "base_url: Not an http(s) base URL",
                id=f"base-url-port-{port}",
            )
            for port in ("99999", "0", "65536", "x")
        ),
        *(  # urlsplit's own refusals (an unclosed or misplaced bracket): a traceback, once
            pytest.param(
                _replace(BASE, "--base-url", url),
                f"base_url: Not an http(s) base URL: {url!r}.",
                id=f"base-url-brackets-{n}",
            )
            for n, url in enumerate(("http://[::1", "http://[zz]/", "http://x]/"))
        ),
        pytest.param(
            _replace(BASE, "--base-url", "http://user:secret@127.0.0.1:8101"),
            "base_url: No user or password in it (the partner's key is --api-key)",
            id="base-url-credentials",
        ),
        pytest.param(
            [*BASE, "--capabilities", "teleport"], "capabilities: Unknown: teleport", id="capability"
        ),
        pytest.param([*BASE, "--timezone", "Mars/Olympus"], "timezone: Unknown time zone", id="timezone"),
        pytest.param(
            [*BASE, "--timeouts", "2"], "--timeouts '2': expected CONNECT,READ", id="timeouts-shape"
        ),
        pytest.param([*BASE, "--timeouts", "0,10"], "timeouts:", id="timeouts-range"),
        pytest.param([*BASE, "--timeouts", "nan,10"], "timeouts:", id="timeouts-nan"),
        pytest.param([*BASE, "--max-concurrency", "0"], "max_concurrency must be 1", id="concurrency"),
        pytest.param([*BASE, "--max-concurrency", "99999999999"], "to 1000", id="concurrency-huge"),
        pytest.param([*BASE, "--webhook-secret", "whsec_!!!"], "webhook_secret:", id="secret"),
        # The rule the error states is the rule applied: whsec_ first, then base64 (strictly).
        pytest.param(
            [*BASE, "--webhook-secret", "notwhsec"],
            "webhook_secret: Not a Standard Webhooks secret: it does not start with whsec_ (whsec_ "
            "followed by the base64 of the key",
            id="secret-without-its-prefix",
        ),
        pytest.param(
            [*BASE, "--webhook-secret", "whsec_c2Vj*cmV0"],
            "webhook_secret: Not a Standard Webhooks secret: what follows whsec_ is not base64",
            id="secret-not-quite-base64",
        ),
        pytest.param(
            [*BASE, "--webhook-secret", "whsec_"],
            "webhook_secret: Not a Standard Webhooks secret: no key follows whsec_",
            id="secret-empty-key",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:EUR"],
            "is not PRODUCT_ID:UNIT_PRICE:CURRENCY:CAPACITY",
            id="offer-shape",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:EUR:2:person"],
            "price_unit: 'person' is not one of night, day",
            id="offer-price-unit",
        ),
        pytest.param(
            [*BASE, "--offer", f"room:10:EUR:2:night:{'x' * 201}"],
            "name: At most 200 characters",
            id="offer-name-too-long",
        ),
        pytest.param(
            [*BASE, "--offer", "room:ten:EUR:2"],
            "unit_price: 'ten' is not a decimal number",
            id="offer-price",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:EURO:2"], "'EURO' is not an ISO 4217 currency", id="offer-currency"
        ),
        # Decimal() reads them all (as 10, 10, 10, 10, 10): a price is digits 0-9 and the cents.
        *(
            pytest.param(
                [*BASE, "--offer", f"room:{price}:EUR:2"],
                f"unit_price: {price!r} is not an amount: digits 0-9, with a point before the cents",
                id=f"offer-price-written-{price}",
            )
            for price in ("\u0661\u0660", "1e1", "+10", "1_0", "10.000")
        ),
        # Three letters are not a currency: ISO 4217 must list the code as active, with a minor unit.
        *(
            pytest.param(
                [*BASE, "--offer", f"room:10:{code}:2"],
                f"currency: '{code}' is not an ISO 4217 currency code",
                id=f"offer-currency-{code}",
            )
            for code in ("XXX", "ABC", "XTS", "XAU", "XDR", "HRK")
        ),
        pytest.param(
            [*BASE, "--offer", "room:-1:EUR:2"],
            "unit_price: Must be a number more than 0",
            id="offer-negative",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:EUR:0"], "capacity: Must be from 1 to 1000", id="offer-capacity"
        ),
        # What the offers table cannot hold exactly: refused, never rounded or stored to break reads.
        pytest.param(
            [*BASE, "--offer", "room:99999999999999:EUR:2"],
            "unit_price: Too large: at most 99999999.99",
            id="offer-price-too-large",
        ),
        pytest.param(
            [*BASE, "--offer", "room:100000000:EUR:2"],
            "unit_price: Too large: at most 99999999.99",
            id="offer-price-just-too-large",
        ),
        pytest.param([*BASE, "--offer", "room:1e400:EUR:2"], "unit_price: Too large", id="offer-price-1e400"),
        pytest.param(
            [*BASE, "--offer", "room:nan:EUR:2"], "unit_price: Must be a number", id="offer-price-nan"
        ),
        pytest.param(
            [*BASE, "--offer", "room:sNaN:EUR:2"], "unit_price: Must be a number", id="offer-price-snan"
        ),
        pytest.param(
            [*BASE, "--offer", "room:inf:EUR:2"], "unit_price: Must be a number", id="offer-price-inf"
        ),
        pytest.param(
            [*BASE, "--offer", "room:0:EUR:2"], "unit_price: Must be a number more than 0", id="offer-free"
        ),
        pytest.param(
            [*BASE, "--offer", "room:10.001:EUR:2"],
            "unit_price: Must be a whole number of 0.01 EUR",
            id="offer-price-below-the-cent",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10.50:JPY:2"],
            "unit_price: Must be a whole number of 1 JPY",
            id="offer-price-below-the-yen",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:EUR:99999999999999"],
            "capacity: Must be from 1 to 1000 guests",
            id="offer-capacity-too-large",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:EUR:1001"],
            "capacity: Must be from 1 to 1000",
            id="offer-capacity-1001",
        ),
        pytest.param(
            [*BASE, "--offer", "room:10:ÉUR:2"],
            "currency: 'ÉUR' is not an ISO 4217 currency code",
            id="offer-currency-ascii",
        ),
        pytest.param(
            [*BASE, "--offer", f"{'p' * 101}:10:EUR:2"],
            "product_id: Required, at most 100",
            id="offer-product-id",
        ),
    ],
)
def test_bad_input_is_a_clear_command_error_and_writes_nothing(args, message):
    with pytest.raises(CommandError) as error:
        upsert(*args)

    assert message in str(error.value)
    assert Partner.objects.count() == 0
    assert Offer.objects.count() == 0


@pytest.mark.parametrize("option", ["--api-key", "--webhook-secret"])
def test_a_credential_from_a_variable_unset_here_is_kept_with_a_warning(option, monkeypatch):
    # The servers' environment may differ from the one the command runs in: accepted, but said.
    monkeypatch.delenv("QA2_MISSING_KEY", raising=False)
    err = StringIO()

    args = (
        _replace(BASE, option, "env:QA2_MISSING_KEY")
        if option in BASE
        else [*BASE, option, "env:QA2_MISSING_KEY"]
    )
    call_command("partner_upsert", *args, stdout=StringIO(), stderr=err)

    field = "api_key" if option == "--api-key" else "webhook_secret"
    assert getattr(Partner.objects.get(code="acme"), field) == "env:QA2_MISSING_KEY"
    effect = "calls will fail" if option == "--api-key" else "webhooks will be refused"
    assert err.getvalue().strip() == (
        f"Warning: QA2_MISSING_KEY is not set in this environment; the partner's {effect} until it is."
    )


@pytest.mark.parametrize("option", ["--api-key", "--webhook-secret"])
@pytest.mark.parametrize("value", ["env:", "env:MY KEY", "env:1KEY", "env:KEY=x"])
def test_a_credential_variable_that_names_no_variable_is_refused(option, value):
    args = _replace(BASE, option, value) if option in BASE else [*BASE, option, value]

    with pytest.raises(CommandError) as error:
        upsert(*args)

    field = "api_key" if option == "--api-key" else "webhook_secret"
    assert f"{field}: {value!r} names no environment variable" in str(error.value)
    assert Partner.objects.count() == 0


def test_a_webhook_secret_variable_set_here_not_in_the_form_is_kept_with_a_warning(monkeypatch):
    monkeypatch.setenv("QA2_BAD_SECRET", "not-a-secret")
    err = StringIO()

    call_command(
        "partner_upsert", *BASE, "--webhook-secret", "env:QA2_BAD_SECRET", stdout=StringIO(), stderr=err
    )

    assert Partner.objects.get(code="acme").webhook_secret == "env:QA2_BAD_SECRET"
    assert err.getvalue().strip() == (
        "Warning: QA2_BAD_SECRET here is not in the Standard Webhooks form (it does not start with "
        "whsec_): check it holds the secret the partner gave."
    )


def test_a_credential_from_a_variable_set_here_is_kept_without_a_word(monkeypatch):
    monkeypatch.setenv("QA2_SET_KEY", "k-2")
    err = StringIO()

    call_command(
        "partner_upsert", *_replace(BASE, "--api-key", "env:QA2_SET_KEY"), stdout=StringIO(), stderr=err
    )

    assert err.getvalue() == ""


def test_an_offer_at_the_bounds_is_stored_and_read_back_exactly():
    upsert(*BASE, "--offer", "suite:99999999.99:EUR:1000", "--offer", "ryokan:15000:JPY:2")

    # Read through the model: an out-of-range price made every such read fail on SQLite.
    assert list(Offer.objects.order_by("product_id").values_list("product_id", "unit_price", "capacity")) == [
        ("ryokan", Decimal("15000.00"), 2),
        ("suite", Decimal("99999999.99"), 1000),
    ]


def test_any_active_iso_4217_currency_is_accepted_in_capitals():
    upsert(*BASE, "--offer", "a:10:XOF:2", "--offer", "b:10.500:kwd:2", "--offer", "c:10:XCG:2")

    assert list(Offer.objects.order_by("product_id").values_list("currency", flat=True)) == [
        "XOF",
        "KWD",
        "XCG",
    ]


def test_an_update_refused_for_a_value_too_long_keeps_the_partner_as_it_was():
    upsert(*BASE)

    with pytest.raises(CommandError, match="api_key: At most 500 characters"):
        upsert(*_replace(_replace(BASE, "--api-key", "k" * 5000), "--base-url", "http://127.0.0.1:9"))

    assert Partner.objects.values_list("api_key", "base_url").get() == ("k-1", "http://127.0.0.1:8101")


def test_one_bad_offer_among_good_ones_saves_none_of_them():
    upsert(*BASE, "--offer", "room:10:EUR:2")

    with pytest.raises(CommandError, match="unit_price: Too large"):
        upsert(
            *_replace(BASE, "--api-key", "k-new"),
            "--offer",
            "room:20:EUR:3",
            "--offer",
            "suite:99999999999999:EUR:2",
        )

    assert Partner.objects.get().api_key == "k-1"
    assert list(Offer.objects.values_list("product_id", "unit_price", "capacity")) == [
        ("room", Decimal("10.00"), 2)
    ]


def test_a_bad_offer_leaves_an_existing_partner_as_it_was():
    upsert(*BASE)

    with pytest.raises(CommandError):
        upsert(*_replace(BASE, "--api-key", "k-new"), "--offer", "room:10:EUR:0")

    assert Partner.objects.get().api_key == "k-1"


def test_a_refused_setting_with_json_is_a_validation_error_naming_its_field():
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("partner_upsert", *_replace(BASE, "--base-url", "http://[::1"), "--json", stdout=out)

    words = "Not an http(s) base URL: 'http://[::1'."
    assert json.loads(out.getvalue()) == {
        "error": {
            "code": "validation_error",
            "message": f"Invalid partner settings. base_url: {words}",
            "fields": {"base_url": [words]},
        }
    }
    assert Partner.objects.count() == 0
