"""Text our database and our UTF-8 answers can hold, whoever sent it.

Python's JSON reader lets through two things PostgreSQL's text cannot hold: a NUL (`\\u0000`), and
a lone surrogate (a `\\ud800` escape without its pair), which is no Unicode character at all:
psycopg cannot encode it (a query or an insert fails with a 500 where a 400 is owed), nor can an
answer written as UTF-8 carry it. Read through here wherever outside text arrives: a partner's
values (`partners.connectors.bounds`), the payment provider's (`payments.connector`), the customer
API's bodies (`config.parsers`: the only way in for a customer, whose query strings, paths and
form fields are decoded with replacement characters).
"""

from __future__ import annotations

import json
from typing import Any


def valid_unicode(value: str) -> bool:
    """No lone surrogate: `value` can be written as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: str) -> bool:
    """PostgreSQL's text can hold `value` (and compare it): no NUL, no lone surrogate."""
    return "\x00" not in value and valid_unicode(value)


def json_valid_unicode(data: Any) -> bool:
    """Every string of a parsed JSON value, names included, is valid Unicode (walked without
    recursion: whatever depth the reader took)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not valid_unicode(value):
                return False
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return True


def strict_json(raw: bytes | str) -> Any:
    """A stored body read as any strict JSON reader would, for showing it again: `ValueError` for a
    bare NaN or Infinity (Python's reader takes them, as floats no JSON answer can carry) or a lone
    surrogate (a string no UTF-8 answer can carry), as for a body that is not JSON at all."""
    data = json.loads(raw, parse_constant=_not_json)
    if not json_valid_unicode(data):
        raise ValueError("a string holds a lone surrogate")
    return data


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
