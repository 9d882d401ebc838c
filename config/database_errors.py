"""What a database error answered with a 503 says: its cause, counted for the metrics, and the
writes this process saw the database refuse, for `/healthz`.

A database that answers reads but refuses writes (its disk full, a file or server turned
read-only, failing storage) passes a probe that reads: `SELECT 1` succeeds while every booking
and cancellation is refused. What the probe can ask without writing it asks on every call (on
PostgreSQL, whether the server is a standby or read-only: config/health.py). A full disk or
failing storage shows only to a write: `DatabaseUnavailableMiddleware` knows the moment it
answers such a write 503, so it notes it here, and `/healthz` says the database is down for
`HEALTHZ_WRITES_REFUSED_S` after: no write of its own on each probe.

Per process, as the middleware's traceback allowance is: the probe sees what the process it
reaches saw, so of one machine's gunicorn workers some may say 200 meanwhile. Hence `/readyz`
leaves it out (a load balancer would take the instance in and out by which worker answered),
and alerting reads `bookings_database_unavailable_total`, which counts every process, beside
`/healthz` (on SQLite, the free space beside the file is read by every probe; config/health.py).
"""

from __future__ import annotations

import math
import threading
import time

from django.db import InterfaceError, InternalError, OperationalError

from config.logging import one_line
from config.metrics import events as metrics

# The causes a 503 is counted under (`bookings_database_unavailable_total{cause}`).
DISK_FULL, READ_ONLY, IO_ERROR, BUSY, UNREACHABLE, OTHER = (
    "disk_full",
    "read_only",
    "io_error",
    "busy",
    "unreachable",
    "other",
)
CAUSES = (DISK_FULL, READ_ONLY, IO_ERROR, BUSY, UNREACHABLE, OTHER)
metrics.database_unavailable_series(CAUSES)
# A write refused for one of these is refused for the next write too until someone acts: the
# probe says so. Not `busy` (a lock or a timeout under load: the next write goes through, and a
# probe failing on it would take a loaded instance out of rotation), nor `unreachable` (the
# probe's own query fails), nor `other` (an error we cannot tell apart from a bug of ours).
WRITES_REFUSED = frozenset({DISK_FULL, READ_ONLY, IO_ERROR})

# SQLite's extended result codes by their primary code's name (sqlite3.Error.sqlite_errorname).
_SQLITE = {
    "SQLITE_FULL": DISK_FULL,
    "SQLITE_READONLY": READ_ONLY,
    "SQLITE_IOERR": IO_ERROR,
    "SQLITE_BUSY": BUSY,
    "SQLITE_LOCKED": BUSY,
    "SQLITE_CANTOPEN": UNREACHABLE,
}
# PostgreSQL's SQLSTATEs (psycopg's `sqlstate`) that reach the middleware as an OperationalError,
# or as an InternalError for a server that takes no writes (a standby a failover left us on).
READ_ONLY_SQL_TRANSACTION = "25006"
_POSTGRES = {
    READ_ONLY_SQL_TRANSACTION: READ_ONLY,
    "53100": DISK_FULL,  # disk_full
    "58030": IO_ERROR,  # io_error
    "55P03": BUSY,  # lock_not_available (lock_timeout)
    "40001": BUSY,  # serialization_failure
    "40P01": BUSY,  # deadlock_detected
    "57014": BUSY,  # query_canceled (statement_timeout)
    "53300": UNREACHABLE,  # too_many_connections
    "57P01": UNREACHABLE,  # admin_shutdown
    "57P02": UNREACHABLE,  # crash_shutdown
    "57P03": UNREACHABLE,  # cannot_connect_now (starting up, shutting down, in recovery)
}


def is_unavailable(exception: BaseException) -> bool:
    """Whether `exception` says the database is unavailable (for now) rather than that our
    request is wrong: what the middleware answers 503. PostgreSQL refusing a write because it
    takes none (`25006`) is raised as an InternalError, the class of a bug of ours otherwise."""
    if isinstance(exception, OperationalError | InterfaceError):
        return True
    if not isinstance(exception, InternalError):
        return False
    return getattr(exception.__cause__ or exception, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION


def cause_of(exception: BaseException) -> str:
    """The cause of a database error, from the driver's own exception behind Django's."""
    if isinstance(exception, InterfaceError):
        return UNREACHABLE  # a connection already closed, or never made
    driver = exception.__cause__ or exception
    sqlite_name = getattr(driver, "sqlite_errorname", None)
    if sqlite_name is not None:
        return next((cause for prefix, cause in _SQLITE.items() if sqlite_name.startswith(prefix)), OTHER)
    if type(driver).__module__.startswith("psycopg"):
        sqlstate = getattr(driver, "sqlstate", None)
        if sqlstate is None or sqlstate.startswith("08"):  # no answer at all, or a connection exception
            return UNREACHABLE
        return _POSTGRES.get(sqlstate, OTHER)
    return OTHER


class _LastRefusal:
    """The last write this process answered 503 because the database refused it."""

    def __init__(self) -> None:
        self.at = -math.inf  # time.monotonic()
        self.error = ""
        self._lock = threading.Lock()

    def note(self, error: str) -> None:
        with self._lock:
            self.at, self.error = time.monotonic(), error

    def within(self, seconds: float) -> tuple[float, str] | None:
        """(seconds since, the error's first line) if the last refusal is that recent."""
        with self._lock:
            age = time.monotonic() - self.at
            return (age, self.error) if age < seconds else None


last_refusal = _LastRefusal()


def answered_unavailable(exception: BaseException, *, write: bool) -> str:
    """A request answered 503 for `exception`: counted by cause, and remembered when it was a
    write the database refused. The cause."""
    cause = cause_of(exception)
    metrics.database_unavailable(cause=cause, request="write" if write else "read")
    if write and cause in WRITES_REFUSED:
        last_refusal.note(one_line(exception))
    return cause
