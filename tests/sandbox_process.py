"""A real sandbox partner for tests: one `manage.py run_sandbox_partner` process on a free port
with its own SQLite store, and helpers for its API and its `/_sandbox/` control endpoints.

Shared by the sandbox's contract tests (tests/sandbox) and the partner-boundary integration
tests (tests/partners), which subclass it with the partner code they register it under.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
# No fault at all; `reset()` puts these back (with the process's own seed).
PERFECT_FAULTS: dict[str, Any] = {
    "latency_ms": [0, 0],
    "timeout_after_commit_rate": 0,
    "error_5xx_rate": 0,
    "error_500_saved_rate": 0,
    "refund_refused_rate": 0,
    "void_refused_rate": 0,
    "rate_limit_rate": 0,
    "reject_rate": 0,
    "async_confirm_delay_s": None,
    "webhook_duplicate_rate": 0,
    "webhook_reorder_rate": 0,
    "webhook_delay_s": [0, 0],
    "webhook_early_rate": 0,
    "clock_skew_s": 0,
    "honour_idempotency_keys": True,
    "partner_cancel_rate": 0,
    "partner_cancel_delay_s": [60, 600],
    "vanish_rate": 0,
    "vanish_delay_s": [60, 600],
    "amend_rate": 0,
    "auth_failure_window_s": None,
    "outage_window_s": None,
    "garbage_values_rate": 0,
    "time_scale": 1,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SandboxProcess:
    profile: str
    store: Path
    api_key: str
    extra: list[str] = field(default_factory=list)
    seed: int = 1234
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        if self.profile in ("reference", "payments"):
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"X-Api-Key": self.api_key}

    @property
    def log_path(self) -> Path:
        return self.store.with_suffix(".log")

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_sandbox_partner",
            "--profile",
            self.profile,
            "--port",
            str(self.port),
            "--store",
            str(self.store),
            "--api-key",
            self.api_key,
            *self.extra,
        ]

    # --- process ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> SandboxProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # kill() takes the whole process group
                env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
            )
        wait_until(
            self._answers,
            timeout_s=timeout_s,
            interval_s=0.05,
            what=f"the {self.profile} sandbox at {self.base_url} to answer (its log: {self.log_path})",
        )
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"sandbox exited {self.proc.returncode}: {self.log()[-4000:]}"
        try:
            requests.get(f"{self.base_url}/_sandbox/faults", headers=self.auth, timeout=1)
        except requests.ConnectionError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    # --- HTTP ------------------------------------------------------------------------------
    def request(
        self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any
    ) -> requests.Response:
        """Sends the API key unless `authenticated` is False (then only the given headers)."""
        headers = {**(self.auth if authenticated else {}), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return requests.request(method, f"{self.base_url}{path}", headers=headers, **kwargs)

    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A call to the sandbox's own control API, which must succeed."""
        response = self.request(method, f"/_sandbox/{path}", **kwargs)
        assert response.status_code == 200, response.text
        return response

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        return self.control("POST", "faults", json=changes).json()

    def reset(self) -> None:
        """No fault, and an empty store."""
        self.set_faults(**PERFECT_FAULTS, seed=self.seed)
        self.control("POST", "reset")

    def truth(self, client_reference: str | None = None) -> list[dict[str, Any]]:
        """Ground truth: every reservation the partner holds (for one client reference)."""
        params = {"client_reference": client_reference} if client_reference else None
        return self.control("GET", "reservations", params=params).json()["reservations"]

    def payments(self, payment_intent: str | None = None) -> dict[str, Any]:
        """Ground truth of the payment provider: intents, charges, refunds (of one intent), keys."""
        params = {"payment_intent": payment_intent} if payment_intent else None
        return self.control("GET", "ground_truth", params=params).json()

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats").json()
