"""The name a login attempt is counted under by the login lockout (django-axes)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


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
