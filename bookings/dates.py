"""The dates a customer types (a stay's start and end), through the API or the pages: one rule
for both presentations (`parse_date`; the API's `CalendarDateField`, the pages' `StayForm`).

A date is written `YYYY-MM-DD`, exactly: ten ASCII characters, nothing before or after (the pages
trim what was typed, as every form field is trimmed). Python's `date.fromisoformat`, under
Django's and DRF's `parse_date`, reads more than that (`20270301`, `2027-W09-1`, and a trailing
newline through Django's fallback pattern), which the API then took where the pages did not.

A value written as a date that is no day of the calendar, such as 2027-02-30, is told as such,
not as a date in the wrong format: the customer wrote the format right and needs to know which
part does not exist. The words are here, once.
"""

from __future__ import annotations

import calendar
import re
from datetime import date

# In English whatever the process's locale, as every customer word here is.
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# DRF's words for a date it cannot parse, which the API has always given: the pages say the same.
WRONG_FORMAT = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."

# ASCII digits only: `\d` also matches other scripts' digits, which int() would read.
_WRITTEN_AS_A_DATE = re.compile(r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})")


class NotADate(ValueError):
    """Why a written value is not a date: `code` `invalid` (not written YYYY-MM-DD) or
    `not_in_calendar`, and the message for the customer."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def parse_date(value: object) -> date:
    """The date `value` writes as `YYYY-MM-DD`; `NotADate` otherwise."""
    if not isinstance(value, str) or not (written := _WRITTEN_AS_A_DATE.fullmatch(value)):
        raise NotADate(WRONG_FORMAT, code="invalid")
    year, month, day = (int(part) for part in written.groups())
    try:
        return date(year, month, day)
    except ValueError:
        raise NotADate(not_in_calendar(value) or WRONG_FORMAT, code="not_in_calendar") from None


def not_in_calendar(value: object) -> str | None:
    """Why `value`, written as a date, is no day of the calendar; None when it is one, or when it
    is not written as a date at all (that is a format error)."""
    if not isinstance(value, str) or not (written := _WRITTEN_AS_A_DATE.fullmatch(value)):
        return None
    year, month, day = (int(part) for part in written.groups())
    if year == 0:
        why = "there is no year 0"
    elif not 1 <= month <= 12:
        why = f"there is no month {month}"
    elif day == 0:
        why = "there is no day 0"
    elif day > (days := calendar.monthrange(year, month)[1]):
        why = f"{MONTHS[month - 1]} {year} has {days} days"
    else:
        return None
    return f"{value} is not a date in the calendar: {why}."
