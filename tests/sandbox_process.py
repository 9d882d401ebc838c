"""A real sandbox partner for tests: one `manage.py run_sandbox_partner` process on a free port
with its own SQLite store, and helpers for its API and its `/_sandbox/` control endpoints.

Shared by the sandbox's contract tests (tests/sandbox) and the partner-boundary integration
tests (tests/partners), which subclass it with the partner code they register it under.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from chaos.procs import free_port as free_port  # one picker for every process a test starts
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
# How long a started process has to answer. One that dies is seen at once; this bounds only one
# that lives and never answers, so it is set for a busy 2-core machine, where a start that takes
# a second alone took eight beside twelve CPU-bound processes.
START_TIMEOUT_S = 120.0
# What the process logs once it listens, with the port it took (sandbox/server.py); given an
# outage window at start, it binds only when the window ends (sandbox/listener.py).
SAYS_ITS_PORT = re.compile(r"sandbox partner \S+ listening on http://[^\s:]+:(\d+)|port (\d+) open again")
# No fault at all; `reset()` puts these back (with the process's own seed).
PERFECT_FAULTS: dict[str, Any] = {
    "latency_ms": [0, 0],
    "timeout_after_commit_rate": 0,
    "error_5xx_rate": 0,
    "error_500_saved_rate": 0,
    "error_500_reconciled_rate": 0,
    "error_500_reconciled_delay_s": [5, 10],
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


@dataclass
class SandboxProcess:
    profile: str
    store: Path
    api_key: str
    extra: list[str] = field(default_factory=list)
    seed: int = 1234
    # 0: the process takes a free port as it binds, and says which in its log. A port chosen
    # here, free now, may be another process's by the time this one binds it (another worker's
    # server that asked for any free port); set, it is kept across restarts.
    port: int = 0
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
    def start(self, timeout_s: float = START_TIMEOUT_S) -> SandboxProcess:
        said_before = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # kill() takes the whole process group
                env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
            )
        try:
            wait_until(
                lambda: self._answers(said_before),
                timeout_s=timeout_s,
                interval_s=0.05,
                what=f"the {self.profile} sandbox to listen and answer (its log: {self.log_path})",
            )
        except BaseException:  # its start given up (a test's timeout too): no fixture will kill it
            self.kill()
            raise
        return self

    def _answers(self, said_before: int) -> bool:
        """Has the process, started when its log was `said_before` bytes long, said its port
        (when it chose it) and answered a request there?"""
        assert self.proc is not None
        assert self.proc.poll() is None, f"sandbox exited {self.proc.returncode}: {self.log()[-4000:]}"
        self.port = self.port or self._port_said(said_before)
        if not self.port:
            return False
        try:
            requests.get(f"{self.base_url}/_sandbox/faults", headers=self.auth, timeout=1)
        except (requests.ConnectionError, requests.Timeout):
            return False  # not listening yet, or not given the CPU to answer within the second
        return True

    def _port_said(self, said_before: int) -> int:
        """The port the process says it took, in what it logged after `said_before` bytes; 0 until
        it says one (a port 0 said is none: an outage window given at start keeps it unbound)."""
        said = self.log_path.read_bytes()[said_before:].decode(errors="replace")
        ports = (int(found.group(1) or found.group(2)) for found in SAYS_ITS_PORT.finditer(said))
        return next((port for port in ports if port), 0)

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
