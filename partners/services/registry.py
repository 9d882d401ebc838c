"""Registering partners and their offers (ops, demo data, tests and the chaos run use this)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from bookings.currencies import currency_error
from bookings.models import Offer, PriceUnit
from bookings.pricing import AMOUNT_WRITTEN, minor_unit_exponent, written_as_amount
from config.errors import ValidationFailed
from partners.models import Adapter, Capability, Partner
from partners.services import signatures

DEFAULT_CAPABILITIES = {
    Adapter.REFERENCE: [
        Capability.IDEMPOTENCY_KEYS,
        Capability.LOOKUP_BY_REFERENCE,
        Capability.WEBHOOKS,
        Capability.ASYNC_CONFIRMATION,
    ],
    Adapter.LEGACY: [Capability.CHANGE_LISTING],
}


# What an offer's columns hold (bookings.Offer): a price below 10 ** (digits - places) kept to
# the cent, a product id of at most its length. A value beyond them is refused, never rounded
# or truncated: SQLite would store it and every later read of the offers would fail.
_PRICE_FIELD = Offer._meta.get_field("unit_price")
# What `env:` may name: a variable a shell can export.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PRICE_PLACES = _PRICE_FIELD.decimal_places
PRICE_LIMIT = Decimal(10) ** (_PRICE_FIELD.max_digits - PRICE_PLACES)
PRODUCT_ID_MAX = Offer._meta.get_field("product_id").max_length
NAME_MAX = Offer._meta.get_field("name").max_length
# What a partner's columns hold: PostgreSQL refuses a longer value with an error, not a refusal.
PARTNER_MAX = {
    field: Partner._meta.get_field(field).max_length
    for field in ("name", "base_url", "api_key", "webhook_secret", "timezone")
}
# Most guests one booking may bring: far above any room or tour, so a slipped finger (an extra
# digit or ten) is refused rather than stored as a capacity no one meant.
MAX_CAPACITY = 1000
# Most calls in flight to one partner at once: each holds a worker thread for its call, and no
# deployment of ours has thousands (a slipped digit would make the cap no cap at all).
MAX_CONCURRENCY = 1000


def _shown(text: str, limit: int = 60) -> str:
    """`text` quoted for a refusal, cut short: a pasted megabyte should not come back whole."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _price_error(price: Decimal, currency: str) -> str | None:
    """Why `price` cannot be the offer's unit price exactly, or None. Its smallest step is the
    currency's smallest unit, kept to the cent (as bookings.pricing rounds a cancellation fee)."""
    if not price.is_finite() or price <= 0:
        return "Must be a number more than 0."
    if price >= PRICE_LIMIT:
        return f"Too large: at most {PRICE_LIMIT - Decimal(1).scaleb(-PRICE_PLACES)}."
    step = Decimal(1).scaleb(-min(minor_unit_exponent(currency), PRICE_PLACES))
    if price != price.quantize(step):
        return f"Must be a whole number of {step} {currency}."
    return None


OFFER_FORMAT = "PRODUCT_ID:UNIT_PRICE:CURRENCY:CAPACITY[:PRICE_UNIT[:NAME]]"


@dataclass(frozen=True)
class OfferSpec:
    product_id: str
    unit_price: Decimal
    currency: str
    capacity: int
    # Empty: not said. A new offer then has no name (the pages show its product id) and is priced
    # by the night; an offer registered before keeps the name and unit it has (the admin's).
    price_unit: str = ""
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> OfferSpec:
        """`OFFER_FORMAT`, e.g. `hotel-42-dbl:120.00:EUR:2` or `tour-7-city:45.00:EUR:6:day:City
        tour` (the name is the rest, colons and all); `ValidationFailed` naming every part the
        offers table cannot hold exactly (checked before anything is saved)."""
        parts = text.split(":", 5)
        if len(parts) < 4:
            raise ValidationFailed(f"Offer {_shown(text)} is not {OFFER_FORMAT}.")
        product_id, price, currency, capacity = parts[:4]
        price_unit = parts[4] if len(parts) > 4 else ""
        name = parts[5].strip() if len(parts) > 5 else ""
        currency = currency.upper()
        errors: dict[str, list[str]] = {}
        if price_unit and price_unit not in PriceUnit.values:
            errors["price_unit"] = [f"{_shown(price_unit)} is not one of {', '.join(PriceUnit.values)}."]
        if len(name) > NAME_MAX:
            errors["name"] = [f"At most {NAME_MAX} characters."]
        if not product_id or len(product_id) > PRODUCT_ID_MAX:
            errors["product_id"] = [f"Required, at most {PRODUCT_ID_MAX} characters."]
        if why := currency_error(currency):
            errors["currency"] = [why]
        try:
            unit_price = Decimal(price)
        except InvalidOperation:
            errors["unit_price"] = [f"{_shown(price)} is not a decimal number."]
        else:
            if why := _price_error(unit_price, currency):
                errors["unit_price"] = [why]
            elif not written_as_amount(price, currency):  # Decimal read it (1e1, +10): not written so
                errors["unit_price"] = [f"{_shown(price)} is not an amount: {AMOUNT_WRITTEN}."]
        try:
            seats = int(capacity)
        except ValueError:
            errors["capacity"] = [f"{_shown(capacity)} is not a whole number."]
        else:
            if not 1 <= seats <= MAX_CAPACITY:
                errors["capacity"] = [f"Must be from 1 to {MAX_CAPACITY} guests."]
        if errors:
            raise ValidationFailed(f"Offer {_shown(text)} is invalid.", fields=errors)
        cents = unit_price.quantize(Decimal(1).scaleb(-PRICE_PLACES))
        return cls(product_id, cents, currency, seats, price_unit=price_unit, name=name)


def _base_url_error(base_url: str) -> str | None:
    """Why `base_url` is not a partner's http(s) base URL, or None. Not URLValidator: it refuses
    internal host names without a dot (http://sandbox:8101)."""
    try:
        url = urlsplit(base_url)
        host = url.hostname  # ValueError for a bracketed host that is no IPv6 address
    except ValueError:  # an unclosed "[" (http://[::1)
        return f"Not an http(s) base URL: {_shown(base_url)}."
    if url.scheme not in ("http", "https") or not host or url.query or url.fragment:
        return f"Not an http(s) base URL: {_shown(base_url)}."
    try:
        port = url.port  # ValueError past 65535 or not digits
    except ValueError:
        port = 0
    if port == 0:  # a port said (":" after the host) that no server listens on
        return f"Not an http(s) base URL: {_shown(base_url)} (a port is 1 to 65535)."
    if url.username is not None or url.password is not None:
        # It would be stored and shown (the admin, --json) as any URL: a secret is the key's.
        return "No user or password in it (the partner's key is --api-key)."
    return None


def _check(
    *,
    code: str,
    name: str,
    adapter: str,
    base_url: str,
    api_key: str,
    webhook_secret: str,
    capabilities: list[str],
    timezone_name: str,
    timeouts: tuple[float, float],
) -> None:
    errors: dict[str, list[str]] = {}
    try:
        validate_slug(code)
        if len(code) > 40:
            raise ValidationError("too long")
    except ValidationError:
        errors["code"] = ["Letters, digits, - and _ only, at most 40 characters (it names a queue)."]
    if why := _base_url_error(base_url):
        errors["base_url"] = [why]
    if not api_key.strip():
        errors["api_key"] = ["Required (the key itself, or env:VARIABLE)."]
    for field, value in (("api_key", api_key), ("webhook_secret", webhook_secret)):
        if value.startswith("env:") and not _VARIABLE_NAME.fullmatch(value.removeprefix("env:")):
            errors[field] = [f"{value!r} names no environment variable: env: then letters, digits and _."]
    # Standard Webhooks' rule (`signatures.secret_problem`); a variable's value is the servers' to
    # hold, read when a delivery comes.
    secret_env = webhook_secret.startswith("env:")
    if webhook_secret and not secret_env and (why := signatures.secret_problem(webhook_secret)):
        errors["webhook_secret"] = [f"Not a Standard Webhooks secret: {why} ({signatures.SECRET_RULE})."]
    if adapter not in Adapter.values:
        errors["adapter"] = [f"Must be one of {', '.join(Adapter.values)}."]
    unknown = sorted(set(capabilities) - set(Capability.values))
    if unknown:
        errors["capabilities"] = [f"Unknown: {', '.join(unknown)}. Known: {', '.join(Capability.values)}."]
    try:
        ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        errors["timezone"] = [f"Unknown time zone {_shown(timezone_name)}."]
    said = {
        "name": name,
        "base_url": base_url,
        "api_key": api_key,
        "webhook_secret": webhook_secret,
        "timezone": timezone_name,
    }
    for field, value in said.items():
        if len(value) > PARTNER_MAX[field]:  # said once: "Unknown time zone" says it too
            errors.setdefault(field, [f"At most {PARTNER_MAX[field]} characters."])
    if not all(0 < t <= 120 for t in timeouts):  # written so that NaN fails it too
        errors["timeouts"] = ["Connect and read timeouts must be between 0 and 120 seconds."]
    if errors:
        raise ValidationFailed("Invalid partner settings.", fields=errors)


def unset_variables(partner: Partner) -> list[str]:
    """What an operator should hear about a partner's `env:VARIABLE` credentials that this
    process's environment does not hold (or holds empty). Accepted all the same: the servers'
    environment may differ from the one the command runs in."""
    effects = {
        "api_key": "the partner's calls will fail until it is",
        "webhook_secret": "the partner's webhooks will be refused until it is",
    }
    warnings = []
    for field, effect in effects.items():
        value = getattr(partner, field)
        if not value.startswith("env:"):
            continue
        name = value.removeprefix("env:")
        held = os.environ.get(name, "")
        if not held:
            warnings.append(f"{name} is not set in this environment; {effect}.")
        elif field == "webhook_secret" and (why := signatures.secret_problem(held)):
            # Not refused: the receiver reads such a value leniently (an optional prefix, loose
            # base64), so it may still be the partner's key; but it is worth a second look.
            warnings.append(
                f"{name} here is not in the Standard Webhooks form ({why}): "
                "check it holds the secret the partner gave."
            )
    return warnings


@transaction.atomic
def partner_upsert(
    *,
    code: str,
    adapter: str,
    base_url: str,
    api_key: str,
    name: str = "",
    capabilities: list[str] | None = None,
    webhook_secret: str = "",
    timezone_name: str = "UTC",
    timeouts: tuple[float, float] = (2.0, 10.0),
    max_concurrency: int = 8,
    enabled: bool = True,
    offers: list[OfferSpec] = (),  # type: ignore[assignment]
) -> tuple[Partner, bool]:
    caps = list(DEFAULT_CAPABILITIES.get(adapter, [])) if capabilities is None else capabilities
    _check(
        code=code,
        name=name,
        adapter=adapter,
        base_url=base_url,
        api_key=api_key,
        webhook_secret=webhook_secret,
        capabilities=caps,
        timezone_name=timezone_name,
        timeouts=timeouts,
    )
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise ValidationFailed(
            f"max_concurrency must be 1 to {MAX_CONCURRENCY}.",
            fields={"max_concurrency": [f"Must be 1 to {MAX_CONCURRENCY}."]},
        )
    partner, created = Partner.objects.update_or_create(
        code=code,
        defaults={
            "name": name or code,
            "adapter": adapter,
            "base_url": base_url.rstrip("/"),
            "api_key": api_key,
            "capabilities": [str(c) for c in caps],
            "webhook_secret": webhook_secret,
            "timezone": timezone_name,
            "connect_timeout_s": timeouts[0],
            "read_timeout_s": timeouts[1],
            "max_concurrency": max_concurrency,
            "enabled": enabled,
        },
    )
    for spec in offers:
        # A name or unit left unsaid keeps the offer's own: a name given in the admin is not
        # overwritten (it used to become the product id, which the pages then showed).
        said = {"price_unit": spec.price_unit, "name": spec.name}
        Offer.objects.update_or_create(
            partner=partner,
            product_id=spec.product_id,
            defaults={
                "unit_price": spec.unit_price,
                "currency": spec.currency,
                "capacity": spec.capacity,
                "is_active": True,
                **{field: value for field, value in said.items() if value},
            },
        )
    return partner, created
