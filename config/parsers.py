"""The API's one body parser: DRF's JSON parser, with its refusals in plain words (where the body
stops being JSON, never the decoder's internals) and a too deeply nested body a 400 as well."""

from __future__ import annotations

import json

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # Python's decoder gives up past its recursion limit (`[[[[...`); DRF only turns
            # ValueError into a ParseError, so this one would be a 500.
            raise ParseError("The body is not valid JSON: it is nested too deeply.") from None
        except ParseError as refused:
            raise ParseError(_why(refused.__context__)) from None


def _why(error: BaseException | None) -> str:
    """What DRF's parse error was, for the client: a JSON syntax error's place, not a stack of
    codec and interpreter messages ("use sys.set_int_max_str_digits()")."""
    if isinstance(error, json.JSONDecodeError):
        return f"The body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
    if isinstance(error, UnicodeDecodeError):
        return "The body is not valid JSON: it is not UTF-8 text."
    return "The body is not valid JSON: a value cannot be read (a number too long, say)."
