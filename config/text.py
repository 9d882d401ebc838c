"""Text our database and our UTF-8 answers can hold, whoever sent it.

Python's JSON reader lets through two things PostgreSQL's text cannot hold: a NUL (`\\u0000`), and
a lone surrogate (a `\\ud800` escape without its pair), which is no Unicode character at all:
psycopg cannot encode it (a query or an insert fails with a 500 where a 400 is owed), nor can an
answer written as UTF-8 carry it. Read through here wherever outside text arrives: a partner's
values (`partners.connectors.bounds`), the payment provider's (`payments.connector`).
"""

from __future__ import annotations


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
