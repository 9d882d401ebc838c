"""The site's own error pages that show its header (`templates/404.html`, `403_csrf.html`,
`405.html`): the header says who is logged in, which reads their session and user from the database. Django
renders these pages outside the view, where `DatabaseUnavailableMiddleware` never sees an
error, so a database out of reach while they render made the 500 page; it is the outage's 503
with `Retry-After` instead, as every other page answers it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import csrf, defaults

from config import database_errors
from config.middleware import database_unavailable


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _unless_unavailable(request, lambda: defaults.page_not_found(request, exception))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _unless_unavailable(request, lambda: csrf.csrf_failure(request, reason))


def method_not_allowed(request: HttpRequest, allowed: Sequence[str]) -> HttpResponse:
    """A method the page does not take (config.methods): its 405 with `Allow`, in the site's look."""

    def page() -> HttpResponse:
        body = render_to_string("405.html", request=request)
        return HttpResponse(body, status=405, headers={"Allow": ", ".join(allowed)})

    return _unless_unavailable(request, page)


def _unless_unavailable(request: HttpRequest, page: Callable[[], HttpResponse]) -> HttpResponse:
    try:
        return page()
    except DatabaseError as exc:
        if not database_errors.is_unavailable(exc):
            raise
        return database_unavailable(request, exc)
