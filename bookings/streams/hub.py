"""The events process's hub: one Redis subscription and a few database threads for every open
stream of the process, and the heartbeat that re-reads them all.

- Publishes: one pub/sub connection per process. A channel is subscribed while at least one
  stream follows it and unsubscribed when the last one leaves (the `_sync_subscriptions` task
  brings Redis to what the streams want, in order, so that a quick leave-and-return never
  leaves a channel unsubscribed). A stream reads its starting point only after Redis confirmed
  its subscription, so no publish can fall between the two.
- Heartbeat: every `LIVE_HEARTBEAT_S` the hub re-reads every followed booking in one query, and
  every followed customer's sequence in another (their bookings only for the customers whose
  sequence moved), offers what it read to the streams, and has each send a heartbeat. A publish
  lost to a Redis outage is therefore corrected within one heartbeat; so is one lost while the
  subscription reconnects, and the hub re-reads at once when it has reconnected. Streams past
  their life end at the heartbeat too; their clients reconnect with `Last-Event-ID`.
- Database: the hub's own threads (`LIVE_DB_THREADS`) run every query of the process, the
  streams' authentication included, each thread on one persistent connection checked before use
  like a request's: the process holds that many connections however many streams are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
import redis.asyncio
from django.conf import settings
from django.db import close_old_connections
from redis.backoff import NoBackoff
from redis.retry import Retry

from bookings.streams import selectors
from bookings.streams.followers import BookingFollower, CustomerFollower, Follower
from config.embedded_redis import with_socket_timeouts

logger = logging.getLogger(__name__)
T = TypeVar("T")

# How long a new stream waits for Redis to confirm its subscription before it starts anyway (the
# heartbeat then covers what it may miss).
SUBSCRIBE_WAIT_S = 2.0
RECONNECT_BACKOFF_S = (0.2, 10.0)
CLIENT_NAME_PREFIX = "live-streams"


def client_name(pid: int) -> str:
    """The name of a process's pub/sub connection in Redis (`CLIENT LIST`)."""
    return f"{CLIENT_NAME_PREFIX}-{pid}"


class Hub:
    def __init__(self) -> None:
        self._following: dict[str, set[Follower]] = {}  # channel -> its streams
        self._subscribed: set[str] = set()  # sent to Redis on the current connection
        self._confirmed: set[str] = set()  # ... and confirmed by it
        self._unanswered: dict[str, int] = defaultdict(int)  # SUBSCRIBEs sent, per channel, not yet answered
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._wanted = asyncio.Event()  # the streams want other channels than Redis has
        self._connected = False
        self._ping_unanswered_since: float | None = None
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._redis: redis.asyncio.Redis | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._db: ThreadPoolExecutor | None = None
        self._closing = False

    # --- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the hub's tasks on the running loop (idempotent). They run in a context of their
        own, not in the request that happened to start them."""
        if self._tasks:
            return
        self._db = ThreadPoolExecutor(max_workers=settings.LIVE_DB_THREADS, thread_name_prefix="live-db")
        self._redis = redis.asyncio.Redis.from_url(
            with_socket_timeouts(settings.REDIS_URL, 5),
            client_name=client_name(os.getpid()),
            # Errors reach `_listen`, which reconnects and then re-reads what a gap may have lost.
            retry=Retry(NoBackoff(), 0),
        )
        for job in (self._listen, self._sync_subscriptions, self._heartbeat):
            self._spawn(job())

    def end_streams(self) -> None:
        """End every open stream, and every stream that opens from now on (the process is going
        away: their clients reconnect, to another process or to this one restarted)."""
        self._closing = True
        for follower in list(self._followers()):
            follower.end()

    async def close(self) -> None:
        self.end_streams()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        if self._db is not None:
            self._db.shutdown(wait=False)

    # --- what the streams use ---------------------------------------------------------------------
    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run sync ORM code in one of the hub's database threads."""
        assert self._db is not None, "the hub is not started"
        call = functools.partial(_with_fresh_connection, function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._db, call)

    async def follow(self, follower: Follower) -> None:
        """Deliver the follower its channel's publishes; returns once Redis confirmed the
        subscription (at once while Redis is away: the heartbeat then keeps the stream right)."""
        self._following.setdefault(follower.channel, set()).add(follower)
        if self._closing:
            follower.end()
            return
        await self._subscribed_to([follower.channel])

    def unfollow(self, follower: Follower) -> None:
        """Forget the follower (sync, so that a cancelled stream can call it in `finally`)."""
        followers = self._following.get(follower.channel)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            del self._following[follower.channel]
            self._wanted.set()

    # --- the subscription --------------------------------------------------------------------------
    async def _listen(self) -> None:
        """Read the pub/sub connection; reconnect with a growing pause when it breaks."""
        pause_s, max_pause_s = RECONNECT_BACKOFF_S
        for attempt in itertools.count():
            try:
                self._pubsub = self._redis.pubsub()
                await self._pubsub.ping()  # connects; the reply arrives below
                self._connected = True
                self._ping_unanswered_since = None
                self._wanted.set()
                if attempt:
                    logger.info("live status: Redis subscription back; re-reading every stream")
                    self._spawn(self._reread_when_subscribed())
                while True:
                    message = await self._pubsub.get_message(timeout=None)
                    if message is not None:
                        self._receive(message)
                    pause_s = RECONNECT_BACKOFF_S[0]
            except (redis.RedisError, OSError):
                logger.warning("live status: Redis subscription lost; reconnecting in %.1f s", pause_s)
            finally:
                self._disconnected()
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, max_pause_s)

    def _disconnected(self) -> None:
        self._connected = False
        self._subscribed.clear()
        self._confirmed.clear()
        self._unanswered.clear()
        # Nobody waits for a confirmation that cannot come now.
        for confirmation in self._confirmations.values():
            if not confirmation.done():
                confirmation.set_result(None)
        self._confirmations.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            self._spawn(pubsub.aclose())

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel = message["channel"].decode()
            try:
                view = selectors.parse_view(message["data"])
            except ValueError:
                logger.warning("live status: unreadable publish on %s", channel)
                return
            for follower in tuple(self._following.get(channel, ())):
                follower.offer(view)
        elif kind == "subscribe":
            channel = message["channel"].decode()
            self._unanswered[channel] -= 1
            # Confirmed by the answer to the last SUBSCRIBE sent, not an earlier one.
            if self._unanswered[channel] <= 0 and channel in self._subscribed:
                del self._unanswered[channel]
                self._confirmed.add(channel)
                confirmation = self._confirmations.pop(channel, None)
                if confirmation is not None and not confirmation.done():
                    confirmation.set_result(None)
        elif kind == "pong":
            self._ping_unanswered_since = None

    async def _sync_subscriptions(self) -> None:
        """Subscribe to what the streams follow and unsubscribe from what none does any more,
        always from the current wish, so that commands cannot overtake each other."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            pubsub = self._pubsub
            if not self._connected or pubsub is None:
                continue  # the reconnection asks again
            wanted = set(self._following)
            new, gone = wanted - self._subscribed, self._subscribed - wanted
            try:
                if gone:
                    self._subscribed -= gone
                    self._confirmed -= gone
                    await pubsub.unsubscribe(*gone)
                if new:
                    self._subscribed |= new
                    for channel in new:
                        self._unanswered[channel] += 1
                    await pubsub.subscribe(*new)
            except (redis.RedisError, OSError):
                logger.warning("live status: could not change the subscriptions; the reconnection will")

    async def _subscribed_to(self, channels: list[str]) -> None:
        """Return once Redis confirmed it delivers these channels: at once while Redis is away,
        and after SUBSCRIBE_WAIT_S at most (the heartbeat then covers what may be missed)."""
        if not self._connected:
            return
        waiting = []
        for channel in channels:
            if channel not in self._confirmed:
                if channel not in self._confirmations:
                    self._confirmations[channel] = asyncio.get_running_loop().create_future()
                waiting.append(self._confirmations[channel])
        if not waiting:
            return
        self._wanted.set()
        _, unconfirmed = await asyncio.wait(waiting, timeout=SUBSCRIBE_WAIT_S)
        if unconfirmed:
            logger.warning("live status: subscriptions unconfirmed in time; the heartbeat covers them")

    async def _reread_when_subscribed(self) -> None:
        await self._subscribed_to(list(self._following))
        await self._reread()

    # --- the heartbeat -----------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(settings.LIVE_HEARTBEAT_S)
            try:
                await self._reread()
            except Exception:
                # The database may be away: the streams still beat, and the next beat reads again.
                logger.warning("live status: the heartbeat could not re-read the streams", exc_info=True)
            now = time.monotonic()
            for follower in list(self._followers()):
                if follower.ends_at <= now:
                    follower.end()
                else:
                    follower.beat()
            await self._check_subscription()

    async def _reread(self) -> None:
        """Offer every stream its booking(s) as the database has them now: one query for all
        followed bookings, one for all followed customers' sequences, and one for the bookings of
        the customers whose sequence moved."""
        bookings: dict[Any, list[BookingFollower]] = defaultdict(list)
        customers: dict[int, list[CustomerFollower]] = defaultdict(list)
        for follower in self._followers():
            if isinstance(follower, BookingFollower):
                bookings[follower.booking_id].append(follower)
            elif isinstance(follower, CustomerFollower):
                customers[follower.customer_id].append(follower)
        if bookings:
            views = await self.db(selectors.booking_views, list(bookings))
            for booking_id, views_of in bookings.items():
                for follower in views_of:
                    if booking_id in views:
                        follower.offer(views[booking_id])
        if customers:
            sequences = await self.db(selectors.customer_sequences, list(customers))
            moved = [
                customer_id
                for customer_id, followers in customers.items()
                if any(follower.sequence != sequences.get(customer_id, 0) for follower in followers)
            ]
            if moved:
                views_by_customer = await self.db(selectors.customer_views, moved)
                for customer_id in moved:
                    for follower in customers[customer_id]:
                        for view in views_by_customer.get(customer_id, ()):
                            follower.offer(view)

    async def _check_subscription(self) -> None:
        """PING the pub/sub connection once a heartbeat. One that leaves a PING unanswered for a
        whole heartbeat is broken (a half-open socket raises nothing): close it, and `_listen`
        reconnects."""
        pubsub = self._pubsub
        if not self._connected or pubsub is None:
            return
        if self._ping_unanswered_since is not None:
            if time.monotonic() - self._ping_unanswered_since >= settings.LIVE_HEARTBEAT_S:
                logger.warning("live status: Redis subscription silent; reconnecting")
                await pubsub.aclose()
            return
        self._ping_unanswered_since = time.monotonic()
        with contextlib.suppress(redis.RedisError, OSError):  # `_listen` sees the broken connection
            await pubsub.ping()

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run `job` as a task of the hub's (kept until done, cancelled by `close`), in a
        context of its own rather than the caller's request."""
        task = asyncio.get_running_loop().create_task(job, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _followers(self):
        return (follower for followers in self._following.values() for follower in followers)


def _with_fresh_connection(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # What Django does around each request: drop a connection past CONN_MAX_AGE or unusable.
    close_old_connections()
    return function(*args, **kwargs)


# The process's hub: started by the ASGI application's lifespan (config/asgi.py), or by the first
# stream under a server without one.
hub = Hub()
