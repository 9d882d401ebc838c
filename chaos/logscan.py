"""Errors the processes logged during the run, grouped by their final exception.

Not a verdict (an actor that fails and is retried may be fine), but the place to look first: a
deadlock or a connection error that the run survived is still worth knowing about.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ERROR_LINE = re.compile(r"level=(error|critical)|\[(ERROR|CRITICAL)\]")
EXCEPTION = re.compile(
    r"([A-Za-z_][\w.]*(?:Error|Exception|Detected|Timeout|Unavailable|Exhausted))(?::\s*([^\\\"\n]{0,70}))?"
)
MESSAGE = re.compile(r'msg="([^"]{0,80})')
# Dramatiq's Retries middleware, each time it sends a failed message back for another try.
RETRYING = re.compile(r"Retrying message '([\w-]+)'")
TOP = 15


def scan(directory: Path) -> dict[str, dict[str, int]]:
    """{process: {signature: count}} for every *.log of the run's directory."""
    found: dict[str, dict[str, int]] = {}
    for path in sorted(directory.glob("*.log")):
        counts: Counter[str] = Counter()
        with path.open(errors="replace") as handle:
            for line in handle:
                if ERROR_LINE.search(line):
                    counts[_signature(line)] += 1
        if counts:
            found[path.stem] = dict(counts.most_common(TOP))
    return found


def _signature(line: str) -> str:
    line = line.replace("\\n", "\n")  # key=value logs carry tracebacks with escaped newlines
    exceptions = EXCEPTION.findall(line)
    if exceptions:
        name, detail = exceptions[-1]
        return f"{name}: {detail.strip()}" if detail.strip() else name
    message = MESSAGE.search(line)
    return message.group(1) if message else line.strip()[:100]


def retried(directory: Path) -> dict[str, list[str]]:
    """{message id: the log lines that sent it back for another try} over every *.log of the run."""
    found: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.log")):
        with path.open(errors="replace") as handle:
            for line in handle:
                match = RETRYING.search(line)
                if match:
                    found.setdefault(match.group(1), []).append(f"{path.stem}: {line.strip()[:300]}")
    return found
