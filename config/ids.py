"""Row ids as an operator types them (a command's argument, a support form's field).

Our tables' ids are 64-bit (`BigAutoField`). A number past that reaches the database as an
overflow (`OverflowError` from SQLite's driver, `DataError` from PostgreSQL's), a traceback where
"no such row" is owed; and `int()` also reads other scripts' digits and surrounding blanks.
"""

from __future__ import annotations

import re

# The largest id a BigAutoField holds (PostgreSQL's bigint, SQLite's integer).
MAX_ID = 2**63 - 1
_WRITTEN_AS_AN_ID = re.compile(r"#?([0-9]{1,19})")


def row_id(value: object) -> int | None:
    """The id `value` writes (ASCII digits, an optional leading `#`, blanks around ignored), or
    None when it writes none a row of ours could have: nothing is looked up for it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (written := _WRITTEN_AS_AN_ID.fullmatch(value.strip())):
        number = int(written.group(1))
    else:
        return None
    return number if 1 <= number <= MAX_ID else None
