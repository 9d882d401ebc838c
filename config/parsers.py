"""The API's one body parser: DRF's JSON parser, with its refusals in plain words (where the body
stops being JSON, never the decoder's internals) and a too deeply nested body or a lone
surrogate a 400 as well.

What it reads is JSON as RFC 8259 says it is exchanged, one reading of each body:
- UTF-8, whatever `charset` the Content-Type names (JSON's media type defines none; DRF honoured
  one, so the same bytes were booked under one label and "cannot be read" under another);
- sent as it is: a body declared in a content coding (`Content-Encoding: gzip`, `br`, ...) is a
  415 naming the coding, with `Accept-Encoding: identity` (RFC 9110 15.5.16). A body declared
  gzip but sent plain was read as plain and booked; a gzipped one was told it is not UTF-8. Not
  decoding keeps the body limit (`config.middleware.RequestBodyLimitMiddleware`, on the bytes
  sent) the limit on what is read: no decompression bomb to bound;
- each name once per object: a name given twice is a 400, not its last value (Python's reader
  keeps the last silently, another reader of the same bytes may keep the first).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType

from config.text import json_valid_unicode

# The one content coding the API reads: none.
IDENTITY = "identity"


class ContentCodingRefused(UnsupportedMediaType):
    # The coding the API takes, for the client's next try (config.errors adds it to the answer).
    response_headers = {"Accept-Encoding": IDENTITY}

    def __init__(self, coding: str):
        super().__init__(
            coding,
            detail=(
                f'The body is declared in the content coding "{coding}" (Content-Encoding): this API '
                "reads bodies sent as they are only; send it without a Content-Encoding."
            ),
        )


class _NameTwice(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


LONE_SURROGATE = (
    "The body is not valid JSON: a string in it holds a lone surrogate (a \\uD800-\\uDFFF escape "
    "without its pair), which is no Unicode character."
)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        if request is not None:
            _refuse_content_coding(request.META.get("HTTP_CONTENT_ENCODING", ""))
        try:
            data = json.load(
                codecs.getreader("utf-8")(stream),
                parse_constant=_not_a_number,
                object_pairs_hook=_object_of_unique_names,
            )
        except RecursionError:
            # Python's decoder gives up past its recursion limit (`[[[[...`); DRF only turns
            # ValueError into a ParseError, so this one would be a 500.
            raise ParseError("The body is not valid JSON: it is nested too deeply.") from None
        except _NameTwice as twice:
            message = f'The body names "{twice.name}" twice in one object: give each name once.'
            raise ParseError(message) from None
        except ValueError as refused:
            raise ParseError(_why(refused)) from None
        if not json_valid_unicode(data):
            # A `\ud800` escape without its pair decodes to no Unicode character: echoed in a field
            # error, the answer could not be written as UTF-8 (a 500); stored, neither could a row.
            raise ParseError(LONE_SURROGATE)
        return data


def _refuse_content_coding(declared: str) -> None:
    codings = [coding.strip() for coding in declared.split(",") if coding.strip()]
    if any(coding.lower() != IDENTITY for coding in codings):
        raise ContentCodingRefused(declared.strip())


def _object_of_unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _NameTwice(name)
            seen.add(name)
    return data


class _NotAJsonValue(ValueError):
    pass


def _not_a_number(name: str) -> Any:
    """`NaN`, `Infinity`, `-Infinity`: Python's reader takes them, JSON has no such values (DRF's
    strict reading, in our words)."""
    raise _NotAJsonValue(f"{name} is not a JSON value")


def _why(error: ValueError) -> str:
    """What the reader refused, for the client: a JSON syntax error's place, not a stack of
    codec and interpreter messages ("use sys.set_int_max_str_digits()")."""
    if isinstance(error, json.JSONDecodeError):
        return f"The body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
    if isinstance(error, UnicodeDecodeError):
        return "The body is not valid JSON: it is not UTF-8 text."
    if isinstance(error, _NotAJsonValue):
        return f"The body is not valid JSON: {error}."
    return "The body is not valid JSON: a value cannot be read (a number too long, say)."
