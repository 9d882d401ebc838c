"""A local SMTP server that accepts every message and keeps it: the mail provider of `make run`
and of the mail tests.

Each message is written, as received, to its own `.eml` file in one directory (named by arrival
time, so that a sorted listing is arrival order; written under a temporary name and renamed, so a
reader never sees half a message), and its subject is logged. Like the sandbox partners it imports
nothing of ours: we reach it over SMTP, as we would a real provider.

`python -m sandbox.mailsink --port 8025 --dir var/mail` runs it without Django;
`manage.py run_mail_sink` takes the same options.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

logger = logging.getLogger("sandbox.mailsink")

HOSTNAME = "mailsink.localhost"  # given, so that the server never waits on a DNS lookup of its own
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class MailSinkConfig:
    directory: Path
    port: int = 8025
    host: str = "127.0.0.1"


class EmlStore:
    """The aiosmtpd handler: every message accepted becomes one `.eml` file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sequence = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)  # the server is built with decode_data=False
        path = self.keep(content)
        subject = BytesParser(policy=default_policy).parsebytes(content, headersonly=True)["subject"]
        logger.info(
            "mail kept: subject=%r to=%s file=%s", str(subject or ""), ",".join(envelope.rcpt_tos), path.name
        )
        return "250 Message accepted for delivery"

    def keep(self, content: bytes) -> Path:
        arrived = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{arrived}-{os.getpid()}-{next(self._sequence):06d}.eml"
        partial, final = self.directory / f".{name}.partial", self.directory / name
        partial.write_bytes(content)
        os.replace(partial, final)
        return final


async def start(config: MailSinkConfig) -> asyncio.Server:
    """Listen on the configured address; messages go to `config.directory` (created if missing)."""
    config.directory.mkdir(parents=True, exist_ok=True)
    handler = EmlStore(config.directory)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(
            handler,
            hostname=HOSTNAME,
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            decode_data=False,
        ),
        host=config.host,
        port=config.port,
    )


async def _serve_until_stopped(config: MailSinkConfig) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    server = await start(config)
    logger.info(
        "mail sink listening on %s:%d, keeping messages in %s", config.host, config.port, config.directory
    )
    await stopping.wait()
    server.close()
    await server.wait_closed()
    logger.info("mail sink stopped")


def run(config: MailSinkConfig) -> None:
    """Serve until SIGTERM or SIGINT. An address already in use raises OSError."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's line per SMTP command
    asyncio.run(_serve_until_stopped(config))


def add_arguments(parser: argparse.ArgumentParser, *, default_directory: Path) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=default_directory, help="where the .eml files go")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, default_directory=Path("var/mail"))
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(MailSinkConfig(directory=options.dir, port=options.port, host=options.host))


if __name__ == "__main__":
    main()
