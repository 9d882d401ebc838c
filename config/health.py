"""The probes: `/livez`, `/readyz` and `/healthz`.

- `GET /livez`: the process answers. Asks nothing of anyone: for a liveness probe (Kubernetes
  restarts a container that fails it), which must not fail for a dependency's outage (restarting
  every process does not bring the database back).
- `GET /readyz`: this process can serve: its database answers and takes writes, as far as a
  probe can tell without writing (below). For a load balancer's health check or Kubernetes'
  readiness. 200, or 503 with `Retry-After`. The broker is in its body but never fails it: with
  Redis down, reads, bookings (202, queued later by the sweeper) and webhook acknowledgements
  keep working, and a readiness failing with the Redis every machine shares would take every
  instance out of rotation at once, turning that degraded service into an outage. Its check
  waits `READYZ_BROKER_TIMEOUT_S` at most, so a Redis that does not answer does not make the
  probe time out either.
- `GET /healthz`: the full report, for alerting: 200 when the database and the broker answer;
  otherwise 503 with `Retry-After` and each dependency's answer, e.g. `{"status":
  "unavailable", "checks": {"database": true, "broker": false}}`. A clock more than
  `HEALTHZ_CLOCK_SKEW_WARN_S` off Redis's is reported under `"warnings"` without failing it.

All ask afresh on every call, so they turn 200 again by themselves once the dependency is back.
Each answers HEAD (a load balancer's check, `curl -I`) and OPTIONS (HAProxy's `option httpchk`
unless told otherwise) as its GET, the latter with `Allow`; any other method is a 405 in the one
error shape.

The database answering a read is not enough: one that refuses writes (its disk full, read-only)
refuses every booking. On PostgreSQL the probe's one query asks whether the server takes writes
(`pg_is_in_recovery()`: a standby a failover left us on; `transaction_read_only`:
`default_transaction_read_only` set), so every process answers alike. A full disk or failing
storage no query can see without writing: `/healthz` (not `/readyz`) says `"database": false` also
when this process answered a write 503 because the database refused it within
`HEALTHZ_WRITES_REFUSED_S` (config.database_errors). That memory is this process's own, so
another gunicorn worker may answer 200 meanwhile (alert on `bookings_database_unavailable_total`
too, which counts every process); `/readyz` leaves it out, for that flapping and because the
database every instance shares refuses the others' writes as well: taking instances out of
rotation would stop the reads that still work. On SQLite, less than `HEALTHZ_SQLITE_MIN_FREE_MB`
free in the file's directory fails both probes: a write would fail on it next (one statvfs).

The broker likewise: a Redis that answers PING but refuses writes (at `maxmemory` with
`noeviction`, or a read-only replica a failover left the service on) queues no submission, and
counts no rate limit, so `"broker": true` only when it takes one tiny write: a key of the
broker's namespace that every process probing overwrites, gone seconds after the last probe."""

from __future__ import annotations

import logging
import shutil
import time
from functools import lru_cache
from pathlib import Path

import dramatiq
import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from redis.backoff import NoBackoff
from redis.retry import Retry

from config import database_errors
from config.logging import AtMostEvery, one_line
from config.methods import allow

logger = logging.getLogger(__name__)


# A probe asks every few seconds through an outage: one line each, a traceback once a minute.
_tracebacks = {"database": AtMostEvery(60.0), "broker": AtMostEvery(60.0)}
# A clock off Redis's by more than this is reported: Dramatiq's heartbeats are each client's own
# clock, and a worker 20 s (DRAMATIQ_HEARTBEAT_TIMEOUT_MS) off has its running messages re-queued.
HEALTHZ_CLOCK_SKEW_WARN_S = 2.0
# The most `/readyz` waits on Redis, which it reports but does not depend on.
READYZ_BROKER_TIMEOUT_S = 0.25


def _failed(check: str, exception: Exception) -> bool:
    logger.warning(
        f"healthz {check} check failed",
        exc_info=exception if _tracebacks[check].due() else None,
        extra={"error": one_line(exception)},
    )
    return False


# One round trip, as `SELECT 1` was: whether the server takes writes at all.
_POSTGRES_WRITABLE = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"


def _database_ok(*, remembered: bool = True) -> bool:
    """The database answers and, as far as the probe can tell, takes writes; with `remembered`,
    also no write refused to this process lately (config.database_errors)."""
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(_POSTGRES_WRITABLE)
                in_recovery, read_only = cursor.fetchone()
            else:
                cursor.execute("SELECT 1")
                in_recovery, read_only = False, "off"
    except Exception as exc:  # noqa: BLE001 - whatever fails is "not healthy", logged in _failed
        return _failed("database", exc)
    refused = _writes_refused(in_recovery=in_recovery, read_only=read_only == "on", remembered=remembered)
    if refused:
        logger.warning("healthz database check failed", extra={"error": refused})
        return False
    return True


def _writes_refused(*, in_recovery: bool, read_only: bool, remembered: bool) -> str:
    """Why a write would be refused though the database answers reads, or ""."""
    if in_recovery:
        return "the PostgreSQL server is a standby in recovery: it takes no writes"
    if read_only:
        return "the PostgreSQL session is read-only (default_transaction_read_only)"
    if remembered:
        recent = database_errors.last_refusal.within(settings.HEALTHZ_WRITES_REFUSED_S)
        if recent is not None:
            age, error = recent
            return f"a write was refused {age:.0f} s ago: {error}"
    directory = _sqlite_directory()
    if directory is not None:
        try:
            free = shutil.disk_usage(directory).free
        except OSError as exc:  # no directory to look at: nothing can be written there either
            return f"the SQLite database's directory cannot be read: {one_line(exc)}"
        minimum = settings.HEALTHZ_SQLITE_MIN_FREE_MB * 1024 * 1024
        if free < minimum:
            return f"{free // 1024} KiB free beside the SQLite database (HEALTHZ_SQLITE_MIN_FREE_MB)"
    return ""


def _sqlite_directory() -> Path | None:
    """The directory of the SQLite file (where its journal and WAL grow too), or None."""
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).parent


HEALTHZ_KEY_TTL_MS = 5000  # the probe's key outlives the last probe by this much


def broker_probe_key() -> str:
    return f"{settings.DRAMATIQ_BROKER['OPTIONS']['namespace']}:healthz:probe"


def _broker_check(client: redis.Redis) -> tuple[bool, float | None]:
    """Whether the broker takes the probe's write, and how far this machine's clock is ahead of
    Redis's (seconds; None when Redis did not answer)."""
    try:
        before = time.time()
        with client.pipeline(transaction=False) as pipe:
            pipe.set(broker_probe_key(), b"1", px=HEALTHZ_KEY_TTL_MS)
            pipe.time()
            written, (seconds, microseconds) = pipe.execute(raise_on_error=False)
        after = time.time()
    except Exception as exc:  # noqa: BLE001 - whatever fails is "not healthy", logged in _failed
        return _failed("broker", exc), None
    skew = (before + after) / 2 - (seconds + microseconds / 1e6)
    if isinstance(written, Exception):
        return _failed("broker", written), skew
    return bool(written), skew


@lru_cache(maxsize=8)
def _probe_client(pool: redis.ConnectionPool, timeout_s: float | None = None) -> redis.Redis:
    """A client of the broker's server that asks once: redis-py retries a connection that timed
    out three times by default, which held `/healthz` 15 s on a Redis that does not answer (the
    web's 1 s timeouts). With `timeout_s`, waiting that long at most instead of the broker's."""
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    if timeout_s is not None:
        kwargs.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _unavailable(body: dict) -> JsonResponse:
    response = JsonResponse(
        body, status=503, headers={"Retry-After": str(settings.UNAVAILABLE_RETRY_AFTER_S)}
    )
    response._has_been_logged = True  # the warning above said why; django.request logs no ERROR for it
    return response


# HEAD as GET (a load balancer's check, `curl -I`), and OPTIONS too, answered as GET with `Allow`:
# HAProxy's `option httpchk` sends OPTIONS unless told otherwise, and must see the 503 as well.
PROBE_METHODS = ("GET", "HEAD", "OPTIONS")


@allow(*PROBE_METHODS)
def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@allow(*PROBE_METHODS)
def readyz(request: HttpRequest) -> JsonResponse:
    database = _database_ok(remembered=False)
    broker_pool = dramatiq.get_broker().client.connection_pool
    broker, _skew = _broker_check(_probe_client(broker_pool, READYZ_BROKER_TIMEOUT_S))
    body = {"status": "ok" if database else "unavailable", "checks": {"database": database, "broker": broker}}
    return JsonResponse(body) if database else _unavailable(body)


@allow(*PROBE_METHODS)
def healthz(request: HttpRequest) -> JsonResponse:
    database = _database_ok()
    broker, skew = _broker_check(_probe_client(dramatiq.get_broker().client.connection_pool))
    checks = {"database": database, "broker": broker}
    body: dict = {"status": "ok" if all(checks.values()) else "unavailable", "checks": checks}
    if skew is not None and abs(skew) > HEALTHZ_CLOCK_SKEW_WARN_S:
        warning = f"this machine's clock is {skew:+.1f} s off Redis's; run NTP"
        logger.warning("healthz clock skew", extra={"skew_s": round(skew, 3)})
        body["warnings"] = {"clock_skew_s": round(skew, 3), "clock": warning}
    return JsonResponse(body) if all(checks.values()) else _unavailable(body)
