"""The Server-Sent Events wire format (the HTML standard's `text/event-stream`)."""

from __future__ import annotations

import json
from typing import Any

CONTENT_TYPE = "text/event-stream; charset=utf-8"


def event(name: str, data: dict[str, Any], *, id: int | None = None) -> bytes:
    """One event. Without `id` the client keeps the last id it had (its resume point)."""
    lines = [f"event: {name}"]
    if id is not None:
        lines.append(f"id: {id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str) -> bytes:
    """A line clients ignore: keeps the connection (and every proxy on the way) from idling out."""
    return f": {text}\n\n".encode()


def retry(milliseconds: int) -> bytes:
    """How long the client waits before it reconnects when the stream ends or breaks."""
    return f"retry: {milliseconds}\n\n".encode()
