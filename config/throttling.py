"""The rate limits of the API and of the customer pages: atomic counters in Redis, per customer
and per source address (the counters, `WindowCounter`, also bound what the webhook receiver
stores of refused deliveries).

Each request under `API_THROTTLE_PATHS` increments two counters in one Lua call (one round
trip): its customer's, keyed by the credential it presents (the `Authorization` header, else
the session cookie; a customer has one token), and its source address's. A counter's window
opens with its first request and lasts the rate's period; the increment is atomic, so parallel
requests never let more than the limit through (DRF's throttles read and rewrite a history list
without a lock). Counting runs before authentication: requests with a wrong token count against
their address, and a throttled flood costs no database query.

The customer pages reach the same services (a quote, a booking with its partner request and card
hold, an account, a password-reset mail), so their writes are counted too, by
`PageRateLimitMiddleware`: every request to a page of the `web` namespace other than a read, per
customer when logged in (the user, however many sessions they hold) else per address, and per
address whoever sends it; the account forms (sign-up, log-in, password reset) have a lower limit
per address, and a password-reset mail one per address asked for. The pages' reads go unlimited
(they change nothing and call no partner). A page past a limit answers 429 with `Retry-After` as
a page (`429.html`, in the look of the login lockout's); the API answers its JSON error shape.

When Redis does not answer, the limit fails open: the request goes through, with a warning (and,
after a Redis went unanswered, the next few seconds of requests do not wait on it again). So
does a page's write when the database does not answer as its customer is read (their session, their
user): its view runs and answers the outage's 503 page with `Retry-After`, as any page does, where
an error in the middleware would have been the 500 page.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from config import database_errors
from config.errors import error_response
from config.network import client_ip
from config.rates import Rate  # the settings refuse a malformed one at start
from config.redis_pause import unless_paused

logger = logging.getLogger(__name__)

# One warning per process per this many seconds while Redis is away, not one per request.
_WARNING_INTERVAL_S = 10.0

# INCR each key; a key without an expiry (just created) gets its window. Returns, per key, the
# count so far and the milliseconds left in its window.
_COUNT = """
local result = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local left = redis.call('PTTL', key)
  if left < 0 then
    left = tonumber(ARGV[i])
    redis.call('PEXPIRE', key, left)
  end
  result[#result + 1] = count
  result[#result + 1] = left
end
return result
"""


@dataclass(frozen=True)
class Count:
    """One counter after a hit: how many so far in its window, and how long the window lasts."""

    count: int
    left_ms: int
    rate: Rate

    @property
    def over(self) -> bool:
        return self.count > self.rate.limit


class WindowCounter:
    """Fixed-window counters in Redis: every key of a hit is counted in one atomic Lua call.

    Raises `redis.RedisError` when Redis does not answer; each caller decides what that means.
    After one went unanswered, the process's counts skip that Redis for a while (raising at once,
    config/redis_pause.py): a silent Redis would otherwise add its timeout to every request.
    """

    def __init__(self, *, redis_url: str, timeout_s: float):
        self._url = redis_url
        self._client = redis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._count = self._client.register_script(_COUNT)

    def hit(self, limits: list[tuple[str, Rate]]) -> list[Count]:
        counted = unless_paused(
            self._url,
            lambda: self._count(keys=[key for key, _ in limits], args=[rate.period_ms for _, rate in limits]),
            timeout_pauses=False,
        )
        return [
            Count(count, left_ms, rate)
            for (_, rate), count, left_ms in zip(limits, counted[::2], counted[1::2], strict=True)
        ]

    def peek(self, keys: list[str]) -> list[int]:
        """The counts so far in the keys' current windows (0 where none is open)."""
        if not keys:
            return []
        return [
            int(value or 0)
            for value in unless_paused(self._url, lambda: self._client.mget(keys), timeout_pauses=False)
        ]


@lru_cache(maxsize=8)
def window_counter(redis_url: str, timeout_s: float) -> WindowCounter:
    """One counter (one connection pool) per Redis and timeout, per process."""
    return WindowCounter(redis_url=redis_url, timeout_s=timeout_s)


def _digest(text: str) -> str:
    """What a key says of a secret or a person's address: a digest, naming neither."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class _Limits:
    """Counts a request's keys; fails open (one warning per process every few seconds) when
    Redis does not answer."""

    def __init__(self, *, redis_url: str, timeout_s: float, what: str):
        self._counter = window_counter(redis_url, timeout_s)
        self._what = what
        self._warned_at = -math.inf

    def retry_after_s(self, limits: list[tuple[str, Rate]]) -> int | None:
        """Count the keys; None when the request may go through, else the seconds until it may."""
        try:
            counts = self._counter.hit(limits)
        except redis.RedisError:
            self._warn_fail_open()
            return None
        waits_ms = [count.left_ms for count in counts if count.over]
        return max(1, math.ceil(max(waits_ms) / 1000)) if waits_ms else None

    def _warn_fail_open(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARNING_INTERVAL_S:
            self._warned_at = now
            logger.warning("%s rate limit not applied: Redis unavailable", self._what, exc_info=True)


class RateLimiter(_Limits):
    def __init__(self, *, redis_url: str, timeout_s: float, namespace: str, customer: Rate, address: Rate):
        super().__init__(redis_url=redis_url, timeout_s=timeout_s, what="API")
        self._namespace = namespace
        self._customer = customer
        self._address = address

    def request_retry_after_s(self, request: HttpRequest) -> int | None:
        """Count the request; None when it may go through, else the seconds until it may."""
        limits = [(f"{self._namespace}:address:{client_ip(request)}", self._address)]
        credential = request.META.get("HTTP_AUTHORIZATION") or request.COOKIES.get(
            settings.SESSION_COOKIE_NAME
        )
        if credential:
            limits.append((f"{self._namespace}:customer:{_digest(credential)}", self._customer))
        return self.retry_after_s(limits)


@lru_cache(maxsize=4)
def _limiter(
    redis_url: str, timeout_s: float, namespace: str, customer_rate: str, address_rate: str
) -> RateLimiter:
    return RateLimiter(
        redis_url=redis_url,
        timeout_s=timeout_s,
        namespace=namespace,
        customer=Rate.parse(customer_rate),
        address=Rate.parse(address_rate),
    )


class RateLimitMiddleware:
    """429 in the one error shape, with `Retry-After`, past either limit."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(settings.API_THROTTLE_PATHS):
            limiter = _limiter(
                settings.API_THROTTLE_REDIS_URL,
                settings.API_THROTTLE_REDIS_TIMEOUT_S,
                settings.API_THROTTLE_NAMESPACE,
                settings.API_THROTTLE_RATE,
                settings.API_THROTTLE_ADDRESS_RATE,
            )
            wait_s = limiter.request_retry_after_s(request)
            if wait_s is not None:
                return error_response(
                    429,
                    "throttled",
                    f"Too many requests; retry in {wait_s} seconds.",
                    headers={"Retry-After": str(wait_s)},
                )
        return self.get_response(request)


# --- the customer pages ------------------------------------------------------------------------
# The pages' URL namespace (bookings/web/urls.py), and its account forms: what an anonymous
# visitor can send, each one an account made, a password tried or a mail sent.
PAGES_NAMESPACE = "web"
ACCOUNT_FORMS = frozenset({"signup", "login", "password_reset", "password_reset_confirm"})
# The form whose every accepted POST sends a mail to the address it names.
PASSWORD_RESET_FORM = "password_reset"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class PageRates:
    customer: Rate
    address: Rate
    account: Rate
    reset_email: Rate


@lru_cache(maxsize=4)
def _page_limits(redis_url: str, timeout_s: float) -> _Limits:
    return _Limits(redis_url=redis_url, timeout_s=timeout_s, what="Page")


@lru_cache(maxsize=4)
def _page_rates(customer: str, address: str, account: str, reset_email: str) -> PageRates:
    return PageRates(Rate.parse(customer), Rate.parse(address), Rate.parse(account), Rate.parse(reset_email))


def page_limits(request: HttpRequest, url_name: str) -> list[tuple[str, Rate]]:
    """The counters a write to the page `url_name` counts against (after authentication: a
    logged-in customer is counted as the user, whichever session or address they use)."""
    namespace = f"{settings.API_THROTTLE_NAMESPACE}:page"
    rates = _page_rates(
        settings.PAGE_THROTTLE_RATE,
        settings.PAGE_THROTTLE_ADDRESS_RATE,
        settings.ACCOUNT_THROTTLE_RATE,
        settings.PASSWORD_RESET_EMAIL_RATE,
    )
    address = client_ip(request)
    limits = [(f"{namespace}:address:{address}", rates.address)]
    user = request.user
    if user.is_authenticated:
        limits.append((f"{namespace}:customer:{user.pk}", rates.customer))
    if url_name in ACCOUNT_FORMS:
        limits.append((f"{namespace}:account:{address}", rates.account))
    if url_name == PASSWORD_RESET_FORM:
        email = request.POST.get("email", "")
        if isinstance(email, str) and email.strip():
            limits.append((f"{namespace}:reset-email:{_digest(email.strip().lower())}", rates.reset_email))
    return limits


def throttled_page(request: HttpRequest, wait_s: int) -> HttpResponse:
    """The page's 429: what happened and when to try again, with `Retry-After` (the login
    lockout's look and header)."""
    context = {"retry_after": timedelta(seconds=wait_s)}
    response = HttpResponse(render_to_string("429.html", context, request=request), status=429)
    response["Retry-After"] = str(wait_s)
    return response


class PageRateLimitMiddleware:
    """The customer pages' writes, counted before their view: 429 as a page, with `Retry-After`,
    past any of their limits.

    After AuthenticationMiddleware (it counts a logged-in customer as the user) and after the CSRF
    check (CsrfViewMiddleware's `process_view` runs first): a form another site makes a browser
    post is refused before it counts, so no site can spend a customer's or an address's budget.
    It decides in `process_view`, where the request's page is known by its URL name, not by a path
    prefix (the pages are at the site's root)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        match = request.resolver_match
        if request.method in _READS or match is None or match.namespace != PAGES_NAMESPACE:
            return None
        try:
            counted = page_limits(request, match.url_name)
        except DatabaseError as exc:
            # The logged-in customer is read from the database (their session, their user). An
            # error raised here is outside the view, where DatabaseUnavailableMiddleware never
            # sees it: an outage would be the 500 page. Not counted, the view runs, and the same
            # outage makes it answer the 503 page with Retry-After.
            if database_errors.is_unavailable(exc):
                return None
            raise
        limits = _page_limits(settings.API_THROTTLE_REDIS_URL, settings.API_THROTTLE_REDIS_TIMEOUT_S)
        wait_s = limits.retry_after_s(counted)
        return None if wait_s is None else throttled_page(request, wait_s)
