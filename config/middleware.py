"""The HTTP edge of the API: its clients get the one JSON error shape, never an HTML page,
bodies above the size limit are refused before anything reads them, and a database that cannot
be reached is a 503 to retry, not a server error."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.template.loader import render_to_string
from django.utils.http import escape_leading_slashes

from config.errors import error_response, status_error_response
from config.logging import AtMostEvery, one_line

logger = logging.getLogger(__name__)

# Paths of machine clients: the customer API and the partners' and payment provider's webhook receivers.
JSON_CLIENT_PATHS = ("/api/", "/partners/", "/payments/")
# Headers that still mean something on the error that replaces a response.
_KEPT_HEADERS = ("Allow", "Retry-After")
_READS = ("GET", "HEAD", "OPTIONS")
# While the database is away every request fails the same way: one traceback per process a
# minute shows where, the other lines only what.
_tracebacks = AtMostEvery(60.0)


class JsonErrorsMiddleware:
    """Under the API's paths, an error Django answers itself (an unknown path, a server error,
    a refused host, and DEBUG's technical pages) is replaced by the one JSON error shape.

    First in MIDDLEWARE, so that it sees what every other middleware answers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path_info.startswith(JSON_CLIENT_PATHS)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            headers = {name: response[name] for name in _KEPT_HEADERS if response.has_header(name)}
            return status_error_response(response.status_code, headers=headers)
        return response


class CommonMiddleware(DjangoCommonMiddleware):
    """Django's, except for a write to a path missing its trailing slash. APPEND_SLASH answers it
    with an empty 301 (a 500 `RuntimeError` under DEBUG), after which a client asks again with a
    GET and the write is lost. A machine client (webhook senders above all) does not follow a
    redirect for a POST at all: it gets a 404 in the one error shape naming the path that exists
    instead. A page's form (the customer pages, the console) gets a 308, which a browser follows
    with the same method and body. Reads are redirected as usual (a person opening `/api/docs`)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code == 404
            and request.method not in _READS
            and self.should_redirect_with_slash(request)
        ):
            if request.path_info.startswith(JSON_CLIENT_PATHS):
                slashed = f"{request.path}/"
                return error_response(
                    404,
                    "not_found",
                    f"Nothing at {request.path}; this endpoint is {slashed}, with the slash.",
                )
            slashed = escape_leading_slashes(request.get_full_path(force_append_slash=True))
            return HttpResponsePermanentRedirect(slashed, preserve_request=True)
        return super().process_response(request, response)


class RequestBodyLimitMiddleware:
    """A customer API body declared larger than `DATA_UPLOAD_MAX_MEMORY_SIZE` is a 413.

    Django applies that limit when it reads a body itself (forms, `request.body`, hence the
    webhook receiver, which records oversized deliveries), but DRF's parsers read the request
    stream directly and would take any size, so the declared length is the one to check. A
    chunked body has one by then: `config.request_bodies` read it, cut one byte past the limit.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and request.path_info.startswith("/api/") and _declared_length(request) > limit:
            return error_response(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
        return self.get_response(request)


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class DatabaseUnavailableMiddleware:
    """A database that cannot be reached (down, restarting, refusing connections, or a transient
    failure such as a lock timeout) answers 503 with `Retry-After`: the API's paths in the one
    error shape, pages with a plain page that needs no database. What the request had begun to
    write was in a transaction the database rolls back; the next request connects again
    (`CONN_HEALTH_CHECKS`), so the service recovers without a restart.

    An outage answers every request this way, so each 503 logs one warning line with the error's
    first line, and its traceback at most once a minute per process; the 503 is not logged again
    by `django.request`, which logs every 5xx as an ERROR.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning(
            "database unavailable: answered 503",
            exc_info=exception if _tracebacks.due() else None,
            extra={"path": request.path, "error": one_line(exception)},
        )
        headers = {"Retry-After": str(settings.UNAVAILABLE_RETRY_AFTER_S)}
        if request.path_info.startswith(JSON_CLIENT_PATHS):
            message = "The service is briefly unavailable; retry after Retry-After seconds."
            response = error_response(503, "service_unavailable", message, headers=headers)
        else:
            response = HttpResponse(render_to_string("503.html"), status=503, headers=headers)
        response._has_been_logged = True  # Django's mark: django.request logs no ERROR for it
        return response
