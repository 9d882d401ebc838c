"""The login lockout (django-axes): the name an attempt is counted under, and the lockout's
answer, axes's page with `Retry-After`."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def attempted_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str | None:
    """The username as typed (axes's own reading: the credentials, else the posted form), cut to
    what an attempt's record holds.

    Django's login forms (the admin's, the customer pages') pass a username of any length on to
    `authenticate`, and a failure is recorded under it: past `AccessAttempt.username`'s 255
    characters the insert failed, a 500 for anyone, unauthenticated. No account has a name that
    long (150 at most), so its first 255 characters name the attempt as well as the whole, and
    the lockout counts it as it counts any other name."""
    from axes.models import AccessAttempt  # not at import: settings name this module

    field = settings.AXES_USERNAME_FORM_FIELD
    username = (credentials or getattr(request, "data", request.POST)).get(field)
    if not isinstance(username, str):
        return username
    return username[: AccessAttempt._meta.get_field("username").max_length]


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """axes's answer to a lockout (`AXES_LOCKOUT_TEMPLATE` with its context, the status 429), with
    `Retry-After`: the seconds until the lockout ends, as the API's 429 says them."""
    context = {
        "failure_limit": get_failure_limit(request, credentials),
        "cooloff_timedelta": get_cool_off(request),
    }
    response = render(
        request, settings.AXES_LOCKOUT_TEMPLATE, context, status=settings.AXES_HTTP_RESPONSE_CODE
    )
    wait_s = seconds_until_unlocked(request, credentials)
    if wait_s is not None:
        response["Retry-After"] = str(wait_s)
    return response


def seconds_until_unlocked(request: HttpRequest, credentials: dict[str, Any] | None) -> int | None:
    """When axes's own rule lets this username and address in again: the failures it counts are
    those of the attempts within the cool-off (by each one's latest failure); the lockout ends
    once they fall below the limit for every set of lockout parameters. (A failure during the
    lockout is one more, with the right password too: a retry sooner starts the cool-off over.)
    None without a cool-off: a lockout then lasts until support lifts it."""
    from axes.handlers.database import AxesDatabaseHandler  # not at import: settings name this module

    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    now = getattr(request, "axes_attempt_time", None) or timezone.now()
    limit = get_failure_limit(request, credentials)
    ends = [
        _locked_until(attempts, limit, cool_off)
        for attempts in AxesDatabaseHandler().get_user_attempts(request, credentials)
    ]
    known = [end for end in ends if end is not None]
    until = max(known) if known else now + cool_off  # locked by a rule of axes's not counted here
    # axes still counts an attempt at the very instant its cool-off ends: the first whole second after.
    return math.floor((until - now).total_seconds()) + 1


def _locked_until(attempts: QuerySet, limit: int, cool_off: timedelta) -> datetime | None:
    """When these attempts' failures within the cool-off fall below `limit` (None: they are)."""
    counted = 0
    for attempt_time, failures in attempts.order_by("-attempt_time").values_list(
        "attempt_time", "failures_since_start"
    ):
        counted += failures
        if counted >= limit:  # from the newest: locked until this one leaves the cool-off
            return attempt_time + cool_off
    return None
