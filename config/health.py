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

logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.warning("healthz database check failed", exc_info=True)
        return False


def _broker_ok() -> bool:
    try:
        return bool(dramatiq.get_broker().client.ping())
    except Exception:
        logger.warning("healthz broker check failed", exc_info=True)
        return False


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    if all(checks.values()):
        return JsonResponse({"status": "ok", "checks": checks})
    return JsonResponse(
        {"status": "unavailable", "checks": checks},
        status=503,
        headers={"Retry-After": str(settings.UNAVAILABLE_RETRY_AFTER_S)},
    )
