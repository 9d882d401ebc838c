"""The dates a customer types (a stay's start and end), through the API or the pages.

A value written as a date (YYYY-MM-DD) that is no day of the calendar, such as 2027-02-30, is
told as such, not as a date in the wrong format: the customer wrote the format right and needs
to know which part does not exist. The words are one place for both presentations (the API's
`CalendarDateField`, the pages' `StayForm`).
"""

from __future__ import annotations

import calendar
import re

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

# Shaped as a date the way the parsers read one (Django's `parse_date`, `strptime("%Y-%m-%d")`):
# a month or a day may have one digit.
_WRITTEN_AS_A_DATE = re.compile(r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})")


def not_in_calendar(value: object) -> str | None:
    """Why `value`, written as a date, is no day of the calendar; None when it is one, or when it
    is not written as a date at all (that is a format error, said in the parser's words)."""
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
