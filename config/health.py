"""`GET /healthz`: 200 when the database and the broker answer; otherwise 503 with
`Retry-After` and each dependency's answer, e.g. `{"status": "unavailable", "checks":
{"database": true, "broker": false}}`. Both are asked afresh on every call, so it turns 200 again
by itself once they are back.

The database answering a read is not enough: one that refuses writes (its disk full, read-only)
refuses every booking. `"database": false` also when this process answered a write 503 because
the database refused it within `HEALTHZ_WRITES_REFUSED_S` (config.database_errors), and, on
SQLite, when the file's directory has less than `HEALTHZ_SQLITE_MIN_FREE_MB` free: a write would
fail on it next. Neither costs the probe a write: a timestamp, and one statvfs on SQLite.

The broker likewise: a Redis that answers PING but refuses writes (at `maxmemory` with
`noeviction`, or a read-only replica a failover left the service on) queues no submission, and
counts no rate limit, so `"broker": true` only when it takes one tiny write: a key of the
broker's namespace that every process probing overwrites, gone seconds after the last probe."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import dramatiq
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from config import database_errors
from config.logging import AtMostEvery, one_line

logger = logging.getLogger(__name__)


# A probe asks every few seconds through an outage: one line each, a traceback once a minute.
_tracebacks = {"database": AtMostEvery(60.0), "broker": AtMostEvery(60.0)}


def _failed(check: str, exception: Exception) -> bool:
    logger.warning(
        f"healthz {check} check failed",
        exc_info=exception if _tracebacks[check].due() else None,
        extra={"error": one_line(exception)},
    )
    return False


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - whatever fails is "not healthy", logged in _failed
        return _failed("database", exc)
    refused = _writes_refused()
    if refused:
        logger.warning("healthz database check failed", extra={"error": refused})
        return False
    return True


def _writes_refused() -> str:
    """Why a write would be refused though the database answers reads, or ""."""
    recent = database_errors.last_refusal.within(settings.HEALTHZ_WRITES_REFUSED_S)
    if recent is not None:
        age, error = recent
        return f"a write was refused {age:.0f} s ago: {error}"
    directory = _sqlite_directory()
    if directory is not None:
        try:
            free = shutil.disk_usage(directory).free
        except OSError as exc:  # no directory to look at: nothing can be written there either
            return f"the SQLite database's directory cannot be read: {one_line(exc)}"
        minimum = settings.HEALTHZ_SQLITE_MIN_FREE_MB * 1024 * 1024
        if free < minimum:
            return f"{free // 1024} KiB free beside the SQLite database (HEALTHZ_SQLITE_MIN_FREE_MB)"
    return ""


def _sqlite_directory() -> Path | None:
    """The directory of the SQLite file (where its journal and WAL grow too), or None."""
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).parent


HEALTHZ_KEY_TTL_MS = 5000  # the probe's key outlives the last probe by this much


def broker_probe_key() -> str:
    return f"{settings.DRAMATIQ_BROKER['OPTIONS']['namespace']}:healthz:probe"


def _broker_ok() -> bool:
    try:
        return bool(dramatiq.get_broker().client.set(broker_probe_key(), b"1", px=HEALTHZ_KEY_TTL_MS))
    except Exception as exc:  # noqa: BLE001 - whatever fails is "not healthy", logged in _failed
        return _failed("broker", exc)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    if all(checks.values()):
        return JsonResponse({"status": "ok", "checks": checks})
    response = JsonResponse(
        {"status": "unavailable", "checks": checks},
        status=503,
        headers={"Retry-After": str(settings.UNAVAILABLE_RETRY_AFTER_S)},
    )
    response._has_been_logged = True  # the warning above said why; django.request logs no ERROR for it
    return response
