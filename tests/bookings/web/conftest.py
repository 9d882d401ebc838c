"""Fixtures of the customer web client's tests: a logged-in browser session (Django's test
client), offers and quotes, and a real SMTP server (the project's own sink, as a process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from django.test import Client

from tests.factories import OfferFactory, PartnerFactory, QuoteFactory, UserFactory
from tests.helpers import unique_code, wait_until
from tests.partners.conftest import (  # noqa: F401 - the real partner side, for the browser tests
    clean_queues,
    fast_settings,
    harness,
    no_stray_db_sessions,
    partner_worker,
    reset_guard,
    sandboxes,
)
from tests.sandbox_process import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def web(customer) -> Client:
    """The customer's browser session, logged in."""
    client = Client()
    client.force_login(customer)
    return client


@pytest.fixture
def other_customer(db):
    return UserFactory()


@pytest.fixture
def offer(db):
    return OfferFactory(partner=PartnerFactory(code=unique_code("web")), capacity=4)


@pytest.fixture
def quote(customer, offer):
    return QuoteFactory(customer=customer, offer=offer)


def htmx(client: Client, url: str, **params: str):
    """A GET as htmx sends it (the HX-Request header)."""
    return client.get(url, params, headers={"HX-Request": "true"})


@dataclass
class MailSink:
    """The project's SMTP sink (`manage.py run_mail_sink`), running as its own process."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(path.read_bytes(), policy=default_policy) for path in self.files()]


@pytest.fixture
def mail_sink(tmp_path, settings) -> Iterator[MailSink]:
    """A real SMTP server on a free port, and the settings that send mail to it."""
    port = free_port()
    directory = tmp_path / "mail"
    log = open(tmp_path / "mailsink.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_mail_sink",
            "--port",
            str(port),
            "--dir",
            str(directory),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
    )
    sink = MailSink(directory=directory, port=port, process=process)
    wait_until(
        lambda: (
            process.poll() is not None or b"mail sink listening" in (tmp_path / "mailsink.log").read_bytes()
        ),
        what="the mail sink to listen",
        timeout_s=30,
    )
    assert process.poll() is None, (tmp_path / "mailsink.log").read_text()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield sink
    process.send_signal(signal.SIGTERM)
    process.wait(10)
    log.close()
