"""Command-line options, shared by `manage.py run_sandbox_partner` and `python -m ...server`."""

from __future__ import annotations

import argparse
import json
import math
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sandbox.config import SandboxConfig
from sandbox.faults import FAULT_KEYS, FaultSettingError, FaultSettings, parse_cli
from sandbox.ledger import Product

FAULT_HELP = {
    "latency_ms": "added latency per call, min,max milliseconds (uniform)",
    "timeout_after_commit_rate": "share of writes that commit, then hang and drop the connection",
    "error_5xx_rate": "share of calls answered 5xx; half of them after committing",
    "error_500_saved_rate": "share of keyed payment writes answered 500 before their change, kept",
    "error_500_reconciled_rate": "share of keyed payment writes answered 500 (kept), their change made later",
    "error_500_reconciled_delay_s": "when such a write's change is made, min,max seconds after its 500",
    "rate_limit_rate": "share of calls answered 429 with Retry-After",
    "reject_rate": "share of creates rejected as sold_out",
    "async_confirm_delay_s": "creates answer pending and settle after this delay (null: at once)",
    "webhook_duplicate_rate": "share of webhooks delivered twice or more",
    "webhook_reorder_rate": "share of webhooks held back behind later ones",
    "webhook_delay_s": "extra delay before delivering webhooks, min,max seconds",
    "webhook_early_rate": "share of creates whose webhook is sent before the POST's response",
    "clock_skew_s": "offset of the partner's clock in seconds (timestamps and Date header)",
    "honour_idempotency_keys": "true|false (reference and payments profiles)",
    "partner_cancel_rate": "share of confirmed reservations the partner later cancels on its own",
    "partner_cancel_delay_s": "when the partner cancels, min,max seconds after confirming",
    "vanish_rate": "share of reservations the partner later loses (404, absent from lookups and listings)",
    "vanish_delay_s": "when a reservation vanishes, min,max seconds after its creation",
    "amend_rate": "share of confirmed reservations whose dates, guests or price change silently",
    "auth_failure_window_s": "start,length seconds of answering every API call 401/403 (rotated key)",
    "outage_window_s": "start,length seconds of refused connections, control endpoints included",
    "garbage_values_rate": "share of answers and webhooks carrying out-of-range values",
    "refund_refused_rate": "share of refunds the payment provider refuses (400 charge_not_refundable)",
    "void_refused_rate": "share of cancels (releases of a hold) the payment provider refuses (400)",
    "time_scale": "divides every delay, so hours of lateness fit in a test",
    "seed": "random seed for reproducible runs (default: random, shown by GET /_sandbox/faults)",
}


MAX_PORT = 65535


class ConfigError(ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=("reference", "legacy", "payments"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True, help="SQLite file of this partner's own store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default="sandbox-key")
    parser.add_argument("--webhook-url", help="reference, payments: where webhooks are delivered")
    parser.add_argument(
        "--webhook-secret",
        help="reference: whsec_<base64> signing secret; payments: the endpoint's whsec_...",
    )
    parser.add_argument(
        "--timezone", default="UTC", help="partner-local time zone (legacy times, reference offsets)"
    )
    parser.add_argument("--products-file", help='JSON [{"id": ..., "capacity": ..., "price": ...}]')
    parser.add_argument(
        "--product",
        action="append",
        default=[],
        metavar="ID:CAPACITY:PRICE",
        help="a catalogue entry (repeatable); without any catalogue every product is unlimited",
    )
    parser.add_argument(
        "--hang-s",
        type=float,
        default=30.0,
        help="how long a timeout-after-commit holds before dropping (not scaled; 0: drop at once)",
    )
    parser.add_argument("--threads", type=int, default=64, help="server thread pool size")
    parser.add_argument(
        "--no-lookup-by-reference",
        action="store_true",
        help="reference: answer 404 to GET /v1/reservations?client_reference=",
    )
    for key in FAULT_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, help=FAULT_HELP[key])


def _product(spec: str) -> Product:
    try:
        product_id, capacity, price = spec.rsplit(":", 2)
        return Product(product_id, int(capacity), Decimal(price))
    except (ValueError, InvalidOperation) as exc:
        raise ConfigError(f"--product {spec!r}: want ID:CAPACITY:PRICE") from exc


def _catalogue(options: dict[str, Any]) -> dict[str, Product] | None:
    products: list[Product] = []
    if options.get("products_file"):
        try:
            entries = json.loads(Path(options["products_file"]).read_text())
            products += [Product(str(e["id"]), int(e["capacity"]), Decimal(str(e["price"]))) for e in entries]
        except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as exc:
            raise ConfigError(f"--products-file: {exc}") from exc
    products += [_product(spec) for spec in options.get("product") or []]
    if not products:
        return None
    if any(p.capacity < 0 for p in products):
        raise ConfigError("product capacity must be >= 0")
    return {p.id: p for p in products}


def config_from_options(options: dict[str, Any]) -> SandboxConfig:
    try:
        faults = {
            key: parse_cli(key, str(options[key])) for key in FAULT_KEYS if options.get(key) is not None
        }
    except FaultSettingError as exc:
        raise ConfigError(str(exc)) from exc
    profile = options["profile"]
    sends_webhooks = profile in ("reference", "payments")
    if sends_webhooks and options.get("webhook_url") and not options.get("webhook_secret"):
        raise ConfigError("--webhook-url needs --webhook-secret")
    try:
        ZoneInfo(options.get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: too long for a file name
        raise ConfigError(f"--timezone: unknown zone {options.get('timezone')!r}") from exc
    port = int(options["port"])
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"--port {port}: a port is 0 (any free one) to {MAX_PORT}")
    threads = int(options["threads"] if options.get("threads") is not None else 64)
    if threads < 1:
        raise ConfigError(f"--threads {threads}: at least 1")
    hang_s = float(options.get("hang_s") if options.get("hang_s") is not None else 30.0)
    if not (math.isfinite(hang_s) and hang_s >= 0):
        raise ConfigError(f"--hang-s {hang_s}: seconds, 0 or more")
    return SandboxConfig(
        profile=profile,
        port=port,
        store=Path(options["store"]),
        host=options.get("host") or "127.0.0.1",
        api_key=options.get("api_key") or "sandbox-key",
        webhook_url=options.get("webhook_url") if sends_webhooks else None,
        webhook_secret=options.get("webhook_secret"),
        timezone=options.get("timezone") or "UTC",
        catalogue=_catalogue(options),
        faults=FaultSettings(**faults),
        hang_s=hang_s,
        threads=threads,
        lookup_by_reference=not options.get("no_lookup_by_reference"),
    )
