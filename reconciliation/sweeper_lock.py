"""The sweeper's lock in Redis: one scheduler sweeps a round, whichever takes it first, and no
scheduler sweeps again before the interval after that sweep has passed.

A round is marked swept when its sweep ends (`finish`): a second key, `<name>:swept`, that lives
for one interval. While it lives no scheduler takes the lock (the one that swept neither), so
however many schedulers run, and however their rounds fall, they sweep once per interval
between them, as one scheduler would. A scheduler that dies leaves at most that mark behind,
so another takes over within an interval of its last sweep (mid-sweep: once its lock expires).
`--once`, an operator's sweep now, passes over the mark (`take(now=True)`) but not a sweep under way.

Robust to a lost reply. Each scheduler process has a token of its own and the lock holds the
token of its holder, so a scheduler whose request reached Redis but whose answer was lost (a
network cut: the request waits in the socket and arrives when the cable is back, after the
client gave up) finds its own token at its next round and sweeps, instead of leaving the lock
to expire while every scheduler skips. Renewing and releasing are compare-and-set: a holder
never extends or deletes a lock it lost to another. The lock expires after `ttl_s` unless
renewed, which a sweep does as it makes progress: a scheduler that died or hangs holds it for
no longer than that. Two sweeps overlapping (a sweep that outlived its lock) are harmless: rows
are picked FOR UPDATE SKIP LOCKED and work is claimed (reconciliation/services/sweeper.py).
"""

from __future__ import annotations

import uuid
from functools import cached_property

import redis
from django.conf import settings
from redis.commands.core import Script


def sweeper_lock_key(namespace: str | None = None) -> str:
    """The lock's key: under the broker's namespace (DRAMATIQ_NAMESPACE), as the claims the sweeper
    takes are (config/claims.py), so that two deployments sharing one Redis under namespaces of
    their own each have their sweeper, and a Redis that lost its queues lost the lock with them."""
    namespace = namespace or settings.DRAMATIQ_BROKER["OPTIONS"]["namespace"]
    return f"{namespace}:reconciliation:sweeper-lock"


# Take the lock if it is free, or keep it if it is already ours (a take whose answer was lost);
# not while the round is marked swept, unless asked for a sweep now (ARGV[3]).
_TAKE = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Free the lock if it is still ours, and mark the round swept for ARGV[3] ms whoever holds it now
# (we swept either way); 1 if the lock was ours.
_FINISH = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SweeperLock:
    def __init__(self, client: redis.Redis, *, ttl_s: float, name: str) -> None:
        self.client = client
        self.name = name
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = uuid.uuid4().hex  # this process's, for its whole life

    @property
    def swept_mark(self) -> str:
        return f"{self.name}:swept"

    def take(self, *, now: bool = False) -> bool:
        """True if this process holds the lock now (newly, or still from an earlier take); False
        while another holds it or, unless `now`, while the last sweep's interval runs."""
        return self._script(_TAKE, "1" if now else "0") == 1

    def renew(self) -> bool:
        """Extend the lock by its TTL if this process still holds it; False if it lost it."""
        return self._script(_RENEW) == 1

    def release(self) -> bool:
        """Free the lock if this process still holds it; False if it had expired or was another's."""
        return self._script(_RELEASE) == 1

    def finish(self, *, interval_s: float) -> bool:
        """After a sweep: free the lock (False if it had expired or was another's) and mark the
        round swept for `interval_s`, the wait before anyone's next sweep."""
        return self._script(_FINISH, max(1, int(interval_s * 1000))) == 1

    def free_in_s(self) -> tuple[float, float]:
        """How long the lock, and the swept mark, still live (seconds; 0 if gone; -1 if a key
        has no expiry, which none of these scripts leaves)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.pttl(self.name)
        pipe.pttl(self.swept_mark)
        lock_ms, mark_ms = pipe.execute()
        return _seconds(lock_ms), _seconds(mark_ms)

    def _script(self, source: str, extra: object = "") -> int:
        return self._scripts[source](keys=[self.name, self.swept_mark], args=[self.token, self.ttl_ms, extra])

    @cached_property
    def _scripts(self) -> dict[str, Script]:
        return {source: self.client.register_script(source) for source in (_TAKE, _RENEW, _RELEASE, _FINISH)}


def _seconds(pttl_ms: int) -> float:
    return -1.0 if pttl_ms == -1 else max(pttl_ms, 0) / 1000
