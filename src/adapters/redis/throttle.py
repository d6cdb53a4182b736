"""Sign-in attempts counted in Redis, so that the limits hold across replicas: one Lua call
per attempt computes the rule of ``domain.throttling`` atomically."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from adapters.redis.client import hash_tagged
from domain.errors import DependencyUnavailable
from domain.throttling import STRIKE_MEMORY, ThrottleKey

# KEYS: per key (count, lock, strikes). ARGV[1]: number of keys; then per key
# max_attempts, window_ms, first_lockout_ms, max_lockout_ms, strike_memory_ms.
# Returns 0 (go ahead) or the milliseconds to wait.
_ATTEMPT = """
local n = tonumber(ARGV[1])
local wait = 0
for i = 0, n - 1 do
  local t = redis.call('PTTL', KEYS[3 * i + 2])
  if t > wait then wait = t end
end
if wait > 0 then return wait end
for i = 0, n - 1 do
  local a = 2 + 5 * i
  local count = redis.call('INCR', KEYS[3 * i + 1])
  if count == 1 then redis.call('PEXPIRE', KEYS[3 * i + 1], ARGV[a + 1]) end
  if count > tonumber(ARGV[a]) then
    local strikes = redis.call('INCR', KEYS[3 * i + 3])
    redis.call('PEXPIRE', KEYS[3 * i + 3], ARGV[a + 4])
    local lock = tonumber(ARGV[a + 3])
    if strikes < 40 then
      lock = math.min(tonumber(ARGV[a + 2]) * 2 ^ (strikes - 1), lock)
    end
    lock = math.floor(lock)
    redis.call('SET', KEYS[3 * i + 2], '1', 'PX', lock)
    redis.call('DEL', KEYS[3 * i + 1])
    if lock > wait then wait = lock end
  end
end
return wait
"""

# KEYS: count keys to clear, then count keys to hand one attempt back on. ARGV[1]: how many
# to clear.
_SUCCEEDED = """
local reset = tonumber(ARGV[1])
for i = 1, #KEYS do
  if i <= reset then
    redis.call('DEL', KEYS[i])
  elseif redis.call('EXISTS', KEYS[i]) == 1 and redis.call('DECR', KEYS[i]) <= 0 then
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""


def _ms(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


class RedisAttemptThrottle:
    def __init__(self, client: aioredis.Redis, prefix: str = "login") -> None:
        # one hash tag: a call's keys (account and address) are in one Cluster slot
        self._client, self._prefix = client, hash_tagged(prefix)
        self._attempt = client.register_script(_ATTEMPT)
        self._succeeded = client.register_script(_SUCCEEDED)

    def _key(self, key: ThrottleKey, part: str) -> str:
        return f"{self._prefix}:{key.name}:{part}"

    async def _run(self, script: Any, keys: list[str], args: list[int]) -> int:
        try:
            return int(await script(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", str(exc)) from None

    async def attempt(self, keys: Sequence[ThrottleKey]) -> timedelta | None:
        names: list[str] = []
        args = [len(keys)]
        for key in keys:
            names += [self._key(key, "n"), self._key(key, "lock"), self._key(key, "strikes")]
            limit = key.limit
            args += [
                limit.max_attempts,
                _ms(limit.window),
                _ms(limit.first_lockout),
                _ms(limit.max_lockout),
                _ms(STRIKE_MEMORY),
            ]
        wait_ms = await self._run(self._attempt, names, args)
        return timedelta(milliseconds=wait_ms) if wait_ms > 0 else None

    async def succeeded(self, reset: Sequence[ThrottleKey], refund: Sequence[ThrottleKey]) -> None:
        names = [self._key(k, "n") for k in (*reset, *refund)]
        if names:
            await self._run(self._succeeded, names, [len(reset)])
