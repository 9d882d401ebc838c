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
