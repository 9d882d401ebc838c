"""One error scheme: application errors, and one JSON shape for every API error.

Every error body is `{"error": {"code": "...", "message": "..."}}`, with `"fields": {...}` (the
messages per request field or header) only when there are some.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django_fsm import ConcurrentTransition, TransitionNotAllowed
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.raw_errors import status_code_name

# The top-level message of a validation error naming fields, whichever check found them (a field's
# format here, a stay's rules in bookings.pricing): the fields say what is wrong.
INVALID_REQUEST = "The request is invalid."


class ApplicationError(Exception):
    """Base of every error the application raises on purpose."""

    code = "error"
    http_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, code: str | None = None, fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = fields or {}


class ValidationFailed(ApplicationError):
    code = "validation_error"


class NotFound(ApplicationError):
    code = "not_found"
    http_status = status.HTTP_404_NOT_FOUND


class Conflict(ApplicationError):
    code = "conflict"
    http_status = status.HTTP_409_CONFLICT


class Unavailable(ApplicationError):
    """A service of ours the request needs (our Redis) does not answer: nothing was done."""

    code = "unavailable"
    http_status = status.HTTP_503_SERVICE_UNAVAILABLE


class InvalidTransition(Conflict):
    code = "invalid_state"


class Unprocessable(ApplicationError):
    code = "unprocessable"
    http_status = status.HTTP_422_UNPROCESSABLE_ENTITY


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def error_response(status_code: int, code: str, message: str, *, headers=None) -> JsonResponse:
    """An error answered outside DRF (middleware), in the same shape."""
    return JsonResponse(error_body(code, message), status=status_code, headers=headers)


def status_error_response(status_code: int, *, headers=None) -> JsonResponse:
    """The one shape for an error known only by its status (`404` -> `not_found`, "Not Found")."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "Error"
    return error_response(status_code, status_code_name(status_code), phrase + ".", headers=headers)


def _flatten(detail: Any) -> Any:
    if isinstance(detail, list):
        return [str(item) for item in detail]
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    return [str(detail)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.http_status)
    if isinstance(exc, TransitionNotAllowed | ConcurrentTransition):
        exc = exceptions.APIException(str(exc))
        exc.status_code = status.HTTP_409_CONFLICT
        exc.default_code = "invalid_state"
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        if isinstance(fields, list):
            fields = {"non_field_errors": fields}
        response.data = error_body("validation_error", INVALID_REQUEST, fields)
    else:
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException):
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) else code
        response.data = error_body(code, str(getattr(exc, "detail", exc)))
    # Headers an error names for the client's next try (a 415's `Accept-Encoding`).
    for name, value in getattr(exc, "response_headers", {}).items():
        response[name] = value
    return response
