"""The settings' reader of the environment: values checked as they are read, every fault refused
at once.

A malformed rate limit was read only by the first request it limits: that request, and every one
after it, a 500, while the process started and `check --deploy` passed.

`Environment` is django-environ's `Env` with rates checked as they are read: a value at fault is
noted with what to set (the default is used meanwhile, so that every fault is found) and each
settings module ends with `env.check(__name__)`, which refuses to start with ImproperlyConfigured
naming every one. Production adds its own refusals to the same list (config/settings/production.py:
the development defaults it does not run on).
"""

from __future__ import annotations

import environ
from django.core.exceptions import ImproperlyConfigured

from config.rates import EXAMPLE as RATE_EXAMPLE
from config.rates import Rate


class Environment(environ.Env):
    def __init__(self) -> None:
        super().__init__()
        self.faults: list[str] = []

    def refuse(self, fault: str) -> None:
        """One line of the refusal: `NAME must ...`, with what to set; once per name (a module
        may read a variable again with a default of its own)."""
        if fault.split(" ", 1)[0] not in {known.split(" ", 1)[0] for known in self.faults}:
            self.faults.append(fault)

    def check(self, module: str) -> None:
        """Refuse to start while any value is at fault, naming every one."""
        if self.faults:
            raise ImproperlyConfigured(
                f"{module} does not start on these values; set, in the environment or the .env "
                "file:\n" + "\n".join(f"- {line}" for line in self.faults)
            )

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

    def _text(self, var: str) -> str | None:
        """The variable's text (empty is a value at fault, not the default), None when unset."""
        return self.str(var) if var in self.ENVIRON else None


def _unset(default: object) -> str:
    return f" (or unset it for the default, {default})"
