"""Real sandbox partner processes (`manage.py run_sandbox_partner`) and a real webhook receiver.

No database: the sandbox keeps its own SQLite store in a temp directory. The two shared
partners (one per profile) are module-scoped for speed; each test gets them with faults back at
their defaults and an empty store.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.sandbox_process import PERFECT_FAULTS, SandboxProcess


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The sandbox uses neither our database nor our Redis (but for the test of that very claim).
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and item.fspath.basename != "test_independence.py":
            item.add_marker(pytest.mark.once_per_ci("embedded"))


API_KEY = "sandbox-test-key"
SECRET = "whsec_" + base64.b64encode(b"sandbox-test-secret-0123456789ab").decode()
DEFAULT_FAULTS: dict[str, Any] = {**PERFECT_FAULTS, "seed": 1234}  # the sandbox's own defaults


def unique_ref() -> str:
    return f"BK-{uuid.uuid4().hex[:8].upper()}"


# --- webhook receiver ------------------------------------------------------------------------
@dataclass(frozen=True)
class Hook:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class WebhookReceiver:
    """Records every POST; answers 204 unless told to fail the next ones."""

    hooks: list[Hook] = field(default_factory=list)
    planned_codes: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/partner"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.hooks.append(Hook(headers, body, time.monotonic()))
                    code = receiver.planned_codes.pop(0) if receiver.planned_codes else 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.hooks.clear()
            self.planned_codes.clear()

    def for_reservation(self, reservation_id: str) -> list[Hook]:
        with self.lock:
            return [h for h in self.hooks if h.payload["data"]["id"] == reservation_id]

    def wait_for(self, reservation_id: str, count: int, timeout: float = 5.0) -> list[Hook]:
        return wait_until(
            lambda: (hooks := self.for_reservation(reservation_id)) and len(hooks) >= count and hooks,
            timeout_s=timeout,
            what=f"{count} webhook(s) for {reservation_id}",
        )


def reference_body(client_reference: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "client_reference": client_reference or unique_ref(),
        "product_id": "hotel-42-dbl",
        "start_date": "2027-03-01",
        "end_date": "2027-03-04",
        "guests": 2,
        "total_price": "360.00",
        "currency": "EUR",
        **overrides,
    }


def legacy_body(ref: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "ref": ref or unique_ref(),
        "item": "hotel-42-dbl",
        "from": "2027-03-01",
        "to": "2027-03-04",
        "pax": 2,
        "amount": "360.00",
        "ccy": "EUR",
        **overrides,
    }


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def session_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def shared_reference(
    tmp_path_factory: pytest.TempPathFactory, session_receiver: WebhookReceiver
) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("reference") / "partner.sqlite3"
    partner = SandboxProcess(
        "reference",
        store,
        API_KEY,
        [
            "--webhook-url",
            session_receiver.url,
            "--webhook-secret",
            SECRET,
            "--timezone",
            "Europe/Berlin",
            "--hang-s",
            "3",
        ],
    ).start()
    yield partner
    partner.kill()


@pytest.fixture(scope="session")
def shared_legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("legacy") / "partner.sqlite3"
    # --hang-s 0: a timeout-after-commit drops the connection at once.
    partner = SandboxProcess(
        "legacy", store, API_KEY, ["--timezone", "Europe/Berlin", "--hang-s", "0"]
    ).start()
    yield partner
    partner.kill()


@pytest.fixture
def receiver(session_receiver: WebhookReceiver) -> WebhookReceiver:
    session_receiver.reset()
    return session_receiver


@pytest.fixture
def reference(shared_reference: SandboxProcess, receiver: WebhookReceiver) -> SandboxProcess:
    shared_reference.reset()
    receiver.reset()  # drop anything the sender was still delivering from the previous test
    return shared_reference


@pytest.fixture
def legacy(shared_legacy: SandboxProcess) -> SandboxProcess:
    shared_legacy.reset()
    return shared_legacy


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    """Start a partner of its own (for restarts, signals, start options); killed at teardown."""
    started: list[SandboxProcess] = []

    def start(
        profile: str, *extra: str, store: Path | None = None, port: int | None = None
    ) -> SandboxProcess:
        partner = SandboxProcess(profile, store or tmp_path / f"{profile}.sqlite3", API_KEY, list(extra))
        if port is not None:
            partner.port = port
        started.append(partner)
        return partner.start()

    yield start
    for partner in started:
        partner.kill()
