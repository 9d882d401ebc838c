"""The shared HTTP layer of the partner connectors: one pooled session per partner, one call.

`perform()` makes one request and reduces it to an `Exchange`: latency, status, the partner's
clock (`Date`), `Retry-After`, the partner's error code, the parsed JSON body, or the transport
failure already classified. Adapters then map status codes to outcomes per operation and build
`CallResult`s with `Exchange.result()`.

What is retried here, and only here: a connection that was never established (refused, name not
resolved, connect timeout), because then the request provably never left. Everything that fails
after the request may have been sent (read timeout, dropped connection, broken body) is
ambiguous for writes and transient for reads; longer backoff belongs to the caller (Dramatiq).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from partners.connectors.base import CallResult, ReservationSnapshot
from partners.models import Outcome, Partner

logger = logging.getLogger("partners.http")

CONNECT_ATTEMPTS = 3
MAX_BODY_BYTES = 10 * 1024 * 1024
REFUSAL_CHARS = 300  # PartnerAttempt.refusal
USER_AGENT = "bookings-behind-partners/0.1"
# SO_LINGER on with a zero timeout: close() resets the connection and discards unsent data.
RESET_ON_CLOSE = (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

_sessions: dict[str, tuple[tuple[str, str], requests.Session]] = {}
_sessions_lock = threading.Lock()


def session_for(partner: Partner) -> requests.Session:
    """The partner's pooled session, cached per (partner code, base_url, key).

    A changed base URL or key replaces the partner's entry, so the cache stays one session per
    partner; the key enters the cache key only as a digest.
    """
    fingerprint = (
        partner.base_url,
        hashlib.sha256(partner.resolved_api_key().encode()).hexdigest(),
    )
    with _sessions_lock:
        cached = _sessions.get(partner.code)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        session = _new_session(pool_size=max(1, partner.max_concurrency))
        _sessions[partner.code] = (fingerprint, session)
        return session


def close_sessions() -> None:
    """Drop every cached session (tests, process shutdown)."""
    with _sessions_lock:
        cached = list(_sessions.values())
        _sessions.clear()
    for _, session in cached:
        session.close()


class AbortingAdapter(HTTPAdapter):
    """Connections that are reset when closed, not shut down politely.

    urllib3 closes a connection it gives up on (a read timeout, a broken answer). A polite close
    leaves the unacknowledged request in the kernel, which re-sends it for up to ~15 minutes: a
    create we timed out on behind a partition would reach the partner when the link heals, after
    a lookup had "proved" it absent, and make a duplicate. A reset drops what was not delivered,
    so a request lands, if ever, within its own timeouts (`partners/services/sync.landed_by`)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [*HTTPConnection.default_socket_options, RESET_ON_CLOSE]
        super().init_poolmanager(*args, **kwargs)


def _new_session(*, pool_size: int) -> requests.Session:
    session = requests.Session()
    # urllib3 must not retry anything: a silent re-send of a POST is how duplicates are made.
    adapter = AbortingAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Sessions are shared across worker threads: keep no cookies, take no proxy/netrc from the env.
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.trust_env = False
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    return session


class MalformedPayload(ValueError):
    """A partner payload that does not follow its protocol's contract."""

    code = "malformed_payload"


@dataclass(frozen=True)
class Exchange:
    """One request and what came back, before the adapter's per-operation classification."""

    write: bool
    latency_ms: int
    attempts: int = 1
    status: int | None = None  # None: no response at all (see `failure`)
    body: Any = None  # parsed JSON; None when absent or not JSON
    body_is_json: bool = False
    partner_time: datetime | None = None
    retry_after_s: float | None = None
    error_code: str = ""
    error_message: str = ""
    failure: Outcome | None = None  # set when the transport failed; already classified
    failure_reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_success(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def result(
        self,
        outcome: Outcome,
        *,
        reservations: tuple[ReservationSnapshot, ...] = (),
        error: str | None = None,
        error_code: str | None = None,
        retry_after_s: float | None = None,
        next_page: int | None = None,
    ) -> CallResult:
        return CallResult(
            outcome=outcome,
            http_status=self.status,
            reservations=reservations,
            partner_time=self.partner_time,
            latency_ms=self.latency_ms,
            error=self.describe() if error is None else error,
            error_code=self.error_code if error_code is None else error_code,
            retry_after_s=self.retry_after_s if retry_after_s is None else retry_after_s,
            next_page=next_page,
        )

    def transport_failure(self) -> CallResult:
        assert self.failure is not None
        return self.result(self.failure)

    def refused(self, problem: MalformedPayload) -> CallResult:
        """An answer whose data we refuse (malformed, or a value out of range): a write may have
        taken effect; a read told us nothing. `refusal` says why, for the attempt's record."""
        return CallResult(
            outcome=Outcome.AMBIGUOUS if self.write else Outcome.TRANSIENT,
            http_status=self.status,
            partner_time=self.partner_time,
            latency_ms=self.latency_ms,
            error=f"partner data refused (HTTP {self.status}): {problem}",
            error_code=self.error_code,
            retry_after_s=self.retry_after_s,
            refusal=str(problem)[:REFUSAL_CHARS],
        )

    def by_status(self) -> CallResult:
        """The classification of an error status no adapter rule claimed."""
        return self.result(classify_status(self.status, write=self.write))

    def describe(self) -> str:
        if self.failure is not None:
            return self.failure_reason
        if self.is_success:
            return ""
        detail = self.error_message or self.error_code
        return f"HTTP {self.status}" + (f": {detail}" if detail else "")


def classify_status(status: int | None, *, write: bool) -> Outcome:
    """Default outcome of a status code (adapters first handle their own success and 4xx cases).

    408/425/429 mean the partner did not process the request. Other 4xx are the partner's final
    word on this request. A 5xx or anything unforeseen (3xx, 1xx) on a write may have been
    committed before the failure, so it is ambiguous; on a read it is just worth another try.
    """
    if status in (408, 425, 429):
        return Outcome.TRANSIENT
    if status is not None and 400 <= status < 500:
        return Outcome.PERMANENT
    return Outcome.AMBIGUOUS if write else Outcome.TRANSIENT


def perform(
    partner: Partner,
    method: str,
    path: str,
    *,
    write: bool,
    auth_headers: dict[str, str],
    json_body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Exchange:
    """Send one request to the partner and reduce what happened to an `Exchange`.

    `write` says whether the request changes state at the partner: it decides whether a failure
    after sending is ambiguous (write) or merely transient (read).
    """
    url = partner.base_url.rstrip("/") + path
    started = time.monotonic()
    attempts = 0
    try:
        for attempt in _connect_retrying(partner):
            with attempt:
                attempts = attempt.retry_state.attempt_number
                status, response_headers, content = _send(
                    session_for(partner),
                    method,
                    url,
                    timeout=(partner.connect_timeout_s, partner.read_timeout_s),
                    headers={**auth_headers, **(headers or {})},
                    json_body=json_body,
                    params=params,
                )
    except (requests.RequestException, Urllib3HTTPError, _BodyFailure) as exc:
        exchange = _failed_exchange(exc, write=write, started=started, attempts=attempts)
        _log(partner, method, path, exchange)
        return exchange
    exchange = _answered_exchange(
        status, response_headers, content, write=write, started=started, attempts=attempts
    )
    _log(partner, method, path, exchange)
    return exchange


class _BodyFailure(Exception):
    """The response body did not arrive whole and in time (after the request was sent)."""


def _send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: tuple[float, float],
    headers: dict[str, str],
    json_body: dict[str, Any] | None,
    params: dict[str, Any] | None,
) -> tuple[int, dict[str, str], bytes]:
    # Redirects are not followed: requests would turn a redirected POST into a GET.
    with session.request(
        method,
        url,
        headers=headers,
        json=json_body,
        params=params,
        timeout=timeout,
        allow_redirects=False,
        stream=True,
    ) as response:
        content = _read_body(response, read_timeout_s=timeout[1])
        return response.status_code, dict(response.headers), content


def _read_body(response: requests.Response, *, read_timeout_s: float) -> bytes:
    # The read timeout bounds each read, not the whole body: a trickling partner would hold the
    # worker for ever, so the body as a whole gets one more read timeout after the headers.
    # `read1` returns after one socket read, so the deadline is checked while bytes trickle in.
    deadline = time.monotonic() + read_timeout_s
    chunks: list[bytes] = []
    size = 0
    while chunk := response.raw.read1(64 * 1024, decode_content=True):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyFailure(f"response body larger than {MAX_BODY_BYTES} bytes")
        if time.monotonic() > deadline:
            raise _BodyFailure("response body not received within the read timeout")
    return b"".join(chunks)


def never_sent(exc: BaseException) -> bool:
    """True when the connection was never established, so the partner cannot have seen anything.

    `requests.ConnectionError` also wraps failures after sending (RemoteDisconnected,
    ProtocolError): only a refused/unresolvable connection or a connect timeout qualifies.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.SSLError):
        cause = exc.args[0] if exc.args else None
        reason = getattr(cause, "reason", cause)  # urllib3's MaxRetryError carries the reason
        # NewConnectionError (refused, name resolution) subclasses ConnectTimeoutError.
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


# The longest pause between two connect attempts (`wait_random_exponential`'s max).
CONNECT_RETRY_WAIT_MAX_S = 1.0


def connect_phase_s(partner: Partner) -> float:
    """How long after a call starts its request may still leave: every connect attempt timing out,
    with the pauses between them (`_connect_retrying`)."""
    return CONNECT_ATTEMPTS * partner.connect_timeout_s + (CONNECT_ATTEMPTS - 1) * CONNECT_RETRY_WAIT_MAX_S


def longest_call_s(partner: Partner) -> float:
    """How long one call to the partner can last at most: its connect phase (`connect_phase_s`),
    then the headers' read timeout and the body's one more (`_read_body`), and a second's margin.
    A call out for longer than that was cut off (its worker killed)."""
    return connect_phase_s(partner) + 2 * partner.read_timeout_s + 1.0


def _connect_retrying(partner: Partner) -> Retrying:
    return Retrying(
        stop=stop_after_attempt(CONNECT_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.1, max=CONNECT_RETRY_WAIT_MAX_S),
        retry=retry_if_exception(never_sent),
        reraise=True,
        before_sleep=lambda state: _log_connect_retry(partner, state),
    )


def _log_connect_retry(partner: Partner, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "partner connect failed, retrying",
        extra={
            "partner": partner.code,
            "attempt": state.attempt_number,
            "error": _describe_exception(exc) if exc else "",
        },
    )


def _failed_exchange(exc: BaseException, *, write: bool, started: float, attempts: int) -> Exchange:
    if never_sent(exc):
        outcome = Outcome.TRANSIENT
        why = "not sent"
    elif isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        # Our configuration is wrong; nothing left and repeating will not help.
        outcome = Outcome.PERMANENT
        why = "not sent, bad configuration"
    else:
        # Read timeout, connection dropped, body cut short: the partner may have acted on it.
        outcome = Outcome.AMBIGUOUS if write else Outcome.TRANSIENT
        why = "sent, no complete answer"
    return Exchange(
        write=write,
        latency_ms=_elapsed_ms(started),
        attempts=max(attempts, 1),
        failure=outcome,
        failure_reason=f"{why}: {_describe_exception(exc)}",
    )


def _answered_exchange(
    status: int,
    headers: dict[str, str],
    content: bytes,
    *,
    write: bool,
    started: float,
    attempts: int,
) -> Exchange:
    lowered = {k.lower(): v for k, v in headers.items()}
    partner_time = parse_http_date(lowered.get("date"))
    # A `Retry-After` date is counted from the partner's `Date`, unless no clock would write that
    # (1970): then from ours, or a retry would wait decades (or overflow when scheduled).
    now = datetime.now(tz=UTC)
    counted_from = partner_time if partner_time is not None and plausible_stamp(partner_time, at=now) else now
    body, is_json = _parse_json(content)
    error_code, error_message = _error_fields(body) if not 200 <= status < 300 else ("", "")
    return Exchange(
        write=write,
        latency_ms=_elapsed_ms(started),
        attempts=attempts,
        status=status,
        body=body,
        body_is_json=is_json,
        partner_time=partner_time,
        retry_after_s=parse_retry_after(lowered.get("retry-after"), now=counted_from),
        error_code=error_code,
        error_message=error_message,
        headers=lowered,
    )


def _parse_json(content: bytes) -> tuple[Any, bool]:
    if not content.strip():
        return None, False
    try:
        return json.loads(content), True
    except ValueError:  # includes UnicodeDecodeError
        return None, False


def _error_fields(body: Any) -> tuple[str, str]:
    """The partner's error code and text: `{"error", "message"}` (reference), `{"err"}` (legacy)."""
    if not isinstance(body, dict):
        return "", ""
    code = body.get("error")
    message = body.get("message") or body.get("err") or body.get("msg") or ""
    return (code if isinstance(code, str) else ""), str(message)[:500]


# A stamp further from our clock than this is not a clock that drifted: a clock never set (the
# epoch, 1970), a default or garbled `Date` a proxy or framework wrote. It is no sample. A clock an
# hour or a time zone off is a real fault partner health should show, well within; so is the
# skew past the webhook tolerance that refuses a partner's deliveries (five minutes).
PLAUSIBLE_SKEW = timedelta(days=1)


def plausible_stamp(partner_stamp: datetime, *, at: datetime) -> bool:
    """Could `partner_stamp`, read at our `at`, be a clock's reading (within PLAUSIBLE_SKEW)?"""
    return abs(partner_stamp - at) <= PLAUSIBLE_SKEW


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date (`Date`, `Retry-After`) as an aware datetime in UTC; None when absent,
    unreadable, or past what a datetime holds in UTC (`31 Dec 9999 23:59:59 -0100`: storing or
    comparing it would overflow after the call was made)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # `-0000` (or no zone) parses naive: HTTP dates are GMT by definition.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


# The longest pause a partner's `Retry-After` asks that we honour: nothing of ours waits longer
# (a booking's deadline comes first), and a larger number ("1e20", a date in 9999) would overflow
# the datetime arithmetic after the partner call was made, losing its answer.
RETRY_AFTER_MAX_S = 86_400.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: delta-seconds, or an HTTP date counted from `now` (partner's);
    at most RETRY_AFTER_MAX_S."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        when = parse_http_date(text)
        if when is None:
            return None
        seconds = (when - (now or datetime.now(tz=UTC))).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or infinite: unusable
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


def money_string(amount: Decimal) -> str:
    """A decimal string with at least two places ("360.00"), never exponent notation."""
    amount = Decimal(amount)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return format(amount, "f")


def _describe_exception(exc: BaseException) -> str:
    # Exception texts carry the URL and host, never our request headers (the key).
    return f"{type(exc).__name__}: {exc}"[:500]


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _log(partner: Partner, method: str, path: str, exchange: Exchange) -> None:
    fields = {
        "partner": partner.code,
        "method": method,
        "path": path,
        "status": exchange.status,
        "latency_ms": exchange.latency_ms,
        "attempts": exchange.attempts,
    }
    if exchange.failure is not None:
        fields["failure"] = str(exchange.failure)
        fields["error"] = exchange.failure_reason
        logger.warning("partner call failed", extra=fields)
    else:
        logger.info("partner call", extra=fields)
