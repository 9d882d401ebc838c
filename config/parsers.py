"""The API's one body parser: DRF's JSON parser, with a too deeply nested body a 400 as well."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # Python's decoder gives up past its recursion limit (`[[[[...`); DRF only turns
            # ValueError into a ParseError, so this one would be a 500.
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
