"""The project's SMTP sink (`manage.py run_mail_sink`) as a real process, for the tests that
read the mail a customer receives (fixture `mail_sink`).

One sink per test process, started at its first use and emptied before each test that asks for
it: a sink is a Django process whose start costs about a second, paid by every mail test when each
started its own. A mail is written before the sink answers the SMTP send that carried it, and a
test's workers and processes are stopped in its teardown, so one test's mail reaches the next
only from a worker thread still sending past its stop's timeout (none is seen to).
"""

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

from tests.helpers import wait_until
from tests.sandbox_process import START_TIMEOUT_S, free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class MailSink:
    """The project's SMTP sink, running as its own process."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(path.read_bytes(), policy=default_policy) for path in self.files()]


@pytest.fixture(scope="session")
def mail_sink_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSink]:
    home = tmp_path_factory.mktemp("mail-sink")
    port = free_port()
    log_path, directory = home / "mailsink.log", home / "mail"
    with log_path.open("wb") as log:
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
        try:
            wait_until(
                lambda: process.poll() is not None or b"mail sink listening" in log_path.read_bytes(),
                what="the mail sink to listen",
                timeout_s=START_TIMEOUT_S,
            )
            assert process.poll() is None, log_path.read_text()
            yield MailSink(directory=directory, port=port, process=process)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(10)


@pytest.fixture
def mail_sink(mail_sink_process: MailSink, settings) -> MailSink:
    """A real SMTP server holding no mail yet, and the settings that send mail to it."""
    assert mail_sink_process.process.poll() is None, "the mail sink process has stopped"
    for path in mail_sink_process.files():
        path.unlink()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", mail_sink_process.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    return mail_sink_process


def telling(sink: MailSink, notification) -> list[EmailMessage]:
    """The sink's messages that tell a notification's change: its own mail, or the status mail
    before it that included it (`X-Booking-Included-Versions`, bookings/notifications.py)."""
    version = str(notification.status_version)
    return [
        m
        for m in sink.messages()
        if m["X-Booking-Reference"] == notification.booking.reference
        and (
            m["X-Booking-Status-Version"] == version
            or version in str(m["X-Booking-Included-Versions"] or "").split(",")
        )
    ]
