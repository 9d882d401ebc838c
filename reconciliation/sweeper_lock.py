"""The sweeper's lock in Redis: one scheduler sweeps a round, whichever takes it first.

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
from redis.commands.core import Script

# Take the lock if it is free, or keep it if it is already ours (a take whose answer was lost).
_TAKE = """
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


class SweeperLock:
    def __init__(self, client: redis.Redis, *, ttl_s: float, name: str) -> None:
        self.client = client
        self.name = name
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = uuid.uuid4().hex  # this process's, for its whole life

    def take(self) -> bool:
        """True if this process holds the lock now (newly, or still from an earlier take)."""
        return self._script(_TAKE) == 1

    def renew(self) -> bool:
        """Extend the lock by its TTL if this process still holds it; False if it lost it."""
        return self._script(_RENEW) == 1

    def release(self) -> bool:
        """Free the lock if this process still holds it; False if it had expired or was another's."""
        return self._script(_RELEASE) == 1

    def _script(self, source: str) -> int:
        return self._scripts[source](keys=[self.name], args=[self.token, self.ttl_ms])

    @cached_property
    def _scripts(self) -> dict[str, Script]:
        return {source: self.client.register_script(source) for source in (_TAKE, _RENEW, _RELEASE)}
