"""`GET /healthz`: 200 when the database and the broker answer; otherwise 503 with
`Retry-After` and each dependency's answer, e.g. `{"status": "unavailable", "checks":
{"database": true, "broker": false}}`. Both are asked afresh on every call, so it turns 200 again
by itself once they are back."""

from __future__ import annotations

import logging

import dramatiq
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

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
        return True
    except Exception as exc:  # noqa: BLE001 - whatever fails is "not healthy", logged in _failed
        return _failed("database", exc)


def _broker_ok() -> bool:
    try:
        return bool(dramatiq.get_broker().client.ping())
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
