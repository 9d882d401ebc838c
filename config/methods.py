"""The methods a view takes, and the 405 for any other.

Django's `require_GET` and `require_http_methods(["GET", "POST"])` refuse HEAD, which a load
balancer's check, a link checker and `curl -I` send; a HEAD is a GET whose body the server leaves
out (gunicorn, runserver), so `allow` takes it wherever it takes GET. Their refusal was an empty
text/html 405; here it names what the view takes in `Allow`, in the one error shape on the
machines' paths (the API's, the probes, `/metrics`) and as the site's 405 page elsewhere
(`config.error_pages.method_not_allowed`).

A page's method is checked before CSRF (`MethodsMiddleware.process_view`): a PUT or DELETE has no
CSRF token, and was answered "This page has expired" (403) though no token would have made the
page take it; refused there, it is not counted against the pages' rate limits either. The probes
are answered before any middleware but the first few (config.middleware.ProbesMiddleware), so
`allow` refuses in the view too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from config import error_pages
from config.errors import error_body
from config.middleware import JSON_CLIENT_PATHS, PROBE_PATHS

READS = ("GET", "HEAD")

View = Callable[..., HttpResponse]


def allow(*methods: str) -> Callable[[View], View]:
    """The view takes these methods (and HEAD with GET); any other is a 405 with `Allow`. An
    OPTIONS it takes is answered by the view, with `Allow` added."""
    allowed = _with_head(methods)

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in allowed:
                return method_not_allowed(request, allowed)
            response = view(request, *args, **kwargs)
            if request.method == "OPTIONS":
                response["Allow"] = ", ".join(allowed)
            return response

        # Read by MethodsMiddleware; functools.wraps carries it through the decorators above.
        wrapped.allowed_methods = allowed  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _with_head(methods: Sequence[str]) -> tuple[str, ...]:
    upper = [method.upper() for method in methods]
    if "GET" in upper and "HEAD" not in upper:
        upper.insert(upper.index("GET") + 1, "HEAD")
    return tuple(upper)


def method_not_allowed(request: HttpRequest, allowed: Sequence[str]) -> HttpResponse:
    """405 with `Allow`: the one error shape for a machine (as DRF says it), else the site's page."""
    if _machines_path(request):
        body = error_body("method_not_allowed", f'Method "{request.method}" not allowed.')
        return JsonResponse(body, status=405, headers={"Allow": ", ".join(allowed)})
    return error_pages.method_not_allowed(request, allowed)


def _machines_path(request: HttpRequest) -> bool:
    return request.path_info.startswith(JSON_CLIENT_PATHS) or request.path_info in PROBE_PATHS


def _own_answer(request: HttpRequest) -> bool:
    """Paths that keep their own 405: the machines' (JSON) and the support console's (Django's
    admin, whose people are not the customers the site's 405 page speaks to)."""
    return _machines_path(request) or request.path_info.startswith("/admin/")


def allowed_methods(view_func: View) -> tuple[str, ...] | None:
    """What a view takes, where it says: `allow`'s mark, or a class-based view's handlers (as
    `View.options` lists them, HEAD with GET as `View.setup` adds it); None when it does not."""
    marked = getattr(view_func, "allowed_methods", None)
    if marked is not None:
        return marked
    view_class = getattr(view_func, "view_class", None)
    if view_class is None:
        return None
    return tuple(
        name.upper()
        for name in view_class.http_method_names
        if hasattr(view_class, name) or (name == "head" and hasattr(view_class, "get"))
    )


class MethodsMiddleware:
    """A method a page does not take is the site's 405 page with `Allow`: refused before CSRF when
    the view says what it takes, and Django's empty 405 of any other page's view replaced. The
    machines' paths keep their own answers (DRF's, the webhook receivers', `allow`'s), and the
    support console Django's own.

    Before CsrfViewMiddleware, whose `process_view` would refuse a PUT or DELETE first."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if isinstance(response, HttpResponseNotAllowed) and not _own_answer(request):
            allowed = [method.strip() for method in response["Allow"].split(",") if method.strip()]
            return method_not_allowed(request, allowed)
        return response

    def process_view(self, request: HttpRequest, view_func: View, args, kwargs) -> HttpResponse | None:
        allowed = allowed_methods(view_func)
        if allowed is None or request.method in allowed or _own_answer(request):
            return None
        return method_not_allowed(request, allowed)


class HeadLeavesMessagesMiddleware:
    """A HEAD changes nothing: the messages its page would show (a flash "Your account is ready")
    stay for the GET that shows them.

    After MessageMiddleware, whose answer would otherwise drop them as read."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        storage = getattr(request, "_messages", None)
        if request.method == "HEAD" and storage is not None:
            storage.used = False  # only messages added by this request are stored (none on a read)
        return response
