"""The login lockout (django-axes): the name an attempt is counted under, the lockout's rules,
and its answer, axes's page with `Retry-After`.

Two rules, each over the failures within the cool-off: a username from one address
(`AXES_LOCKOUT_PARAMETERS`, `AXES_FAILURE_LIMIT`, axes's own), and a username from every address
together (`LOGIN_USERNAME_FAILURE_LIMIT`, higher: `LockoutHandler`), so that rotating addresses
does not buy an attacker unlimited guesses at one account. The second is ours, not one more of
axes's parameter combinations: axes compares the highest count of any combination with its one
`AXES_FAILURE_LIMIT`, so a username-only combination there would lock any account after 5
failures from anywhere, which anyone can cause; and its reset on a successful login deletes the
attempts every combination matches, so the account's owner logging in would wipe the count of
the guesses made at it from elsewhere."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

logger = logging.getLogger(__name__)


def attempted_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str | None:
    """The username as typed (axes's own reading: the credentials, else the posted form), cut to
    what an attempt's record holds.

    Django's login forms (the admin's, the customer pages') pass a username of any length on to
    `authenticate`, and a failure is recorded under it: past `AccessAttempt.username`'s 255
    characters the insert failed, a 500 for anyone, unauthenticated. No account has a name that
    long (150 at most), so its first 255 characters name the attempt as well as the whole, and
    the lockout counts it as it counts any other name."""
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
    everywhere = LockoutHandler().username_locked(request, credentials)
    context = {
        # Locked by the rule of every address: the page says so (not "from here").
        "everywhere": everywhere,
        "failure_limit": settings.LOGIN_USERNAME_FAILURE_LIMIT
        if everywhere
        else get_failure_limit(request, credentials),
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
    """When the lockout's rules let this username and address in again: the failures each counts
    are those of the attempts within the cool-off (by each one's latest failure); the lockout ends
    once they fall below the limit of every rule (axes's sets of lockout parameters, and the
    username's from every address). (A failure during the lockout is one more, with the right
    password too: a retry sooner starts the cool-off over.) None without a cool-off: a lockout
    then lasts until support lifts it."""
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    now = getattr(request, "axes_attempt_time", None) or timezone.now()
    ends = [
        _locked_until(attempts, limit, cool_off)
        for attempts, limit in LockoutHandler().rules(request, credentials)
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


class LockoutHandler(AxesDatabaseHandler):
    """axes's database handler (`AXES_HANDLER`) with the rule of every address: a username whose
    failures within the cool-off, from all addresses together, reach `LOGIN_USERNAME_FAILURE_LIMIT`
    is locked out everywhere, the right password refused too, until they fall below it (or
    support lifts it, as any lockout: `axes_reset_username` deletes them)."""

    def username_attempts(self, request: HttpRequest, credentials: dict[str, Any] | None) -> QuerySet | None:
        """The attempts at this username from every address within the cool-off (None: no name)."""
        username = get_client_username(request, credentials)
        if username is None:
            return None
        attempts = AccessAttempt.objects.filter(username=username)
        cool_off = get_cool_off(request)
        if cool_off is not None:
            now = getattr(request, "axes_attempt_time", None) or timezone.now()
            attempts = attempts.filter(attempt_time__gte=now - cool_off)
        return attempts

    def rules(self, request: HttpRequest, credentials: dict[str, Any] | None) -> list[tuple[QuerySet, int]]:
        """Each rule's attempts and limit: axes's own, then the username's from every address."""
        limit = get_failure_limit(request, credentials)
        rules = [(attempts, limit) for attempts in self.get_user_attempts(request, credentials)]
        everywhere = self.username_attempts(request, credentials)
        if everywhere is not None:
            rules.append((everywhere, settings.LOGIN_USERNAME_FAILURE_LIMIT))
        return rules

    def username_locked(self, request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
        attempts = self.username_attempts(request, credentials)
        if attempts is None or not settings.AXES_LOCK_OUT_AT_FAILURE:
            return False
        failures = attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
        return failures >= settings.LOGIN_USERNAME_FAILURE_LIMIT

    def is_locked(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> bool:
        return super().is_locked(request, credentials) or self.username_locked(request, credentials)

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs) -> None:
        """axes records the failure (and locks out at its own limit); the failure that reaches the
        limit of every address locks out at once too, answered with the lockout's page."""
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or getattr(request, "axes_locked_out", False):
            return
        if self.is_whitelisted(request, credentials) or not self.username_locked(request, credentials):
            return
        username = get_client_username(request, credentials)
        logger.warning("Login locked out for a username from every address after repeated failures")
        request.axes_locked_out = True
        request.axes_credentials = credentials
        user_locked_out.send("axes", request=request, username=username, ip_address=request.axes_ip_address)
