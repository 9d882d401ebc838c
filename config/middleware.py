"""The HTTP edge of the API: its clients get the one JSON error shape, never an HTML page,
bodies above the size limit are refused before anything reads them, a database that cannot
be reached is a 503 to retry, not a server error, a machine client's write over plain HTTP is
refused rather than redirected, and the probes (`/livez`, `/readyz`, `/healthz`, `/metrics`)
answer whatever name they are asked by."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, QueryDict
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.template.loader import render_to_string
from django.urls import resolve
from django.utils.http import escape_leading_slashes
from django.views.defaults import bad_request

from config import database_errors
from config.errors import error_response, status_error_response
from config.logging import AtMostEvery, one_line
from config.raw_errors import UNAVAILABLE_MESSAGE

logger = logging.getLogger(__name__)

# Paths of machine clients: the customer API and the partners' and payment provider's webhook receivers.
JSON_CLIENT_PATHS = ("/api/", "/partners/", "/payments/")
# Headers that still mean something on the error that replaces a response.
_KEPT_HEADERS = ("Allow", "Retry-After")
_READS = ("GET", "HEAD", "OPTIONS")
# While the database is away every request fails the same way: one traceback per process a
# minute shows where, the other lines only what.
_tracebacks = AtMostEvery(60.0)
# Asked by machines under a name of their own (an instance's address, a machine's internal name),
# never the site's, and building no URL from it: served whatever the Host header says.
PROBE_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
METRICS_PATH = "/metrics"


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


class NulRefusedMiddleware:
    """A NUL in a page's query string or posted form, name or value, is a 400: the site's own
    400 page, before any view reads it.

    PostgreSQL's text cannot hold a NUL: compared with a column (any of the console's list
    filters, the needs-attention queue's `?partner=`, a token a bulk action reads itself) it was a
    DataError, the 500 page and an error logged, for any link. No person types one, and Django's
    form fields refuse it anyway (their message beside the field gives way to this page); every
    filter and every value a view reads itself is covered here once rather than each apart. The
    API's and the webhook receivers' paths keep their own parsers: DRF's fields refuse a NUL in a
    query with the field named, and their bodies are JSON, read with the bytes kept as evidence.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(JSON_CLIENT_PATHS) and (
            _holds_nul(request.GET) or (request.method == "POST" and _holds_nul(request.POST))
        ):
            return bad_request(request, SuspiciousOperation("A NUL character in the request's values."))
        return self.get_response(request)


def _holds_nul(values: QueryDict) -> bool:
    return any("\x00" in name or any("\x00" in value for value in given) for name, given in values.lists())


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
    first line and its cause, and its traceback at most once a minute per process; the 503 is not
    logged again by `django.request`, which logs every 5xx as an ERROR. Each is counted by cause
    (`bookings_database_unavailable_total`), and a write the database refused (its disk full,
    read-only) makes `/healthz` say so for a while (config.database_errors), though reads pass.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_errors.is_unavailable(exception):
            return None
        return database_unavailable(request, exception)


def database_unavailable(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 503 with `Retry-After` of a database out of reach (`DatabaseUnavailableMiddleware`, and
    the error pages that read who is logged in, `config.error_pages`), logged and counted once."""
    cause = database_errors.answered_unavailable(exception, write=request.method not in _READS)
    logger.warning(
        "database unavailable: answered 503",
        exc_info=exception if _tracebacks.due() else None,
        extra={"path": request.path, "error": one_line(exception), "cause": cause},
    )
    headers = {"Retry-After": str(settings.UNAVAILABLE_RETRY_AFTER_S)}
    if request.path_info.startswith(JSON_CLIENT_PATHS):
        response = error_response(503, "service_unavailable", UNAVAILABLE_MESSAGE, headers=headers)
    else:
        response = HttpResponse(render_to_string("503.html"), status=503, headers=headers)
    response._has_been_logged = True  # Django's mark: django.request logs no ERROR for it
    return response


class HttpsRequiredMiddleware:
    """Under `SECURE_SSL_REDIRECT`, a machine client's write over plain HTTP (`/api/`,
    `/partners/`, `/payments/`) is a `403 https_required` in the one error shape naming the
    HTTPS URL, and so is `/metrics` over plain HTTP, whatever its method.

    Not SecurityMiddleware's `301`: a client asks again after it with a GET, so the write is
    lost (webhook senders do not follow it at all). Not a `308` either, though it keeps the
    method: the token or signature has already crossed the network in clear, and a client that
    follows redirects would go on sending it so on every request, unnoticed; refused, the
    misconfigured URL shows at its first request. Reads (a person opening `/api/docs/` over
    HTTP) keep the redirect. Paths in `SECURE_REDIRECT_EXEMPT` are left alone as Django does.

    Before SecurityMiddleware, whose redirect would answer first; `/metrics` is refused without
    reading the Host header, which its scrapers set to a machine's own name (ProbesMiddleware).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.exempt = [re.compile(pattern) for pattern in settings.SECURE_REDIRECT_EXEMPT]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.SECURE_SSL_REDIRECT and not request.is_secure() and not self._exempt(request):
            if request.path_info == METRICS_PATH:
                return error_response(403, "https_required", "The metrics are served over HTTPS only.")
            if request.path_info.startswith(JSON_CLIENT_PATHS) and request.method not in _READS:
                # The Host is checked here as everywhere (a name not allowed: 400, from get_host).
                url = f"https://{settings.SECURE_SSL_HOST or request.get_host()}{request.get_full_path()}"
                message = f"A write is taken over HTTPS only; nothing was done. Send it to {url}"
                return error_response(403, "https_required", message)
        return self.get_response(request)

    def _exempt(self, request: HttpRequest) -> bool:
        path = request.path.lstrip("/")
        return any(pattern.search(path) for pattern in self.exempt)


class ProbesMiddleware:
    """The probes (`/livez`, `/readyz`, `/healthz`) and `/metrics` answer whatever the Host header says.

    A load balancer or Kubernetes probes an instance by its address, Prometheus scrapes each
    machine by its own name: neither is the site's name, and listing every instance's address in
    ALLOWED_HOSTS would let redirects and the API's links be built on them. These views build
    no URL from the Host, so they are served here, before anything asks `request.get_host()` (CSRF,
    CommonMiddleware); every other path keeps Django's host validation (a name not allowed is a
    `400`, in the one error shape on the API's paths). `/metrics` keeps its own authentication
    (METRICS_TOKEN, METRICS_OPEN), and over plain HTTP HttpsRequiredMiddleware has refused it.

    After SecurityMiddleware, which asks no Host of a request it does not redirect (these paths
    are answered with its headers); the views come from the URLconf, which wires them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in PROBE_PATHS:
            match = resolve(request.path_info)
            return match.func(request, *match.args, **match.kwargs)
        return self.get_response(request)
