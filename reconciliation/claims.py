"""The sweeper's window claims in Redis: work it paces by time is queued at most once a window.

SET NX PX for each name, in one Lua call, under the same namespace as the claims held until a
message is taken up (`config.claims`): the key expires on its own. For work the sweeper paces by
time (stale webhooks, owed compensations, audits, listing walks) and for its own per-booking
messages on the `reconciliation` queue, which are database work only: a copy queued after the
window is how a lost message is made good, and costs a row lock. A name held by a waiting
message (`config.claims.send_holding`) is not claimed either: its message does the work.
"""

from __future__ import annotations

from config.claims import claim_key, ms, script

# SET NX PX for every key, in one call: 1 where the key is newly claimed.
_CLAIM_WINDOWS = """
local claimed = {}
for i, key in ipairs(KEYS) do
  claimed[i] = redis.call('SET', key, '1', 'NX', 'PX', ARGV[1]) and 1 or 0
end
return claimed
"""

# The same, in order, until ARGV[2] keys are newly claimed: the rest are left untouched.
_CLAIM_FIRST_WINDOWS = """
local claimed = {}
local taken = 0
for i, key in ipairs(KEYS) do
  claimed[i] = 0
  if taken < tonumber(ARGV[2]) and redis.call('SET', key, '1', 'NX', 'PX', ARGV[1]) then
    claimed[i] = 1
    taken = taken + 1
  end
end
return claimed
"""


def claim_windows(names: list[str], ttl_s: float, *, limit: int | None = None) -> list[bool]:
    """Claim each name for `ttl_s` (one Lua call); True where newly claimed. With `limit`, the
    names are claimed in order until that many are newly claimed, and the rest left alone."""
    if not names:
        return []
    keys = [claim_key(name) for name in names]
    if limit is None:
        claimed = script(_CLAIM_WINDOWS)(keys=keys, args=[ms(ttl_s)])
    else:
        claimed = script(_CLAIM_FIRST_WINDOWS)(keys=keys, args=[ms(ttl_s), limit])
    return [flag == 1 for flag in claimed]
