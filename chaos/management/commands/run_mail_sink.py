"""Run the local SMTP sink (`sandbox.mailsink`) until SIGTERM/SIGINT: `make run`'s mail provider.

A thin interface: it parses options and hands over. Every message sent to it is kept as an
`.eml` file (default: VAR_DIR/mail/) and its subject is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.mailsink import MailSinkConfig, add_arguments, run


class Command(BaseCommand):
    help = "Run a local SMTP server that keeps every message as an .eml file (make run's EMAIL_URL)."
    requires_system_checks: list[str] = []  # it touches nothing of the project

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser, default_directory=settings.VAR_DIR / "mail")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("sandbox").setLevel(logging.INFO)
        config = MailSinkConfig(directory=options["dir"], port=options["port"], host=options["host"])
        try:
            run(config)
        except OSError as exc:
            raise CommandError(f"mail sink could not listen on {config.host}:{config.port}: {exc}") from exc
