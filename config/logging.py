"""One log line per event, `key=value`, carrying the booking context wherever there is one.

`log_context(booking="BK-...", partner_key="bk-...")` binds fields for the current thread of
work (a request, an actor run); every line logged inside carries them, so our logs and the
partner's line up on the key we sent them.

`LOG_FORMAT=json` writes the same fields as one JSON object per line instead (`JsonFormatter`,
python-json-logger's): `time`, `level`, `logger`, `message`, the context, then the record's own
fields; gunicorn's access lines (gunicorn.conf.py) carry the request's fields too.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "ctx"}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def one_line(exception: BaseException) -> str:
    """`OperationalError: connection failed: ...`: the type and the message's first line (psycopg's
    messages go on with hints and details on further lines)."""
    lines = str(exception).strip().splitlines()
    return f"{type(exception).__name__}: {lines[0]}" if lines else type(exception).__name__


class AtMostEvery:
    """`due()` is true at most once per `interval_s` in this process, whichever thread asks: for
    what a condition that repeats on every request (an outage) should log once in a while only,
    such as its traceback."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = -math.inf
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                return False
            self._last = now
            return True


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = _context.get() or {}
        return True


class ClientErrorAsWarning(logging.Filter):
    """A request naming a host this site does not serve (a scanner, a probe by address) is the
    client's error, answered 400: Django logs it at ERROR with a traceback, which an alert on error
    lines would page someone for, all day. One warning line says it, the host named."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None
        return True


def _format_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "ctx", {}) or {})
        fields.update(
            {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
        )
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_format_value(value)}" for key, value in fields.items())


# gunicorn's access log record carries the request's atoms as its args: these become fields.
_ACCESS_FIELDS = {
    "h": "remote",
    "m": "method",
    "U": "path",
    "q": "query",
    "s": "status",
    "B": "bytes",
    "M": "duration_ms",
    "a": "user_agent",
}


class JsonFormatter(_JsonFormatter):
    """One JSON object per line, for log shippers: the key=value line's fields, typed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", sorted(_STANDARD_ATTRS))
        kwargs.setdefault("rename_fields", {"exc_info": "exc", "stack_info": "stack"})
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data.update(getattr(record, "ctx", None) or {})
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            log_data.update(_access_fields(record.args))
        super().add_fields(log_data, record, message_dict)


def _access_fields(atoms: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for atom, name in _ACCESS_FIELDS.items():
        value = atoms.get(atom)
        if value in (None, "-", ""):
            continue
        if name in ("status", "bytes", "duration_ms"):
            with contextlib.suppress(TypeError, ValueError):
                value = int(value)
        fields[name] = value
    return fields
