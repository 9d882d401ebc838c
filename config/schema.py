"""`GET /api/schema/`: drf-spectacular's view, with its `?version=` checked first.

drf-spectacular writes `version` as given into the answer's `Content-Disposition` filename (and
the schema's `info.version`): a control character there made gunicorn refuse the header (a 500
with an ERROR traceback), a quote broke it. A version is a few letters, digits, `.`, `_` or `-`
(`1.0.0`); anything else is a 400 in the one error shape, as every other bad query parameter.

`?format=json` or `?format=yaml` chooses its renderer (the README says so): DRF's query override,
which the rest of the API has off (settings' `URL_FORMAT_OVERRIDE`), is on for this view alone.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from drf_spectacular.views import SpectacularAPIView
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

# Nothing a header, a filename or a YAML scalar would treat specially.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
NOT_A_VERSION = (
    "Give a version of at most 32 letters, digits, `.`, `_` or `-`, from a letter or digit (e.g. `1.0.0`)."
)


class _FormatInQuery(DefaultContentNegotiation):
    settings = SimpleNamespace(URL_FORMAT_OVERRIDE="format")


class SchemaView(SpectacularAPIView):
    content_negotiation_class = _FormatInQuery

    # Here, not in `get`: overriding it would drop the `extend_schema` that keeps it out of the schema.
    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        version = request.query_params.get("version")
        if version is not None and not _VERSION.fullmatch(version):
            raise ValidationError({"version": [NOT_A_VERSION]})

    def handle_exception(self, exc: Exception) -> Response:
        # The view's renderers are the schema's (YAML, OpenAPI JSON): an error is the API's JSON.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
