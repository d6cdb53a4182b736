"""The fetch queue and the account gate in Redis, each operation one Lua script (atomic).

Keys (``{p}`` is the prefix, ``fetch`` by default, as a hash tag: ``{fetch}:due``; every key
of one queue is in one Redis Cluster slot, so each script call touches one slot):
  {p}:due         ZSET tracker -> due time (ms): trackers waiting for their turn
  {p}:leases:<w>  ZSET tracker -> lease end (ms): trackers claimed by fetcher w
  {p}:workers     ZSET fetcher -> heartbeat deadline (ms)
  {p}:synced      STRING time of the last full rebuild; missing = Redis lost the queue
  {p}:sync-lock   STRING the fetcher rebuilding the queue now
  {p}:lease-scan  STRING when claimants next look for expired leases (once a second)
  {p}:account:<a>:lock / :next   one request at a time per account, and when the next may go
  {p}:capacity    HASH the fleet's capacity figure, as the last rebuild computed it
A tracker is in exactly one of ``due`` and the ``leases`` of one fetcher. Claims take the
lowest due times first (ZRANGEBYSCORE + ZREMRANGEBYRANK: one call for the whole batch), so
every tracker due now is served before a requeued one, whose due time lies at least one
interval ahead; a claim that finds one tracker due fills the batch with those due soonest
within the horizon. Per tracker a claim costs two sorted-set writes and a completion three; the
trackers' counts and backoff live in PostgreSQL (``fetch_state``), read with their keys.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from adapters.redis.client import hash_tagged
from domain.errors import DependencyUnavailable
from domain.scheduling import (
    Capacity,
    Claim,
    ClaimBatch,
    QueuePlace,
    QueueStats,
    from_ms,
    to_ms,
)

_CLAIM = """
local due, workers, synced, scan, sync_lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, now, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local limit, alive_until, lprefix = tonumber(ARGV[4]), ARGV[5], ARGV[6]
-- lost: no record of a rebuild, and none under way (a claim during the first rebuild would
-- otherwise ask for a second, full one right after it)
local lost = 0
if redis.call('EXISTS', synced) == 0 and redis.call('EXISTS', sync_lock) == 0 then lost = 1 end
local reclaimed = 0
local function back(members)
  for i = 1, #members, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #members) do
      args[#args + 1] = now
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', due, unpack(args))
  end
  reclaimed = reclaimed + #members
end
-- fetchers whose heartbeat stopped: everything they hold goes back, due now
for _, w in ipairs(redis.call('ZRANGEBYSCORE', workers, '-inf', '(' .. ARGV[2], 'LIMIT', 0, 32)) do
  if w ~= worker then
    back(redis.call('ZRANGE', lprefix .. w, 0, -1))
    redis.call('DEL', lprefix .. w)
    redis.call('ZREM', workers, w)
  end
end
redis.call('ZADD', workers, alive_until, worker)
-- leases that ran out (a live but stuck fetcher): looked for at most once a second
if now >= tonumber(redis.call('GET', scan) or '0') then
  redis.call('SET', scan, now + 1000, 'PX', 60000)
  for _, w in ipairs(redis.call('ZRANGE', workers, 0, -1)) do
    local lk = lprefix .. w
    local expired = redis.call('ZRANGEBYSCORE', lk, '-inf', '(' .. ARGV[2], 'LIMIT', 0, 1000)
    if #expired > 0 then
      redis.call('ZREM', lk, unpack(expired))
      back(expired)
    end
  end
end
-- the most overdue trackers, as one batch; if one is due, filled with the soonest due
-- within the horizon (they sort after every tracker due now)
local items = {}
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[2] and tonumber(first[2]) <= now then
  items = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[7], 'WITHSCORES', 'LIMIT', 0, limit)
end
local n = #items / 2
if n > 0 then
  redis.call('ZREMRANGEBYRANK', due, 0, n - 1)
  local lease_args = {}
  for i = 1, n do
    lease_args[2 * i - 1] = lease_until
    lease_args[2 * i] = items[2 * i - 1]
  end
  redis.call('ZADD', lprefix .. worker, unpack(lease_args))
end
local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
return {lost, reclaimed, head[2] or '', items}
"""

_COMPLETE = """
-- ARGV[1]: "tracker due_ms tracker due_ms ...", one argument for the batch (cheaper to send
-- than two per tracker)
local due, leases = KEYS[1], KEYS[2]
local members, dues = {}, {}
for m, d in string.gmatch(ARGV[1], '(%S+) (%S+)') do
  members[#members + 1] = m
  dues[#dues + 1] = d
end
if #members == 0 then return 0 end
local held = redis.call('ZMSCORE', leases, unpack(members))
local due_args, mine = {}, {}
for i = 1, #members do
  if held[i] then
    mine[#mine + 1] = members[i]
    due_args[#due_args + 1] = dues[i]
    due_args[#due_args + 1] = members[i]
  end
end
if #mine > 0 then
  redis.call('ZREM', leases, unpack(mine))
  redis.call('ZADD', due, unpack(due_args))
end
return #mine
"""

_HOLD = """
-- ARGV[4]: "tracker tracker ...": which of them the worker still holds; those leases renewed
local leases, workers = KEYS[1], KEYS[2]
local worker, lease_until, alive_until = ARGV[1], ARGV[2], ARGV[3]
local members = {}
for m in string.gmatch(ARGV[4], '%S+') do members[#members + 1] = m end
if #members == 0 then return {} end
local held = redis.call('ZMSCORE', leases, unpack(members))
local mine, args = {}, {}
for i = 1, #members do
  if held[i] then
    mine[#mine + 1] = members[i]
    args[#args + 1] = lease_until
    args[#args + 1] = members[i]
  end
end
if #mine > 0 then
  redis.call('ZADD', leases, 'XX', unpack(args))
  redis.call('ZADD', workers, alive_until, worker)
end
return mine
"""

_LEAVE = """
local due, leases, workers = KEYS[1], KEYS[2], KEYS[3]
local worker, now = ARGV[1], ARGV[2]
local held = redis.call('ZRANGE', leases, 0, -1)
for i = 1, #held, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #held) do
    args[#args + 1] = now
    args[#args + 1] = held[j]
  end
  redis.call('ZADD', due, unpack(args))
end
redis.call('DEL', leases)
redis.call('ZREM', workers, worker)
return #held
"""

_ADD_MISSING = """
local due, workers, lprefix = KEYS[1], KEYS[2], ARGV[1]
local lease_keys = {}
for _, w in ipairs(redis.call('ZRANGE', workers, 0, -1)) do
  lease_keys[#lease_keys + 1] = lprefix .. w
end
local n = 0
for i = 2, #ARGV, 2 do
  local m = ARGV[i]
  local present = redis.call('ZSCORE', due, m)
  for _, k in ipairs(lease_keys) do
    if present then break end
    present = redis.call('ZSCORE', k, m)
  end
  if not present then
    redis.call('ZADD', due, ARGV[i + 1], m)
    n = n + 1
  end
end
return n
"""

_REMOVE = """
local due, workers, lprefix = KEYS[1], KEYS[2], ARGV[1]
local members = {}
for i = 2, #ARGV do members[#members + 1] = ARGV[i] end
local n = redis.call('ZREM', due, unpack(members))
for _, w in ipairs(redis.call('ZRANGE', workers, 0, -1)) do
  n = n + redis.call('ZREM', lprefix .. w, unpack(members))
end
return n
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_GATE_ACQUIRE = """
local lock, nxt, workers = KEYS[1], KEYS[2], KEYS[3]
local holder, now, hold_ms, pace_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local recorded = redis.call('GET', nxt)
if not recorded and pace_ms > 0 then
  -- no record of the last request (new account, or Redis lost it): it may have been just now
  redis.call('SET', nxt, now + pace_ms, 'PX', 86400000)
  return pace_ms
end
local allowed = tonumber(recorded or '0')
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

_GATE_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
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


def transient_error(exc: BaseException) -> DependencyUnavailable | None:
    """Redis connection failures and timeouts as the domain error they stand for."""
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return DependencyUnavailable("redis", type(exc).__name__)
    return None


@asynccontextmanager
async def _unavailable() -> AsyncIterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise DependencyUnavailable("redis", type(exc).__name__) from exc


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _capacity(raw: dict[Any, Any]) -> Capacity | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        return Capacity(
            trackers=int(fields["trackers"]),
            accounts=int(fields["accounts"]),
            needed_per_interval=int(fields["needed"]),
            allowed_per_interval=float(fields["allowed"]),
            accounts_needed=int(fields["accounts_needed"]),
        )
    except (KeyError, ValueError):
        return None


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
        k = hash_tagged(prefix) + ":"
        self.due, self.workers, self.synced = k + "due", k + "workers", k + "synced"
        self.leases_prefix, self.sync_lock = k + "leases:", k + "sync-lock"
        self.lease_scan = k + "lease-scan"
        self.capacity = k + "capacity"
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._leave = client.register_script(_LEAVE)
        self._hold = client.register_script(_HOLD)
        self._add = client.register_script(_ADD_MISSING)
        self._remove = client.register_script(_REMOVE)
        self._unlock = client.register_script(_UNLOCK)

    async def claim(
        self,
        worker: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        horizon: timedelta = timedelta(0),
    ) -> ClaimBatch:
        now_ms = to_ms(now)
        keys = [self.due, self.workers, self.synced, self.lease_scan, self.sync_lock]
        args = [
            worker,
            now_ms,
            now_ms + int(lease.total_seconds() * 1000),
            limit,
            now_ms + self._worker_ttl_ms,  # the claimant is alive now
            self.leases_prefix,
            now_ms + max(0, int(horizon.total_seconds() * 1000)),
        ]
        async with _unavailable():
            lost, reclaimed, head, items = await self._claim(keys=keys, args=args)
        claims = [
            Claim(uuid.UUID(_text(items[i])), from_ms(float(items[i + 1])))
            for i in range(0, len(items), 2)
        ]
        next_due = from_ms(float(head)) if head not in (b"", "", None) else None
        return ClaimBatch(claims, next_due, lost=bool(lost), reclaimed=int(reclaimed))

    async def complete(self, worker: str, done: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        n = 0
        keys = [self.due, self.leases_prefix + worker]
        for start in range(0, len(done), _CHUNK):
            packed = " ".join(
                f"{tracker_id} {to_ms(due)}" for tracker_id, due in done[start : start + _CHUNK]
            )
            async with _unavailable():
                n += int(await self._complete(keys=keys, args=[packed]))
        return n

    async def hold(
        self, worker: str, ids: Sequence[uuid.UUID], now: datetime, lease: timedelta
    ) -> set[uuid.UUID]:
        now_ms = to_ms(now)
        keys = [self.leases_prefix + worker, self.workers]
        until = now_ms + int(lease.total_seconds() * 1000)
        held: set[uuid.UUID] = set()
        for start in range(0, len(ids), _CHUNK):
            packed = " ".join(map(str, ids[start : start + _CHUNK]))
            args = [worker, until, now_ms + self._worker_ttl_ms, packed]
            async with _unavailable():
                mine = await self._hold(keys=keys, args=args)
            held.update(uuid.UUID(_text(m)) for m in mine)
        return held

    async def heartbeat(self, worker: str, alive_until: datetime) -> None:
        async with _unavailable():
            await self._r.zadd(self.workers, {worker: to_ms(alive_until)})

    async def leave(self, worker: str, now: datetime) -> int:
        keys = [self.due, self.leases_prefix + worker, self.workers]
        async with _unavailable():
            return int(await self._leave(keys=keys, args=[worker, to_ms(now)]))

    async def _worker_names(self) -> list[str]:
        async with _unavailable():
            return [_text(w) for w in await self._r.zrange(self.workers, 0, -1)]

    async def members(self) -> set[uuid.UUID]:
        workers = await self._worker_names()
        async with _unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.zrange(self.due, 0, -1)
            for w in workers:
                pipe.zrange(self.leases_prefix + w, 0, -1)
            found = await pipe.execute()
        return {uuid.UUID(_text(m)) for members in found for m in members}

    async def add_missing(self, entries: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        n = 0
        for start in range(0, len(entries), _CHUNK):
            args: list[Any] = [self.leases_prefix]
            for tracker_id, due in entries[start : start + _CHUNK]:
                args += [str(tracker_id), to_ms(due)]
            async with _unavailable():
                n += int(await self._add(keys=[self.due, self.workers], args=args))
        return n

    async def remove(self, ids: Sequence[uuid.UUID]) -> int:
        n = 0
        for start in range(0, len(ids), _CHUNK):
            args = [self.leases_prefix, *map(str, ids[start : start + _CHUNK])]
            async with _unavailable():
                n += int(await self._remove(keys=[self.due, self.workers], args=args))
        return n

    async def mark_synced(self, now: datetime) -> None:
        async with _unavailable():
            await self._r.set(self.synced, to_ms(now))

    async def last_synced(self) -> datetime | None:
        async with _unavailable():
            raw = await self._r.get(self.synced)
        return from_ms(float(raw)) if raw is not None else None

    async def try_lock_sync(self, worker: str, ttl: timedelta) -> bool:
        ms = int(ttl.total_seconds() * 1000)
        async with _unavailable():
            return bool(await self._r.set(self.sync_lock, worker, nx=True, px=ms))

    async def unlock_sync(self, worker: str) -> None:
        async with _unavailable():
            await self._unlock(keys=[self.sync_lock], args=[worker])

    async def stats(self, now: datetime) -> QueueStats:
        now_ms = to_ms(now)
        workers = await self._worker_names()
        async with _unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.zcard(self.due)
            pipe.zcount(self.due, "-inf", now_ms)
            pipe.zcount(self.workers, now_ms, "+inf")
            pipe.zrange(self.due, 0, 0, withscores=True)
            pipe.hgetall(self.capacity)
            for w in workers:
                pipe.zcard(self.leases_prefix + w)
            queued, due_now, alive, head, cap, *held = await pipe.execute()
        return QueueStats(
            queued=int(queued),
            due_now=int(due_now),
            claimed=sum(int(h) for h in held),
            workers=int(alive),
            oldest_due=from_ms(head[0][1]) if head else None,
            capacity=_capacity(cap),
        )

    async def publish_capacity(self, capacity: Capacity, now: datetime) -> None:
        fields = {
            "trackers": capacity.trackers,
            "accounts": capacity.accounts,
            "needed": capacity.needed_per_interval,
            "allowed": repr(capacity.allowed_per_interval),
            "accounts_needed": capacity.accounts_needed,
            "time": to_ms(now),
        }
        async with _unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self.capacity, mapping=fields)
            pipe.pexpire(self.capacity, 24 * 3600 * 1000)
            await pipe.execute()

    async def entry(self, tracker_id: uuid.UUID) -> QueuePlace | None:
        m = str(tracker_id)
        workers = await self._worker_names()
        async with _unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.zscore(self.due, m)
            for w in workers:
                pipe.zscore(self.leases_prefix + w, m)
            due, *leases = await pipe.execute()
        holder = next(((w, lease) for w, lease in zip(workers, leases, strict=True) if lease), None)
        if due is None and holder is None:
            return None
        return QueuePlace(
            tracker_id=tracker_id,
            queued=due is not None,
            claimed_by=holder[0] if holder else None,
            due=from_ms(due) if due is not None else None,
            lease_until=from_ms(holder[1]) if holder else None,
        )


class RedisAccountGate:
    """Holders are fetchers registered in the queue's ``workers`` (same prefix): a holder
    whose heartbeat stopped loses the account to the next one asking."""

    def __init__(self, client: aioredis.Redis, prefix: str = "fetch") -> None:
        self._prefix = hash_tagged(prefix) + ":account:"
        self._workers = hash_tagged(prefix) + ":workers"
        self._acquire = client.register_script(_GATE_ACQUIRE)
        self._renew = client.register_script(_GATE_RENEW)
        self._release = client.register_script(_GATE_RELEASE)

    def _keys(self, account: str) -> list[str]:
        return [self._prefix + account + ":lock", self._prefix + account + ":next", self._workers]

    async def acquire(
        self,
        account: str,
        holder: str,
        now: datetime,
        hold: timedelta,
        pace: timedelta = timedelta(0),
    ) -> float:
        args = [
            holder,
            to_ms(now),
            max(1, int(hold.total_seconds() * 1000)),
            int(pace.total_seconds() * 1000),
        ]
        async with _unavailable():
            wait_ms = int(await self._acquire(keys=self._keys(account), args=args))
        return wait_ms / 1000

    async def renew(self, account: str, holder: str, hold: timedelta) -> bool:
        ms = max(1, int(hold.total_seconds() * 1000))
        async with _unavailable():
            return bool(await self._renew(keys=self._keys(account)[:1], args=[holder, ms]))

    async def release(self, account: str, holder: str, next_allowed: datetime) -> None:
        args = [holder, to_ms(next_allowed), 24 * 3600 * 1000]
        async with _unavailable():
            await self._release(keys=self._keys(account), args=args)
