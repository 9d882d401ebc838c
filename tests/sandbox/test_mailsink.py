"""The local SMTP sink (`sandbox/mailsink.py`), run as its own process without Django: every
message it accepts is kept whole as an .eml file, in arrival order, and its subject is logged."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.sandbox_process import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def message(subject: str, body: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "bookings@localhost", "ada@example.com", subject
    mail.set_content(body)
    mail.add_alternative(f"<p>{body}</p>", subtype="html")
    return mail


def test_every_message_is_kept_whole_in_arrival_order_and_its_subject_logged(tmp_path):
    # given the sink, started as `make run` would, but without Django
    port, directory, log = free_port(), tmp_path / "mail", tmp_path / "sink.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.mailsink", "--port", str(port), "--dir", str(directory)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: b"mail sink listening" in log.read_bytes(), what="the sink to listen", timeout_s=15
        )

        # when two messages are sent over SMTP, the second with a non-ASCII subject
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message("First", "one"))
            smtp.send_message(message("Zweite Bestätigung", "two"))

        # then each is a file of its own, in arrival order, and reads back as it was sent
        files = sorted(directory.glob("*.eml"))
        assert [f.suffix for f in files] == [".eml", ".eml"]
        kept = [message_from_bytes(f.read_bytes(), policy=default_policy) for f in files]
        assert [m["Subject"] for m in kept] == ["First", "Zweite Bestätigung"]
        # (as it crossed the wire: CRLF line ends)
        assert kept[1].get_body(("plain",)).get_content() == "two\r\n"
        assert kept[1].get_body(("html",)).get_content() == "<p>two</p>\r\n"
        assert list(directory.glob(".*")) == []  # no partial file left behind
        assert "subject='Zweite Bestätigung' to=ada@example.com" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        # and it stops cleanly on SIGTERM
        assert process.wait(10) == 0
    assert "mail sink stopped" in log.read_text()
