"""The fetch queue's contract, checked on the real Redis (Lua scripts) and on the in-memory
fake the use-case tests rely on: the same scenarios must hold for both."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from adapters.redis.queue import RedisAccountGate, RedisFetchQueue
from domain.errors import DependencyUnavailable
from tests.unit.fakes.fetching import FakeAccountGate, FakeFetchQueue

NOW = datetime(2026, 5, 1, 8, tzinfo=UTC)
LEASE = timedelta(minutes=2)
TTL = timedelta(seconds=15)
S = timedelta(seconds=1)


@pytest.fixture(params=["redis", "fake"])
async def queue(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[RedisFetchQueue | FakeFetchQueue]:
    if request.param == "redis":
        yield RedisFetchQueue(redis_client, prefix=f"t{uuid.uuid4().hex[:8]}", worker_ttl=TTL)
    else:
        yield FakeFetchQueue(worker_ttl=TTL)


def ids(n: int) -> list[uuid.UUID]:
    return sorted(uuid.uuid4() for _ in range(n))


async def fill(
    q: RedisFetchQueue | FakeFetchQueue, trackers: list[uuid.UUID], step: timedelta = S
) -> None:
    await q.add_missing([(t, NOW + step * i) for i, t in enumerate(trackers)])
    await q.mark_synced(NOW)


async def test_claims_take_only_due_trackers_most_overdue_first_in_batches(queue) -> None:
    trackers = ids(10)
    await fill(queue, trackers)
    first = await queue.claim("w1", 4, NOW + 6 * S, LEASE)
    assert [c.tracker_id for c in first.claims] == trackers[:4]
    assert [c.due for c in first.claims] == [NOW + i * S for i in range(4)]
    second = await queue.claim("w2", 100, NOW + 6 * S, LEASE)
    assert [c.tracker_id for c in second.claims] == trackers[4:7]
    assert second.next_due == NOW + 7 * S
    assert (await queue.claim("w3", 100, NOW + 6 * S, LEASE)).claims == []
    stats = await queue.stats(NOW + 6 * S)
    assert (stats.queued, stats.due_now, stats.claimed, stats.workers) == (3, 0, 7, 3)


async def test_completion_requeues_at_the_new_due_time(queue) -> None:
    [t] = ids(1)
    await fill(queue, [t])
    await queue.claim("w1", 10, NOW, LEASE)
    claimed = await queue.entry(t)
    assert claimed is not None
    assert (claimed.queued, claimed.claimed_by, claimed.lease_until) == (False, "w1", NOW + LEASE)
    nxt = NOW + timedelta(minutes=30)
    assert await queue.complete("w1", [(t, nxt)]) == 1
    entry = await queue.entry(t)
    assert entry is not None
    assert (entry.queued, entry.claimed_by, entry.due, entry.lease_until) == (True, None, nxt, None)
    assert (await queue.claim("w1", 10, nxt - S, LEASE)).claims == []
    [again] = (await queue.claim("w1", 10, nxt, LEASE)).claims
    assert again.due == nxt


async def test_only_the_holder_completes_a_claim(queue) -> None:
    [t] = ids(1)
    await fill(queue, [t])
    await queue.claim("w1", 10, NOW, LEASE)
    assert await queue.complete("w2", [(t, NOW + S)]) == 0
    entry = await queue.entry(t)
    assert entry is not None
    assert entry.claimed_by == "w1"


async def test_a_dead_workers_claims_go_to_the_next_claimant(queue) -> None:
    trackers = ids(5)
    await fill(queue, trackers, step=timedelta(0))
    assert len((await queue.claim("dead", 10, NOW, LEASE)).claims) == 5
    await queue.heartbeat("alive", NOW + timedelta(minutes=10))
    # within the dead worker's TTL nothing moves
    assert (await queue.claim("alive", 10, NOW + TTL - S, LEASE)).claims == []
    batch = await queue.claim("alive", 10, NOW + TTL + S, LEASE)
    assert sorted(c.tracker_id for c in batch.claims) == trackers
    assert batch.reclaimed == 5
    stale = [(t, NOW + timedelta(hours=1)) for t in trackers]
    assert await queue.complete("dead", stale) == 0


async def test_a_live_worker_keeps_its_claims_until_the_lease_runs_out(queue) -> None:
    [t] = ids(1)
    await fill(queue, [t])
    await queue.claim("slow", 10, NOW, LEASE)
    for at in (NOW + 30 * S, NOW + 90 * S):
        await queue.heartbeat("slow", at + TTL)
        assert (await queue.claim("other", 10, at, LEASE)).claims == []
    await queue.heartbeat("slow", NOW + LEASE + TTL)
    batch = await queue.claim("other", 10, NOW + LEASE + S, LEASE)
    assert [c.tracker_id for c in batch.claims] == [t]


async def test_a_holder_learns_which_claims_it_still_holds_and_renews_them(queue) -> None:
    """Issue 11: a fetcher that stalled longer than its TTL (a loaded machine) has lost its
    claims to another; before it asks the source, and again before it stores, it checks."""
    trackers = ids(4)
    await fill(queue, trackers, step=timedelta(0))
    await queue.claim("slow", 2, NOW, LEASE)
    await queue.claim("other", 2, NOW, LEASE)
    # only its own claims, their leases renewed from the check on
    assert await queue.hold("slow", trackers, NOW + 90 * S, LEASE) == set(trackers[:2])
    await queue.heartbeat("slow", NOW + LEASE + TTL)
    await queue.heartbeat("other", NOW + 10 * LEASE)
    batch = await queue.claim("other", 10, NOW + LEASE + S, LEASE)
    assert sorted(c.tracker_id for c in batch.claims) == trackers[2:]  # other's own, expired
    assert await queue.hold("slow", [], NOW + LEASE + S, LEASE) == set()
    # "slow" stalls past its TTL and its renewed lease: "other" takes its claims over
    batch = await queue.claim("other", 10, NOW + 90 * S + LEASE + S, LEASE)
    assert sorted(c.tracker_id for c in batch.claims) == trackers[:2]
    assert await queue.hold("slow", trackers, NOW + 90 * S + LEASE + 2 * S, LEASE) == set()
    entry = await queue.entry(trackers[0])
    assert entry is not None
    assert entry.claimed_by == "other"


async def test_leaving_returns_claims_due_now(queue) -> None:
    trackers = ids(3)
    await fill(queue, trackers, step=timedelta(0))
    await queue.claim("w1", 10, NOW, LEASE)
    assert await queue.leave("w1", NOW + S) == 3
    batch = await queue.claim("w2", 10, NOW + S, LEASE)
    assert sorted(c.tracker_id for c in batch.claims) == trackers


async def test_add_missing_never_duplicates_a_queued_or_claimed_tracker(queue) -> None:
    trackers = ids(4)
    await fill(queue, trackers[:2])
    await queue.claim("w1", 1, NOW, LEASE)
    entries = [(t, NOW) for t in trackers]
    assert await queue.add_missing(entries) == 2
    assert await queue.members() == set(trackers)
    stats = await queue.stats(NOW)
    assert stats.queued + stats.claimed == 4


async def test_removed_trackers_are_not_requeued_by_their_holder(queue) -> None:
    trackers = ids(2)
    await fill(queue, trackers, step=timedelta(0))
    claims = (await queue.claim("w1", 1, NOW, LEASE)).claims
    assert await queue.remove(trackers) == 2
    done = [(c.tracker_id, NOW + S) for c in claims]
    assert await queue.complete("w1", done) == 0
    assert await queue.members() == set()
    assert await queue.entry(trackers[0]) is None


async def test_the_queue_knows_when_it_was_never_rebuilt(queue) -> None:
    assert (await queue.claim("w1", 1, NOW, LEASE)).lost
    await queue.mark_synced(NOW)
    assert not (await queue.claim("w1", 1, NOW, LEASE)).lost


async def test_a_rebuild_under_way_is_no_lost_queue(queue) -> None:
    assert await queue.try_lock_sync("w1", LEASE)
    assert not (await queue.claim("w2", 1, NOW, LEASE)).lost
    await queue.unlock_sync("w1")
    assert (await queue.claim("w2", 1, NOW, LEASE)).lost


async def test_one_rebuild_at_a_time(queue) -> None:
    assert await queue.try_lock_sync("w1", LEASE)
    assert not await queue.try_lock_sync("w2", LEASE)
    await queue.unlock_sync("w2")
    assert not await queue.try_lock_sync("w2", LEASE)
    await queue.unlock_sync("w1")
    assert await queue.try_lock_sync("w2", LEASE)


async def test_concurrent_claimants_never_get_the_same_tracker(
    redis_client: aioredis.Redis,
) -> None:
    q = RedisFetchQueue(redis_client, prefix="race")
    trackers = ids(3000)
    await fill(q, trackers, step=timedelta(milliseconds=1))
    seen: list[uuid.UUID] = []

    async def claimant(name: str) -> None:
        while batch := (await q.claim(name, 64, NOW + timedelta(hours=1), LEASE)).claims:
            seen.extend(c.tracker_id for c in batch)
            await asyncio.sleep(0)

    await asyncio.gather(*(claimant(f"w{i}") for i in range(12)))
    assert len(seen) == len(set(seen)) == 3000


async def test_flushall_is_detected_as_a_lost_queue(redis_client: aioredis.Redis) -> None:
    q = RedisFetchQueue(redis_client, prefix="lost")
    await fill(q, ids(3))
    assert not (await q.claim("w", 1, NOW, LEASE)).lost
    await redis_client.flushdb()
    batch = await q.claim("w", 1, NOW, LEASE)
    assert batch.lost
    assert batch.claims == []


async def test_an_unreachable_redis_is_dependency_unavailable() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        with pytest.raises(DependencyUnavailable):
            await RedisFetchQueue(client).claim("w", 1, NOW, LEASE)
        with pytest.raises(DependencyUnavailable):
            await RedisAccountGate(client).acquire("a", "w", NOW, LEASE)
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "fake"])
async def gate_and_queue(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> tuple[RedisAccountGate | FakeAccountGate, RedisFetchQueue | FakeFetchQueue]:
    if request.param == "redis":
        return RedisAccountGate(redis_client, "g"), RedisFetchQueue(redis_client, "g")
    q = FakeFetchQueue()
    return FakeAccountGate(q), q


async def test_one_holder_per_account_and_the_pace_after_release(gate_and_queue) -> None:
    gate, queue = gate_and_queue
    for w in ("w1", "w2"):
        await queue.heartbeat(w, NOW + timedelta(hours=1))
    assert await gate.acquire("a1", "w1", NOW, LEASE) == 0
    assert await gate.acquire("a1", "w2", NOW, LEASE) > 0
    assert await gate.acquire("a2", "w2", NOW, LEASE) == 0
    await gate.release("a1", "w1", NOW + 5 * S)
    wait = await gate.acquire("a1", "w2", NOW + 2 * S, LEASE)
    assert wait == pytest.approx(3.0)
    assert await gate.acquire("a1", "w2", NOW + 5 * S, LEASE) == 0


async def test_a_holder_whose_heartbeat_stopped_loses_the_account(gate_and_queue) -> None:
    gate, queue = gate_and_queue
    await queue.heartbeat("w1", NOW + TTL)
    await queue.heartbeat("w2", NOW + timedelta(hours=1))
    assert await gate.acquire("a1", "w1", NOW, LEASE) == 0
    assert await gate.acquire("a1", "w2", NOW + TTL - S, LEASE) > 0
    assert await gate.acquire("a1", "w2", NOW + TTL + S, LEASE) == 0
    assert await gate.acquire("a1", "w1", NOW + TTL + S, LEASE) > 0


async def test_an_account_without_a_record_of_its_last_request_waits_its_pace_first(
    gate_and_queue,
) -> None:
    gate, queue = gate_and_queue
    await queue.heartbeat("w1", NOW + timedelta(hours=1))
    pace = timedelta(milliseconds=300)
    assert await gate.acquire("a1", "w1", NOW, LEASE, pace) == pytest.approx(0.3)
    assert await gate.acquire("a1", "w1", NOW + pace, LEASE, pace) == 0
    await gate.release("a1", "w1", NOW + 2 * pace)
    assert await gate.acquire("a1", "w1", NOW + pace, LEASE, pace) == pytest.approx(0.3)


async def test_a_lost_record_makes_the_account_wait_its_pace(
    redis_client: aioredis.Redis,
) -> None:
    gate, queue = RedisAccountGate(redis_client, "lost"), RedisFetchQueue(redis_client, "lost")
    await queue.heartbeat("w1", NOW + timedelta(hours=1))
    pace = timedelta(seconds=1)
    await gate.release("a1", "w1", NOW)
    assert await gate.acquire("a1", "w1", NOW, LEASE, pace) == 0
    await gate.release("a1", "w1", NOW + pace)
    await redis_client.flushdb()
    assert await gate.acquire("a1", "w2", NOW + pace / 2, LEASE, pace) == pytest.approx(1.0)


async def test_a_lock_outlives_nobody_its_hold_ends_it(redis_client: aioredis.Redis) -> None:
    gate, queue = RedisAccountGate(redis_client, "crash"), RedisFetchQueue(redis_client, "crash")
    await queue.heartbeat("w1", NOW + timedelta(hours=1))
    await queue.heartbeat("w2", NOW + timedelta(hours=1))
    assert await gate.acquire("a1", "w1", NOW, timedelta(milliseconds=200)) == 0
    assert await gate.acquire("a1", "w2", NOW, LEASE) > 0
    await asyncio.sleep(0.3)
    assert await gate.acquire("a1", "w2", NOW, LEASE) == 0


async def test_a_renewed_hold_outlives_its_first_term_and_only_the_holder_renews(
    redis_client: aioredis.Redis,
) -> None:
    gate, queue = RedisAccountGate(redis_client, "renew"), RedisFetchQueue(redis_client, "renew")
    await queue.heartbeat("w1", NOW + timedelta(hours=1))
    await queue.heartbeat("w2", NOW + timedelta(hours=1))
    hold = timedelta(milliseconds=300)
    assert await gate.acquire("a1", "w1", NOW, hold) == 0
    for _ in range(3):  # 0.6 s in all, twice the first term
        await asyncio.sleep(0.2)
        assert await gate.renew("a1", "w1", hold)
        assert await gate.acquire("a1", "w2", NOW, LEASE) > 0
    assert not await gate.renew("a1", "w2", hold)
    await gate.release("a1", "w1", NOW)
    assert not await gate.renew("a1", "w1", hold)
    assert await gate.acquire("a1", "w2", NOW, LEASE) == 0


async def test_a_claim_is_filled_with_trackers_due_within_the_horizon_only_if_one_is_due(
    queue,
) -> None:
    trackers = ids(10)
    await fill(queue, trackers)  # due at NOW, NOW + 1 s, ... NOW + 9 s
    early = await queue.claim("w1", 64, NOW - S, LEASE, horizon=5 * S)
    assert early.claims == []  # nothing due yet: no request just to fill one
    batch = await queue.claim("w1", 4, NOW, LEASE, horizon=5 * S)
    assert [c.tracker_id for c in batch.claims] == trackers[:4]  # due first, then soonest
    rest = await queue.claim("w2", 64, NOW + 4 * S, LEASE, horizon=3 * S)
    assert [c.tracker_id for c in rest.claims] == trackers[4:8]
    assert [c.due for c in rest.claims] == [NOW + i * S for i in range(4, 8)]
