"""Run one sandbox partner (reference, legacy or payments profile) until SIGTERM/SIGINT.

A thin interface over `sandbox`: it parses options and hands over. The sandbox is a
partner system, not part of ours, so it uses neither the project's database nor its apps.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.cli import ConfigError, add_arguments, config_from_options
from sandbox.server import StartError, run


class Command(BaseCommand):
    help = "Run a sandbox partner server that misbehaves on purpose (see docs/partner-protocols.md)."
    requires_system_checks: list[str] = []  # it touches nothing of the project

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = config_from_options(options)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        logging.getLogger("sandbox").setLevel(logging.INFO)
        try:
            status = run(config)
        except StartError as exc:
            raise CommandError(f"sandbox partner {exc}") from exc
        if status:
            raise CommandError(f"sandbox partner exited with status {status}", returncode=status)
