"""The processing queue's claim and complete against real PostgreSQL, path by path: what a
claim returns for each tracker (hours, since, version, age, attempts) when the batch comes
back as arrays, and what one complete statement does with each kind of claimed row,
including a fold that lands while complete waits for a row's lock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from adapters.postgres import plans
from adapters.postgres.processing import (
    _COMPLETE_SQL,
    _DAILY_DELETE_SQL,
    _DAILY_SQL,
    _FOLD_SQL,
    _HOURLY_DELETE_SQL,
    _HOURLY_SQL,
    _UNGEOCODED_SQL,
    PostgresProcessingQueue,
    PostgresProcessingUnitOfWork,
)
from domain.ports.processing import Claim
from tests.integration.conftest import Stack
from tests.integration.test_processing import World, make_world

pytestmark = pytest.mark.integration

H = datetime(2026, 11, 20, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
async def world(stack: Stack) -> World:
    return await make_world(stack)


async def pool_of(w: World) -> asyncpg.Pool:
    c = w.stack.container
    assert c is not None
    pool: asyncpg.Pool = await c.db_pool.async_()
    return pool


async def queue_rows(pool: asyncpg.Pool) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM processing_queue")
    return {r["tracker_id"]: r for r in rows}


async def enqueue(
    pool: asyncpg.Pool,
    tracker: uuid.UUID,
    since: str,
    hours: list[str],
    enqueued: datetime,
    *,
    version: int = 1,
    attempts: int = 0,
    traceparents: tuple[str, ...] = (),
) -> None:
    await pool.execute(
        """INSERT INTO processing_queue (tracker_id, since, hours, version, enqueue_time,
               attempts, last_error, first_failure_time, last_failure_time, traceparents)
           VALUES ($1, $2::text::timestamptz, $3::text[]::timestamptz[], $4, $5::timestamptz,
                   $6::int, CASE WHEN $6 > 0 THEN 'failed' END,
                   CASE WHEN $6 > 0 THEN $5::timestamptz END,
                   CASE WHEN $6 > 0 THEN $5::timestamptz END, $7)""",
        tracker,
        since,
        hours,
        version,
        enqueued,
        attempts,
        list(traceparents),
    )


async def test_a_claim_returns_each_trackers_own_hours_and_fields(world: World) -> None:
    """Trackers with no hour, one, several (kept in order) and hours with no place in time
    (left out), a "since" before the year 1, several versions and attempts: each claim
    carries its own row's values; the oldest rows are claimed first."""
    pool = await pool_of(world)
    t = [await world.tracker() for _ in range(5)]
    now = datetime.now(UTC).replace(microsecond=0)
    h = [(H + k * HOUR).isoformat() for k in range(4)]
    rows = {
        t[0]: ("-infinity", [], 1, 0),
        t[1]: (h[0], [h[0]], 3, 0),
        t[2]: (h[1], [h[1], h[2], h[3]], 1, 2),
        t[3]: (h[0], ["-infinity", h[0], h[2], "infinity"], 7, 0),
        t[4]: (h[0], [h[3]], 1, 0),  # the newest: left for the next claim
    }
    for n, (tracker, (since, hours, version, attempts)) in enumerate(rows.items()):
        await enqueue(
            pool, tracker, since, hours, now + n * HOUR, version=version, attempts=attempts
        )
    queue = PostgresProcessingQueue(pool)
    token = uuid.uuid4()
    claims = await queue.claim(token, 4, 600)
    by_id = {c.tracker_id: c for c in claims}
    assert len(claims) == 4
    assert set(by_id) == set(t[:4])
    assert by_id[t[0]] == Claim(t[0], datetime(1, 1, 1, tzinfo=UTC), (), 1, now, 0)
    assert by_id[t[1]] == Claim(t[1], H, (H,), 3, now + HOUR, 0)
    three = (H + HOUR, H + 2 * HOUR, H + 3 * HOUR)
    assert by_id[t[2]] == Claim(t[2], H + HOUR, three, 1, now + 2 * HOUR, 2)
    assert by_id[t[3]] == Claim(t[3], H, (H, H + 2 * HOUR), 7, now + 3 * HOUR, 0)
    leased = await queue_rows(pool)
    assert {k for k, r in leased.items() if r["claim_token"] == token} == set(t[:4])
    [last] = await queue.claim(uuid.uuid4(), 10, 600)
    assert last.hours == (H + 3 * HOUR,)
    assert await queue.claim(uuid.uuid4(), 10, 600) == []


async def test_one_complete_statement_handles_every_kind_of_claimed_row(world: World) -> None:
    """In one batch: done (dequeued), done but newer reports came (kept, aged by them, out
    of quarantine), done after failures (dequeued), not done (kept as it was, quarantine
    too), a deleted tracker done or not (dropped), and a row of another claim (untouched)."""
    pool = await pool_of(world)
    done, newer, healed, undone, undone_q, other = [await world.tracker() for _ in range(6)]
    gone_done, gone_undone = uuid.uuid4(), uuid.uuid4()  # trackers that no longer exist
    now = datetime.now(UTC).replace(microsecond=0)
    for tracker in [done, newer, healed, undone, gone_done, gone_undone, other]:
        attempts = 2 if tracker in (newer, healed, undone) else 0
        await enqueue(pool, tracker, H.isoformat(), [H.isoformat()], now, attempts=attempts)
    await enqueue(pool, undone_q, H.isoformat(), [H.isoformat()], now, attempts=3)
    await pool.execute("UPDATE processing_queue SET retry_time = now() - interval '1 s'")
    queue = PostgresProcessingQueue(pool)
    token = uuid.uuid4()
    mine = await queue.claim(token, 100, 600)
    assert len(mine) == 8
    claims = [c for c in mine if c.tracker_id != other]
    await pool.execute(  # hand `other` to another worker
        "UPDATE processing_queue SET claim_token = $1 WHERE tracker_id = $2", uuid.uuid4(), other
    )
    later = now + timedelta(minutes=5)
    await pool.execute(  # as a fold does for a claimed row with new reports
        """UPDATE processing_queue SET version = version + 1, newer_time = $2
           WHERE tracker_id = $1""",
        newer,
        later,
    )
    processed = [c for c in claims if c.tracker_id not in (undone, undone_q, gone_undone)]
    async with PostgresProcessingUnitOfWork(pool) as uow:
        await uow.complete(token, processed, claims)
        await uow.commit()
    left = await queue_rows(pool)
    assert set(left) == {newer, undone, undone_q, other}
    for tracker in (newer, undone, undone_q):
        r = left[tracker]
        assert (r["claim_token"], r["claimed_until"], r["newer_time"]) == (None, None, None)
    assert left[newer]["enqueue_time"] == later
    assert left[newer]["version"] == 2
    assert (left[newer]["attempts"], left[newer]["last_error"], left[newer]["retry_time"]) == (
        0,
        None,
        None,
    )
    assert (left[newer]["first_failure_time"], left[newer]["last_failure_time"]) == (None, None)
    assert left[undone]["enqueue_time"] == now
    for tracker, attempts in ((undone, 2), (undone_q, 3)):  # still quarantined, as they were
        r = left[tracker]
        assert r["attempts"] == attempts
        assert r["last_error"] == "failed"
        assert r["first_failure_time"] == now
        assert r["retry_time"] is not None
    assert left[other]["claim_token"] not in (None, token)


async def test_a_fold_landing_while_complete_waits_keeps_the_row_queued(world: World) -> None:
    """A fold that updates a claimed row after complete's statement began, but before it
    could lock that row, commits first: complete then acts on the row as the fold left it
    (newer version: it stays queued, aged by the new reports; no lost work); the other rows
    of the batch are dequeued as usual."""
    pool = await pool_of(world)
    a, b = sorted([await world.tracker() for _ in range(2)])
    now = datetime.now(UTC).replace(microsecond=0)
    for tracker in (a, b):
        await enqueue(pool, tracker, H.isoformat(), [H.isoformat()], now)
    queue = PostgresProcessingQueue(pool)
    token = uuid.uuid4()
    claims = await queue.claim(token, 10, 600)
    assert len(claims) == 2
    folder = await pool.acquire()
    try:
        fold = folder.transaction()
        await fold.start()
        await folder.execute(
            "INSERT INTO processing_inbox (tracker_id, since, hours) VALUES ($1, $2, $3)",
            b,
            H + HOUR,
            [H + HOUR],
        )
        assert await folder.execute(_FOLD_SQL, 100) == "INSERT 0 1"  # b's row, locked

        async def complete() -> None:
            async with PostgresProcessingUnitOfWork(pool) as uow:
                await uow.complete(token, claims, claims)
                await uow.commit()

        completing = asyncio.create_task(complete())
        for _ in range(200):  # until complete waits for b's row
            waiting = await pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND datname = current_database()"""
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting == 1
        assert not completing.done()
        await fold.commit()
        await asyncio.wait_for(completing, 30)
    finally:
        await pool.release(folder)
    left = await queue_rows(pool)
    assert set(left) == {b}
    r = left[b]
    assert r["version"] == 2
    assert r["claim_token"] is None
    assert r["newer_time"] is None
    assert r["enqueue_time"] > now
    assert r["hours"] == [H, H + HOUR]
    [again] = await queue.claim(uuid.uuid4(), 10, 600)
    assert (again.tracker_id, again.version, again.hours) == (b, 2, (H, H + HOUR))


async def test_complete_finds_each_claimed_row_by_its_key_whatever_the_statistics(
    world: World,
) -> None:
    """Statistics taken while no row was claimed (claim_token all NULL) made the planner
    expect a single claimed row: it scanned the whole queue for the token and compared each
    claimed row it found with every id (12 s per batch of 10,000 in a benchmark). Complete
    now finds each claimed row by its key, and deletes and updates by key, whatever the
    statistics say."""
    pool = await pool_of(world)
    ids = [uuid.uuid4() for _ in range(3000)]
    await pool.execute(
        """INSERT INTO processing_queue (tracker_id, since, hours)
           SELECT id, $2, '{}' FROM unnest($1::uuid[]) AS id""",
        ids,
        H,
    )
    await pool.execute("ANALYZE processing_queue")
    queue = PostgresProcessingQueue(pool)
    token = uuid.uuid4()
    claims = await queue.claim(token, 2000, 600)
    assert len(claims) == 2000
    async with PostgresProcessingUnitOfWork(pool) as uow:
        await uow._c.execute(plans._OFF)  # as complete runs it
        plan = "\n".join(
            r[0]
            for r in await uow._c.fetch(
                "EXPLAIN " + _COMPLETE_SQL,
                [c.tracker_id for c in claims],
                token,
                [c.version for c in claims],
                [False] * len(claims),
            )
        )
    assert "Seq Scan on processing_queue" not in plan, plan
    assert plan.count("Index Scan using processing_queue_pkey") == 3, plan
    async with PostgresProcessingUnitOfWork(pool) as uow:
        await uow.complete(token, claims[:1500], claims)
        await uow.commit()
    left = await queue_rows(pool)
    # done: dequeued; not done: dropped too (no such trackers); never claimed: untouched
    assert set(left) == set(ids) - {c.tracker_id for c in claims}
    assert all(r["claim_token"] is None for r in left.values())


async def test_the_workers_batch_statements_probe_by_key_whatever_the_batchs_share(
    world: World,
) -> None:
    """Geocoding and the roll-ups find each tracker's reports and buckets by key even when
    the batch is all of the table (joined, the planner hashed the whole of `reports` once a
    batch was a sizeable share of it)."""
    pool = await pool_of(world)
    ids = sorted(uuid.uuid4() for _ in range(3000))
    await pool.execute(
        """INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7, confidence,
               horizontal_accuracy_m, source)
           SELECT id, $2, 525000000, 134000000, 3, 10, 'test' FROM unnest($1::uuid[]) AS id""",
        ids,
        H,
    )
    await pool.execute(
        """INSERT INTO location_hourly
           SELECT id, $2, 3, 1, $2, $2, 10, $2, 525000000, 134000000, NULL
           FROM unnest($1::uuid[]) AS id""",
        ids,
        H,
    )
    await pool.execute("ANALYZE reports")
    await pool.execute("ANALYZE location_hourly")
    hours = [H] * len(ids)
    async with PostgresProcessingUnitOfWork(pool) as uow:
        for sql in (_UNGEOCODED_SQL, _HOURLY_SQL, _DAILY_SQL):
            plan = "\n".join(r[0] for r in await uow._c.fetch("EXPLAIN " + sql, ids, hours))
            assert "Hash" not in plan, plan
            assert "Nested Loop" in plan, plan
        await uow._c.execute(plans._OFF)  # as execute_by_probes runs them
        for sql in (_HOURLY_DELETE_SQL, _DAILY_DELETE_SQL):
            plan = "\n".join(r[0] for r in await uow._c.fetch("EXPLAIN " + sql, ids, hours))
            assert "Seq Scan on location" not in plan, plan
            assert "Index Scan using location" in plan, plan
