"""The fetch queue and the account gate in Redis, each operation one Lua script (atomic).

Keys (``{p}`` is the prefix, ``fetch`` by default):
  {p}:due        ZSET tracker -> due time (ms): trackers waiting for their turn
  {p}:leases     ZSET tracker -> lease end (ms): trackers claimed by a fetcher
  {p}:owner      HASH tracker -> worker holding the claim
  {p}:claims:<w> SET  trackers claimed by worker w (to return them when w dies)
  {p}:workers    ZSET worker -> heartbeat deadline (ms)
  {p}:meta       HASH tracker -> FetchState.encode()
  {p}:synced     STRING time of the last full rebuild; missing = Redis lost the queue
  {p}:sync-lock  STRING the worker rebuilding the queue now
  {p}:account:<a>:lock / :next   one request at a time per account, and when the next may go
A tracker is in exactly one of ``due`` and ``leases``. Claims take the lowest due times first
(ZRANGEBYSCORE + ZREMRANGEBYRANK: one call for the whole batch), so every tracker due now is
served before a requeued one, whose due time lies at least one interval ahead.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions

from domain.errors import DependencyUnavailable
from domain.scheduling import (
    Claim,
    ClaimBatch,
    FetchState,
    QueueEntry,
    QueueStats,
    from_ms,
    to_ms,
)

T = TypeVar("T")

_CLAIM = """
local due, leases, owner, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta, synced = KEYS[5], KEYS[6]
local worker, now, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local limit, alive_until, cprefix = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local lost = redis.call('EXISTS', synced) == 0 and 1 or 0
local reclaimed = 0
-- workers whose heartbeat stopped: everything they hold goes back, due now
local dead = redis.call('ZRANGEBYSCORE', workers, '-inf', '(' .. ARGV[2], 'LIMIT', 0, 32)
for _, w in ipairs(dead) do
  if w ~= worker then
    local ckey = cprefix .. w
    for _, m in ipairs(redis.call('SMEMBERS', ckey)) do
      if redis.call('HGET', owner, m) == w then
        redis.call('ZREM', leases, m)
        redis.call('HDEL', owner, m)
        redis.call('ZADD', due, now, m)
        reclaimed = reclaimed + 1
      end
    end
    redis.call('DEL', ckey)
    redis.call('ZREM', workers, w)
  end
end
redis.call('ZADD', workers, alive_until, worker)
-- leases that ran out (a live but stuck worker)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. ARGV[2], 'LIMIT', 0, 1000)) do
  local w = redis.call('HGET', owner, m)
  if w then
    redis.call('SREM', cprefix .. w, m)
    redis.call('HDEL', owner, m)
  end
  redis.call('ZREM', leases, m)
  redis.call('ZADD', due, now, m)
  reclaimed = reclaimed + 1
end
-- the most overdue trackers, as one batch
local items = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local n = #items / 2
local out = {}
if n > 0 then
  redis.call('ZREMRANGEBYRANK', due, 0, n - 1)
  local lease_args, owner_args, members = {}, {}, {}
  for i = 1, n do
    local m = items[2 * i - 1]
    members[i] = m
    lease_args[2 * i - 1] = lease_until
    lease_args[2 * i] = m
    owner_args[2 * i - 1] = m
    owner_args[2 * i] = worker
  end
  redis.call('ZADD', leases, unpack(lease_args))
  redis.call('HSET', owner, unpack(owner_args))
  redis.call('SADD', cprefix .. worker, unpack(members))
  local metas = redis.call('HMGET', meta, unpack(members))
  for i = 1, n do
    out[i] = {members[i], items[2 * i], metas[i]}
  end
end
local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
return {lost, reclaimed, head[2] or '', out}
"""

_COMPLETE = """
local due, leases, owner, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker, ckey = ARGV[1], ARGV[2]
local due_args, meta_args, members = {}, {}, {}
for i = 3, #ARGV, 3 do
  local m = ARGV[i]
  if redis.call('HGET', owner, m) == worker then
    members[#members + 1] = m
    due_args[#due_args + 1] = ARGV[i + 1]
    due_args[#due_args + 1] = m
    meta_args[#meta_args + 1] = m
    meta_args[#meta_args + 1] = ARGV[i + 2]
  end
end
if #members > 0 then
  redis.call('ZREM', leases, unpack(members))
  redis.call('HDEL', owner, unpack(members))
  redis.call('SREM', ckey, unpack(members))
  redis.call('ZADD', due, unpack(due_args))
  redis.call('HSET', meta, unpack(meta_args))
end
return #members
"""

_LEAVE = """
local due, leases, owner, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker, ckey, now = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', ckey)) do
  if redis.call('HGET', owner, m) == worker then
    redis.call('ZREM', leases, m)
    redis.call('HDEL', owner, m)
    redis.call('ZADD', due, now, m)
    n = n + 1
  end
end
redis.call('DEL', ckey)
redis.call('ZREM', workers, worker)
return n
"""

_ADD_MISSING = """
local due, leases, meta = KEYS[1], KEYS[2], KEYS[3]
local n = 0
for i = 1, #ARGV, 3 do
  local m = ARGV[i]
  if not redis.call('ZSCORE', due, m) and not redis.call('ZSCORE', leases, m) then
    redis.call('ZADD', due, ARGV[i + 1], m)
    redis.call('HSET', meta, m, ARGV[i + 2])
    n = n + 1
  end
end
return n
"""

_REMOVE = """
local due, leases, owner, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cprefix = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local m = ARGV[i]
  n = n + redis.call('ZREM', due, m) + redis.call('ZREM', leases, m)
  local w = redis.call('HGET', owner, m)
  if w then
    redis.call('SREM', cprefix .. w, m)
    redis.call('HDEL', owner, m)
  end
  redis.call('HDEL', meta, m)
end
return n
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_GATE_ACQUIRE = """
local lock, nxt, workers = KEYS[1], KEYS[2], KEYS[3]
local holder, now, hold_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local allowed = tonumber(redis.call('GET', nxt) or '0')
if allowed > now then return allowed - now end
if redis.call('SET', lock, holder, 'NX', 'PX', hold_ms) then return 0 end
-- a holder whose heartbeat stopped (killed mid-request) does not keep the account
local current = redis.call('GET', lock)
local alive = current and redis.call('ZSCORE', workers, current)
if current == holder or not alive or tonumber(alive) < now then
  redis.call('SET', lock, holder, 'PX', hold_ms)
  return 0
end
local left = redis.call('PTTL', lock)
if left < 1 then return 1 end
return math.min(left, 250)
"""

_GATE_RELEASE = """
local lock, nxt = KEYS[1], KEYS[2]
local holder, next_ms, keep_ms = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', nxt, next_ms, 'PX', keep_ms)
if redis.call('GET', lock) == holder then redis.call('DEL', lock) end
return 1
"""

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)

_CHUNK = 2000


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except REDIS_ERRORS as exc:
        raise DependencyUnavailable("redis", type(exc).__name__) from exc


@asynccontextmanager
async def _unavailable() -> AsyncIterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise DependencyUnavailable("redis", type(exc).__name__) from exc


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisFetchQueue:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "fetch",
        worker_ttl: timedelta = timedelta(seconds=15),
    ) -> None:
        self._r = client
        self.prefix = prefix
        self._worker_ttl_ms = int(worker_ttl.total_seconds() * 1000)
        k = prefix + ":"
        self.due, self.leases, self.owner = k + "due", k + "leases", k + "owner"
        self.workers, self.meta, self.synced = k + "workers", k + "meta", k + "synced"
        self.claims_prefix, self.sync_lock = k + "claims:", k + "sync-lock"
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._leave = client.register_script(_LEAVE)
        self._add = client.register_script(_ADD_MISSING)
        self._remove = client.register_script(_REMOVE)
        self._unlock = client.register_script(_UNLOCK)

    async def claim(self, worker: str, limit: int, now: datetime, lease: timedelta) -> ClaimBatch:
        now_ms = to_ms(now)
        keys = [self.due, self.leases, self.owner, self.workers, self.meta, self.synced]
        args = [
            worker,
            now_ms,
            now_ms + int(lease.total_seconds() * 1000),
            limit,
            now_ms + self._worker_ttl_ms,  # the claimant is alive now
            self.claims_prefix,
        ]
        async with _unavailable():
            lost, reclaimed, head, items = await self._claim(keys=keys, args=args)
        claims = [
            Claim(
                tracker_id=uuid.UUID(_text(m)),
                due=from_ms(float(score)),
                state=FetchState.decode(_text(meta) if meta else None),
            )
            for m, score, meta in items
        ]
        next_due = from_ms(float(head)) if head not in (b"", "", None) else None
        return ClaimBatch(claims, next_due, lost=bool(lost), reclaimed=int(reclaimed))

    async def complete(self, worker: str, done: Sequence[tuple[uuid.UUID, FetchState]]) -> int:
        n = 0
        for start in range(0, len(done), _CHUNK):
            args: list[Any] = [worker, self.claims_prefix + worker]
            for tracker_id, state in done[start : start + _CHUNK]:
                assert state.next_due is not None, "a completed turn has a next due time"
                args += [str(tracker_id), to_ms(state.next_due), state.encode()]
            keys = [self.due, self.leases, self.owner, self.meta]
            async with _unavailable():
                n += int(await self._complete(keys=keys, args=args))
        return n

    async def heartbeat(self, worker: str, alive_until: datetime) -> None:
        await _guard(lambda: self._r.zadd(self.workers, {worker: to_ms(alive_until)}))

    async def leave(self, worker: str, now: datetime) -> int:
        keys = [self.due, self.leases, self.owner, self.workers]
        args = [worker, self.claims_prefix + worker, to_ms(now)]
        async with _unavailable():
            return int(await self._leave(keys=keys, args=args))

    async def members(self) -> set[uuid.UUID]:
        async with _unavailable():
            queued = await self._r.zrange(self.due, 0, -1)
            claimed = await self._r.zrange(self.leases, 0, -1)
        return {uuid.UUID(_text(m)) for m in [*queued, *claimed]}

    async def add_missing(self, entries: Sequence[tuple[uuid.UUID, datetime, FetchState]]) -> int:
        n = 0
        for start in range(0, len(entries), _CHUNK):
            args: list[Any] = []
            for tracker_id, due, state in entries[start : start + _CHUNK]:
                args += [str(tracker_id), to_ms(due), state.encode()]
            async with _unavailable():
                n += int(await self._add(keys=[self.due, self.leases, self.meta], args=args))
        return n

    async def remove(self, ids: Sequence[uuid.UUID]) -> int:
        n = 0
        for start in range(0, len(ids), _CHUNK):
            args = [self.claims_prefix, *map(str, ids[start : start + _CHUNK])]
            keys = [self.due, self.leases, self.owner, self.meta]
            async with _unavailable():
                n += int(await self._remove(keys=keys, args=args))
        return n

    async def mark_synced(self, now: datetime) -> None:
        await _guard(lambda: self._r.set(self.synced, to_ms(now)))

    async def try_lock_sync(self, worker: str, ttl: timedelta) -> bool:
        ms = int(ttl.total_seconds() * 1000)
        return bool(await _guard(lambda: self._r.set(self.sync_lock, worker, nx=True, px=ms)))

    async def unlock_sync(self, worker: str) -> None:
        async with _unavailable():
            await self._unlock(keys=[self.sync_lock], args=[worker])

    async def stats(self, now: datetime) -> QueueStats:
        now_ms = to_ms(now)
        async with _unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.zcard(self.due)
            pipe.zcount(self.due, "-inf", now_ms)
            pipe.zcard(self.leases)
            pipe.zcount(self.workers, now_ms, "+inf")
            pipe.zrange(self.due, 0, 0, withscores=True)
            queued, due_now, claimed, workers, head = await pipe.execute()
        return QueueStats(
            queued=int(queued),
            due_now=int(due_now),
            claimed=int(claimed),
            workers=int(workers),
            oldest_due=from_ms(head[0][1]) if head else None,
        )

    async def entry(self, tracker_id: uuid.UUID) -> QueueEntry | None:
        m = str(tracker_id)
        async with _unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.zscore(self.due, m)
            pipe.zscore(self.leases, m)
            pipe.hget(self.owner, m)
            pipe.hget(self.meta, m)
            due, lease, owner, meta = await pipe.execute()
        if due is None and lease is None:
            return None
        state = FetchState.decode(_text(meta) if meta else None)
        return QueueEntry(
            tracker_id=tracker_id,
            queued=due is not None,
            claimed_by=_text(owner) if owner else None,
            due=from_ms(due) if due is not None else state.next_due,
            lease_until=from_ms(lease) if lease is not None else None,
            state=state,
        )


class RedisAccountGate:
    """Holders are fetchers registered in the queue's ``workers`` (same prefix): a holder
    whose heartbeat stopped loses the account to the next one asking."""

    def __init__(self, client: aioredis.Redis, prefix: str = "fetch") -> None:
        self._prefix = prefix + ":account:"
        self._workers = prefix + ":workers"
        self._acquire = client.register_script(_GATE_ACQUIRE)
        self._release = client.register_script(_GATE_RELEASE)

    def _keys(self, account: str) -> list[str]:
        return [self._prefix + account + ":lock", self._prefix + account + ":next", self._workers]

    async def acquire(self, account: str, holder: str, now: datetime, hold: timedelta) -> float:
        args = [holder, to_ms(now), max(1, int(hold.total_seconds() * 1000))]
        async with _unavailable():
            wait_ms = int(await self._acquire(keys=self._keys(account), args=args))
        return wait_ms / 1000

    async def release(self, account: str, holder: str, next_allowed: datetime) -> None:
        args = [holder, to_ms(next_allowed), 24 * 3600 * 1000]
        async with _unavailable():
            await self._release(keys=self._keys(account), args=args)
