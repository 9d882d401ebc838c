"""Content negotiation for receivers whose callers we do not choose (partner and provider webhooks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class IgnoreAccept(BaseContentNegotiation):
    """Always answer with the view's first renderer (JSON), whatever `Accept` says.

    DRF negotiates before the view runs: an `Accept` that excludes JSON (`text/plain`, say) was a
    `406 not_acceptable` before the delivery was verified or stored, so the sender delivered it
    again for hours, refused each time. A webhook's sender reads only our status code, and an
    authentic delivery is never refused, so its `Accept` is not read at all."""

    def select_parser(self, request: Request, parsers: Sequence[BaseParser]) -> BaseParser | None:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: Sequence[BaseRenderer], format_suffix: Any = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type
