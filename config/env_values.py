"""The settings' reader of the environment: typed, strict, and refusing every fault at once.

django-environ's own readers fail one variable at a time without naming it (`int('ten')`'s
ValueError, a KeyError 'ENGINE' for a DATABASE_URL it cannot read), or not at all: its float
strips letters (`1e1` read as 11.0) and takes `nan`, and any number passes, 0 or negative, where
it makes no sense (a heartbeat of 0 spins, a socket timeout of 0 makes the socket non-blocking, a
negative proxy count indexes out of range). A malformed rate limit was read only by the first
request it limits: that request, and every one after it, a 500.

`Environment` is django-environ's `Env` with strict numbers (finite, 0 or more unless the call
says otherwise), decimals, rates and a database URL checked as they are read: a value at fault is
noted with what to set (the default is used meanwhile, so that every fault is found) and each
settings module ends with `env.check(__name__)`, which refuses to start with ImproperlyConfigured
naming every one. Production adds its own refusals to the same list (config/settings/production.py:
the development defaults it does not run on).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TypeVar
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from config.rates import EXAMPLE as RATE_EXAMPLE
from config.rates import Rate

T = TypeVar("T")

_INT = re.compile(r"\s*[+-]?\d+\s*")
# The engines the project runs on: PostgreSQL, which every machine shares, or a SQLite file.
DATABASE_ENGINES = {
    "django.db.backends.postgresql": "postgres://USER:PASSWORD@HOST:5432/NAME",
    "django.db.backends.sqlite3": "sqlite:////PATH/TO/FILE.sqlite3",
}


class Environment(environ.Env):
    def __init__(self) -> None:
        super().__init__()
        self.faults: list[str] = []

    def refuse(self, fault: str) -> None:
        """One line of the refusal: `NAME must ...`, with what to set; once per name (a module
        may read a variable again with a default of its own)."""
        if fault.split(" ", 1)[0] not in {known.split(" ", 1)[0] for known in self.faults}:
            self.faults.append(fault)

    def parsed(self, var: str, default: str, parse: Callable[[str, str], T], *, fallback: T) -> T:
        """`var` read as text and given to `parse(var, text)`, a reader of its own that raises
        ImproperlyConfigured naming `var`: that fault joins the one refusal (`fallback`, never
        used, lets the rest be read and checked too)."""
        try:
            return parse(var, self.str(var, default=default))
        except ImproperlyConfigured as fault:
            self.refuse(str(fault))
            return fallback

    def check(self, module: str) -> None:
        """Refuse to start while any value is at fault, naming every one."""
        if self.faults:
            raise ImproperlyConfigured(
                f"{module} does not start on these values; set, in the environment or the .env "
                "file:\n" + "\n".join(f"- {line}" for line in self.faults)
            )

    def int(  # type: ignore[override]
        self, var: str, default: int, *, minimum: int | None = 0, maximum: int | None = None
    ) -> int:
        text = self._text(var)
        if text is None:
            return default
        value = int(text) if _INT.fullmatch(text) else None
        if value is None or not _within(value, minimum, maximum):
            bounds = _bounds(minimum, maximum)
            self.refuse(f"{var} must be a whole number{bounds}, not {text!r}{_unset(default)}.")
            return default
        return value

    def float(  # type: ignore[override]
        self, var: str, default: float, *, minimum: float | None = 0.0, above: float | None = None
    ) -> float:
        """A finite number; `above`: one that must be more than it (a timeout, an interval)."""
        text = self._text(var)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and _within(value, minimum, None) and (above is None or value > above)):
            bounds = f" above {above:g}" if above is not None else _bounds(minimum, None)
            self.refuse(f"{var} must be a number{bounds}, not {text!r}{_unset(default)}.")
            return default
        return value

    def decimal(self, var: str, default: str, *, minimum: Decimal | None = Decimal(0)) -> Decimal:
        text = self._text(var)
        if text is None:
            return Decimal(default)
        try:
            value = Decimal(text.strip())
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or not _within(value, minimum, None):
            bounds = _bounds(minimum, None)
            self.refuse(f"{var} must be a decimal number{bounds}, not {text!r}{_unset(default)}.")
            return Decimal(default)
        return value

    def rate(self, var: str, default: str) -> str:
        """A rate limit's text (config/rates.py), checked here so that no request parses a bad one."""
        text = self._text(var)
        if text is None:
            return default
        try:
            Rate.parse(text)
        except ValueError:
            self.refuse(
                f"{var} must be a rate: a count of 1 or more per s, min, hour or day (e.g. "
                f"{RATE_EXAMPLE}), not {text!r}{_unset(default)}."
            )
            return default
        return text

    def database(self, var: str, url: str) -> dict:
        """The database settings of `url` (read from `var`), on an engine the project runs on."""
        try:
            config = self.db_url_config(url) if urlsplit(url).scheme else {}
        except ValueError:  # an unclosed [ of an IPv6 address, a port that is no number
            config = {}
        if config.get("ENGINE") not in DATABASE_ENGINES:
            self.refuse(
                f"{var} must be a PostgreSQL or a SQLite database's URL "
                f"({' or '.join(DATABASE_ENGINES.values())}), not {url!r}."
            )
            return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}  # until check()
        return config

    def _text(self, var: str) -> str | None:
        """The variable's text (empty is a value at fault, not the default), None when unset."""
        return self.str(var) if var in self.ENVIRON else None


def _within(value: float | Decimal, minimum: float | Decimal | None, maximum: float | None) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def _bounds(minimum: float | Decimal | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f" of {minimum:g} or more"
    return f" of {maximum:g} or less" if maximum is not None else ""


def _unset(default: object) -> str:
    return f" (or unset it for the default, {default})"
