"""The sign-in throttle's contract, on the real Redis (one Lua call per attempt) and in
process memory (the fallback while Redis is down): the same scenarios hold for both. Then
the failover between them, and the bounded password hasher."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import argon2
import pytest
import redis.asyncio as aioredis

from adapters.clock import SystemClock
from adapters.redis.client import open_redis
from adapters.redis.throttle import RedisAttemptThrottle
from adapters.security import Argon2PasswordHasher
from adapters.throttle import FailoverAttemptThrottle, MemoryAttemptThrottle
from domain.errors import TooManyAttempts
from domain.throttling import AttemptLimit, ThrottleKey

pytestmark = pytest.mark.integration

LIMIT = AttemptLimit(3, timedelta(minutes=5), timedelta(seconds=30), timedelta(seconds=100))
SHORT = AttemptLimit(1, timedelta(minutes=5), timedelta(milliseconds=300), timedelta(seconds=1))


def key(name: str = "", limit: AttemptLimit = LIMIT) -> ThrottleKey:
    return ThrottleKey(name or uuid.uuid4().hex, limit)


@pytest.fixture(params=["redis", "memory"])
async def throttle(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[RedisAttemptThrottle | MemoryAttemptThrottle]:
    if request.param == "redis":
        yield RedisAttemptThrottle(redis_client, prefix=f"t{uuid.uuid4().hex[:8]}")
    else:
        yield MemoryAttemptThrottle(SystemClock())


async def test_the_attempt_after_the_limit_locks_the_key(throttle) -> None:
    k = key()
    assert [await throttle.attempt([k]) for _ in range(3)] == [None, None, None]
    wait = await throttle.attempt([k])
    assert wait is not None
    assert timedelta(seconds=29) < wait <= timedelta(seconds=30)
    again = await throttle.attempt([k])
    assert again is not None
    assert again <= wait


async def test_a_locked_key_blocks_the_attempt_without_counting_the_others(throttle) -> None:
    locked, free = key(), key()
    for _ in range(4):
        await throttle.attempt([locked])
    for _ in range(5):
        assert await throttle.attempt([locked, free]) is not None
    # ``free`` was not counted while the attempts were refused.
    assert [await throttle.attempt([free]) for _ in range(3)] == [None, None, None]


async def test_the_longest_lock_of_several_keys_wins(throttle) -> None:
    short, long = key(limit=SHORT), key()
    await throttle.attempt([short])
    for _ in range(3):
        await throttle.attempt([long])
    wait = await throttle.attempt([short, long])
    assert wait is not None
    assert wait > timedelta(seconds=1)


async def test_success_resets_one_key_and_hands_an_attempt_back_on_another(throttle) -> None:
    account, address = key(), key()
    for _ in range(3):
        assert await throttle.attempt([account, address]) is None
    await throttle.succeeded([account], [address])
    assert await throttle.attempt([account]) is None  # account: back to one
    assert await throttle.attempt([address]) is None  # address: 2 + 1 = 3
    assert await throttle.attempt([address]) is not None


async def test_a_refund_never_goes_below_nothing(throttle) -> None:
    k = key()
    await throttle.succeeded([], [k, k, k])
    assert [await throttle.attempt([k]) for _ in range(4)][-1] is not None


async def test_lockouts_end_and_the_next_one_is_longer(throttle) -> None:
    k = key(limit=SHORT)
    await throttle.attempt([k])
    first = await throttle.attempt([k])
    assert first is not None
    assert first <= timedelta(milliseconds=300)
    await asyncio.sleep(0.35)
    assert await throttle.attempt([k]) is None
    second = await throttle.attempt([k])
    assert second is not None
    assert timedelta(milliseconds=300) < second <= timedelta(seconds=0.6)


async def test_keys_of_the_redis_throttle_are_shared_by_replicas(
    redis_client: aioredis.Redis,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    one, two = (
        RedisAttemptThrottle(redis_client, prefix),
        RedisAttemptThrottle(redis_client, prefix),
    )
    k = key()
    for replica in (one, two, one):
        assert await replica.attempt([k]) is None
    assert await two.attempt([k]) is not None
    assert await one.attempt([k]) is not None
    stored = await redis_client.keys(f"{{{prefix}}}:*")
    assert stored
    assert all([await redis_client.pttl(s) > 0 for s in stored]), "every key expires"


async def test_without_redis_the_failover_counts_in_process_and_never_fails() -> None:
    dead = open_redis("redis://127.0.0.1:1/0", timeout_s=0.2)  # nothing listens on port 1
    try:
        failover = FailoverAttemptThrottle(
            RedisAttemptThrottle(dead, "t"), MemoryAttemptThrottle(SystemClock()), SystemClock()
        )
        k = key()
        assert [await failover.attempt([k]) for _ in range(3)] == [None, None, None]
        assert await failover.attempt([k]) is not None  # still limited, per process
        await failover.succeeded([k], [])
    finally:
        await dead.aclose()


async def test_a_redis_that_comes_back_is_used_again(redis_client: aioredis.Redis) -> None:
    class Flaky(RedisAttemptThrottle):
        down = True

        async def attempt(self, keys):  # type: ignore[no-untyped-def]
            if self.down:
                raise TimeoutError
            return await super().attempt(keys)

    primary = Flaky(redis_client, f"t{uuid.uuid4().hex[:8]}")
    failover = FailoverAttemptThrottle(
        primary, MemoryAttemptThrottle(SystemClock()), SystemClock(), retry_after=timedelta(0)
    )
    k = key()
    for _ in range(3):
        assert await failover.attempt([k]) is None  # counted in memory
    primary.down = False
    assert [await failover.attempt([k]) for _ in range(3)] == [None, None, None]  # in Redis
    assert await failover.attempt([k]) is not None


# -- the password hasher -------------------------------------------------------------------


async def test_the_hasher_runs_at_most_its_concurrency_and_refuses_beyond_its_queue() -> None:
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    hasher = Argon2PasswordHasher(cheap, concurrency=2, queue=3)
    try:
        stored = await hasher.hash("a-long-password-1")
        results = await asyncio.gather(
            *(hasher.verify(stored, "a-long-password-1") for _ in range(12)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, TooManyAttempts)]
        assert results.count(True) == 5
        assert len(refused) == 7
        assert refused[0].retry_after == timedelta(seconds=1)
        assert hasher.peak_running <= 2
        # Once the flood is over, everything is admitted again.
        assert await hasher.verify(stored, "a-long-password-1")
    finally:
        hasher.close()
