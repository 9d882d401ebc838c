"""Sandbox partners of a run: one process per profile, its own store, registered with us.

Each is started with `manage.py run_sandbox_partner` on a free port, told its faults through
`POST /_sandbox/faults`, registered with `manage.py partner_upsert` under a code unique to the
run, and read back at the end through `GET /_sandbox/reservations` (the ground truth).
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from django.core.management import call_command

from chaos.faults import FaultPlan
from chaos.procs import ManagedProcess, free_port, wait_until

# The partner's catalogue: one product with room for everything, one deliberately scarce.
ROOM = ("room", 1_000_000, "100.00")
SUITE = ("suite", 3, "250.00")
# Our offers of them: PRODUCT_ID:UNIT_PRICE:CURRENCY:MAX_GUESTS.
OFFERS = (f"{ROOM[0]}:{ROOM[2]}:EUR:4", f"{SUITE[0]}:{SUITE[2]}:EUR:2")
TIMEZONES = {"reference": "America/New_York", "legacy": "Europe/Berlin"}
HTTP_TIMEOUT = (3.0, 60.0)
OUTAGE_MARGIN_S = 10.0  # beyond the outage window, for the harness's own reads


@dataclass
class SandboxPartner:
    profile: str
    code: str
    plan: FaultPlan
    port: int = field(default_factory=free_port)
    api_key: str = field(default_factory=lambda: "chaos-" + secrets.token_hex(12))
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )
    process: ManagedProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def timezone(self) -> str:
        return TIMEZONES[self.profile]

    def headers(self) -> dict[str, str]:
        if self.profile == "reference":
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"X-Api-Key": self.api_key}

    def argv(self, *, store: Path, webhook_url: str, hang_s: float) -> list[str]:
        argv = [
            sys.executable,
            "manage.py",
            "run_sandbox_partner",
            "--profile",
            self.profile,
            "--port",
            str(self.port),
            "--store",
            str(store),
            "--api-key",
            self.api_key,
            "--timezone",
            self.timezone,
            "--hang-s",
            str(hang_s),
            "--threads",
            "64",
            "--seed",
            str(self.plan.settings.get("seed", 0)),
        ]
        for product_id, capacity, price in (ROOM, SUITE):
            argv += ["--product", f"{product_id}:{capacity}:{price}"]
        if self.profile == "reference":
            argv += ["--webhook-url", webhook_url, "--webhook-secret", self.webhook_secret]
        return argv

    # --- the sandbox's own API -----------------------------------------------------------
    def ready(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/_sandbox/info", headers=self.headers(), timeout=2).ok
        except requests.RequestException:
            return False

    def wait_ready(self, *, timeout_s: float) -> bool:
        return wait_until(self.ready, timeout_s=timeout_s, interval_s=0.2)

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{self.base_url}/_sandbox/faults", json=changes, headers=self.headers(), timeout=HTTP_TIMEOUT
        )
        if not response.ok:
            raise RuntimeError(
                f"{self.code}: faults {changes} refused: {response.status_code} {response.text}"
            )
        return dict(response.json())

    def ground_truth(self) -> list[dict[str, Any]]:
        return list(self._control_read("reservations")["reservations"])

    def stats(self) -> dict[str, Any]:
        data = self._control_read("stats")
        webhooks = dict(data.get("webhooks") or {})
        webhooks.pop("attempt_log", None)  # one row per delivery attempt: too long for a report
        data["webhooks"] = webhooks
        return data

    def _control_read(self, path: str) -> dict[str, Any]:
        """GET `/_sandbox/<path>`, waiting out the partner's outage window: its port refuses
        every connection then, the control endpoints' too, and a short run's verdict may fall
        inside it."""
        deadline = time.monotonic() + self.plan.outage_s + OUTAGE_MARGIN_S
        while True:
            try:
                response = requests.get(
                    f"{self.base_url}/_sandbox/{path}", headers=self.headers(), timeout=HTTP_TIMEOUT
                )
                break
            except requests.ConnectionError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        response.raise_for_status()
        return dict(response.json())

    # --- our registry ----------------------------------------------------------------------
    def register(self, *, connect_timeout_s: float, read_timeout_s: float, max_concurrency: int) -> dict:
        out = io.StringIO()
        options: dict[str, Any] = {
            "code": self.code,
            "name": f"Chaos {self.profile} ({self.code})",
            "adapter": self.profile,
            "base_url": self.base_url,
            "api_key": self.api_key,
            "timezone": self.timezone,
            "timeouts": f"{connect_timeout_s:g},{read_timeout_s:g}",
            "max_concurrency": max_concurrency,
            "offer": list(OFFERS),
            "json": True,
            "stdout": out,
        }
        if self.profile == "reference":
            options["webhook_secret"] = self.webhook_secret
        call_command("partner_upsert", **options)
        return dict(json.loads(out.getvalue()))
