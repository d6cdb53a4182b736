"""Failure isolation and the processing queue's concurrency, against real PostgreSQL and the
real gRPC stack: a tracker whose processing fails is quarantined (visible to an ADMIN) while
the rest of its batch is processed; a failed batch hands its claims back at once; the
backlog is read from the queue; concurrent ingestion and workers never deadlock."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from dependency_injector import providers

from adapters import prometheus
from adapters.postgres.geocoding import PostgresGeocoder
from domain.errors import DependencyUnavailable
from domain.geo import NearestCity
from domain.model import GeoPoint
from domain.ports.processing import Geocoder
from domain.processing import RetryPolicy
from servers.runtime import Process
from servers.worker import WorkerLoop
from tests.integration.conftest import Stack, stack_settings
from tests.integration.test_processing import (
    BERLIN_STORE,
    HAMBURG_WAREHOUSE,
    T0,
    World,
    make_world,
    rep,
    status_of,
)
from tracker.v1 import processing_query_service_pb2 as pq
from tracker.v1 import processing_query_service_pb2_grpc as pq_grpc
from tracker.v1 import processing_service_pb2 as ps
from tracker.v1 import processing_service_pb2_grpc as ps_grpc
from tracker.v1 import report_service_pb2 as rs
from tracker.v1 import report_service_pb2_grpc as rs_grpc
from tracker.v1 import status_pb2 as st
from usecases.processing import ProcessNewReports

pytestmark = pytest.mark.integration

POISON = GeoPoint(1.2345, 1.2345)


class FlakyGeocoder:
    """The real geocoder, except for points where a test wants it to fail."""

    def __init__(self, real: Geocoder) -> None:
        self.real = real
        self.fail_at: set[GeoPoint] = set()
        self.unavailable = False

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        if self.unavailable:
            raise DependencyUnavailable("postgres", "cut off for the test")
        bad = [p for p in points if p in self.fail_at]
        if bad:
            raise RuntimeError(f"cannot geocode {bad[0]}")
        return await self.real.nearest(points)


async def worker(
    w: World, geocoder: Geocoder | None = None, batch_size: int = 1000, **kw: object
) -> ProcessNewReports:
    c = w.stack.container
    assert c is not None
    with c.geocoder.override(providers.Object(geocoder)) if geocoder else nullcontext():
        made: ProcessNewReports = await c.process_new_reports.async_(batch_size=batch_size, **kw)
    return made


def admin_stubs(
    w: World,
) -> tuple[pq_grpc.ProcessingQueryServiceStub, ps_grpc.ProcessingServiceStub]:
    assert w.stack.query_channel is not None
    assert w.stack.collector_channel is not None
    return (
        pq_grpc.ProcessingQueryServiceStub(w.stack.query_channel),
        ps_grpc.ProcessingServiceStub(w.stack.collector_channel),
    )


async def sql(w: World, query: str, *args: object) -> list[asyncpg.Record]:
    c = w.stack.container
    assert c is not None
    pool = await c.db_pool.async_()
    async with pool.acquire() as conn:
        return list(await conn.fetch(query, *args))


@pytest.mark.parametrize("bad_time", ["-infinity", "infinity"])
async def test_a_report_out_of_range_stops_nobody_else(stack: Stack, bad_time: str) -> None:
    """Issue 10's repro: A's tracker has a report stored as -infinity (or infinity), from
    before times were validated; B's 5 trackers get their statuses from the same single
    batch. A report with no place in time is not counted; A's other reports are."""
    a, b = await make_world(stack, "A"), await make_world(stack, "B")
    poisoned = await a.tracker()
    await sql(
        a,
        """INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7, confidence,
               horizontal_accuracy_m, source)
           VALUES ($1, $2::text::timestamptz, 525219000, 134132000, 3, 10, 'test')""",
        poisoned,
        bad_time,
    )
    await a.store([rep(poisoned, T0, HAMBURG_WAREHOUSE)])
    others = [await b.tracker() for _ in range(5)]
    await b.store([rep(t, T0, BERLIN_STORE) for t in others])
    batch = await (await worker(a))()
    assert (batch.claimed, batch.trackers, batch.quarantined) == (6, 6, 0)
    for t in others:
        assert (await status_of(b, t)).status == st.TRACKER_STATUS_DELIVERED
    status = await status_of(a, poisoned)
    assert status.status == st.TRACKER_STATUS_IN_STORAGE
    assert status.last_report_time.ToDatetime(tzinfo=UTC) == T0


async def test_a_queue_row_from_before_with_minus_infinity_is_processed(world: World) -> None:
    """A queue row written before this change kept -infinity in ``since`` and ``hours`` even
    after the bad report was deleted; it no longer fails its tracker's processing."""
    a = await world.tracker()
    await world.store([rep(a, T0, HAMBURG_WAREHOUSE)])
    await (await worker(world))()
    await world.store([rep(a, T0 + timedelta(hours=1), BERLIN_STORE)])
    c = world.stack.container
    assert c is not None
    await (await c.processing_queue.async_()).fold()
    await sql(
        world,
        """UPDATE processing_queue SET since = '-infinity',
               hours = ARRAY['-infinity'::timestamptz] || hours""",
    )
    batch = await (await worker(world))()
    assert (batch.trackers, batch.quarantined) == (1, 0)
    assert (await status_of(world, a)).status == st.TRACKER_STATUS_DELIVERED


async def test_a_tracker_whose_processing_raises_is_quarantined_for_an_admin(
    stack: Stack,
) -> None:
    """Issue 10: any tracker whose processing raises, with another client's 5 trackers in
    the same batch: B's statuses come from that one batch; A's tracker is quarantined with
    its reason, shown to an ADMIN, held back, and leaves quarantine once it processes."""
    a, b = await make_world(stack, "A"), await make_world(stack, "B")
    c = stack.container
    assert c is not None
    geocoder = FlakyGeocoder(await c.geocoder.async_())
    geocoder.fail_at.add(POISON)
    poisoned = await a.tracker()
    await a.store([rep(poisoned, T0, (POISON.latitude, POISON.longitude))])
    others = [await b.tracker() for _ in range(5)]
    await b.store([rep(t, T0, BERLIN_STORE) for t in others])
    process = await worker(a, geocoder)
    batch = await process()
    assert (batch.claimed, batch.trackers, batch.quarantined) == (6, 5, 1)
    for t in others:
        assert (await status_of(b, t)).status == st.TRACKER_STATUS_DELIVERED

    query, command = admin_stubs(a)
    listed = await query.ListQuarantinedTrackers(pq.ListQuarantinedTrackersRequest())
    [q] = listed.quarantined_trackers
    assert (q.tracker_id, q.client_id, q.attempt_count) == (str(poisoned), str(a.client_id), 1)
    assert (
        q.last_error == "RuntimeError: cannot geocode GeoPoint(latitude=1.2345, longitude=1.2345)"
    )
    assert q.next_retry_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) + timedelta(seconds=20)
    queue = await query.GetProcessingQueue(pq.GetProcessingQueueRequest())
    assert (queue.waiting_count, queue.quarantined_count) == (0, 1)
    assert not (await process()).claimed  # held back until its retry time

    # Fixed; an admin asks for a retry now instead of waiting out the backoff.
    geocoder.fail_at.clear()
    await command.RetryQuarantinedTracker(
        ps.RetryQuarantinedTrackerRequest(tracker_id=str(poisoned))
    )
    batch = await process()
    assert (batch.trackers, batch.quarantined, batch.released) == (1, 0, 1)
    assert (await status_of(a, poisoned)).status == st.TRACKER_STATUS_IN_TRANSIT
    listed = await query.ListQuarantinedTrackers(pq.ListQuarantinedTrackersRequest())
    assert not listed.quarantined_trackers
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await command.RetryQuarantinedTracker(
            ps.RetryQuarantinedTrackerRequest(tracker_id=str(poisoned))
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_failing_trackers_are_isolated_by_splitting_and_retried_with_backoff(
    stack: Stack,
) -> None:
    w = await make_world(stack)
    c = stack.container
    assert c is not None
    geocoder = FlakyGeocoder(await c.geocoder.async_())
    geocoder.fail_at.add(POISON)
    trackers = [await w.tracker() for _ in range(40)]
    bad = {trackers[7], trackers[31]}
    await w.store(
        [
            rep(t, T0, (POISON.latitude, POISON.longitude) if t in bad else BERLIN_STORE)
            for t in trackers
        ]
    )
    process = await worker(w, geocoder, retry=RetryPolicy(base_s=0.5, max_s=0.5))
    batch = await process()
    assert (batch.claimed, batch.trackers, batch.quarantined) == (40, 38, 2)
    assert batch.splits > 0
    rows = await sql(w, "SELECT tracker_id, attempts, last_error FROM processing_queue")
    assert {r["tracker_id"] for r in rows} == bad
    assert all(r["attempts"] == 1 and "cannot geocode" in r["last_error"] for r in rows)
    # Still failing on the retry (after the backoff): one by one, no batch splits.
    await asyncio.sleep(0.6)
    again = await process()
    assert (again.claimed, again.quarantined, again.splits) == (2, 2, 0)
    attempts = await sql(w, "SELECT attempts FROM processing_queue")
    assert [r["attempts"] for r in attempts] == [2, 2]
    # Fixed: released.
    geocoder.fail_at.clear()
    await asyncio.sleep(0.6)
    fixed = await process()
    assert (fixed.trackers, fixed.released) == (2, 2)
    assert not await sql(w, "SELECT 1 FROM processing_queue")


async def test_quarantine_listing_pages_by_tracker_id(stack: Stack) -> None:
    w = await make_world(stack)
    c = stack.container
    assert c is not None
    geocoder = FlakyGeocoder(await c.geocoder.async_())
    geocoder.fail_at.add(POISON)
    trackers = [await w.tracker() for _ in range(5)]
    await w.store([rep(t, T0, (POISON.latitude, POISON.longitude)) for t in trackers])
    assert (await (await worker(w, geocoder))()).quarantined == 5
    query, _ = admin_stubs(w)
    seen, token = [], ""
    while True:
        page = await query.ListQuarantinedTrackers(
            pq.ListQuarantinedTrackersRequest(page_size=2, page_token=token)
        )
        assert len(page.quarantined_trackers) <= 2
        seen += [x.tracker_id for x in page.quarantined_trackers]
        if not (token := page.next_page_token):
            break
    assert seen == sorted(str(t) for t in trackers)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await query.ListQuarantinedTrackers(
            pq.ListQuarantinedTrackersRequest(page_token="bm90LWEtdG9rZW4")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_batch_that_cannot_go_on_hands_its_claims_back_at_once(world: World) -> None:
    c = world.stack.container
    assert c is not None
    geocoder = FlakyGeocoder(await c.geocoder.async_())
    geocoder.unavailable = True
    trackers = [await world.tracker() for _ in range(3)]
    await world.store([rep(t, T0, BERLIN_STORE) for t in trackers])
    stored = datetime.now(UTC)
    failing = await worker(world, geocoder, lease_s=600)
    with pytest.raises(DependencyUnavailable):
        await failing()
    rows = await sql(
        world, "SELECT claim_token, claimed_until, attempts, enqueue_time FROM processing_queue"
    )
    assert len(rows) == 3
    assert all(r["claim_token"] is None and r["claimed_until"] is None for r in rows)
    assert all(r["attempts"] == 0 for r in rows)  # not the trackers' fault
    assert all(r["enqueue_time"] < stored for r in rows)  # still as old as they are
    # Another worker takes them at once, not after the 600 s lease.
    batch = await (await worker(world))()
    assert batch.trackers == 3


@pytest.fixture
async def world(stack: Stack) -> World:
    return await make_world(stack)


async def test_backlog_is_the_oldest_unprocessed_report_from_the_queue(world: World) -> None:
    c = world.stack.container
    assert c is not None
    queue = await c.processing_queue.async_()
    empty = await queue.backlog()
    assert (empty.waiting, empty.oldest_arrival, empty.quarantined) == (0, None, 0)
    trackers = [await world.tracker() for _ in range(3)]
    before = datetime.now(UTC)
    await world.store([rep(t, T0, BERLIN_STORE) for t in trackers])
    after = datetime.now(UTC)
    await asyncio.sleep(0.2)
    await world.store([rep(trackers[0], T0 + timedelta(hours=1), BERLIN_STORE)])
    arrived = await queue.backlog()  # still in the inbox: not yet seen by any worker
    assert arrived.waiting == 3
    assert arrived.oldest_arrival is not None
    # the first store's arrival (not the second's), by order: a busy machine only widens it
    assert before - timedelta(seconds=1) < arrived.oldest_arrival <= after
    await queue.claim(uuid.uuid4(), 1, 600)  # folds, claims one: still unprocessed
    claimed = await queue.backlog()
    assert (claimed.waiting, claimed.oldest_arrival) == (3, arrived.oldest_arrival)
    await sql(world, "UPDATE processing_queue SET claim_token = NULL, claimed_until = NULL")
    await (await worker(world))()
    done = await queue.backlog()
    assert (done.waiting, done.oldest_arrival) == (0, None)


async def test_reports_arriving_during_a_batch_are_processed_next_and_dated_by_arrival(
    world: World,
) -> None:
    """A tracker with new reports while it is being processed stays queued, with the newer
    reports' arrival as its age (the older ones are done)."""
    c = world.stack.container
    assert c is not None
    queue = await c.processing_queue.async_()
    a = await world.tracker()
    await world.store([rep(a, T0, HAMBURG_WAREHOUSE)])
    token = uuid.uuid4()
    [claim] = await queue.claim(token, 10, 600)
    await asyncio.sleep(0.2)
    later = datetime.now(UTC)
    await world.store([rep(a, T0 + timedelta(hours=2), BERLIN_STORE)])
    await queue.fold()
    uow_factory = await c.processing_uow.async_()
    async with uow_factory() as uow:
        mine = await uow.lock(token, [claim])
        await uow.complete(token, mine, [claim])
        await uow.commit()
    backlog = await queue.backlog()
    assert backlog.waiting == 1
    assert backlog.oldest_arrival is not None
    assert backlog.oldest_arrival >= later
    await (await worker(world))()
    assert (await status_of(world, a)).status == st.TRACKER_STATUS_DELIVERED


# Counted, not timed: each of the 3 streams sends STREAMS calls (60 trackers in random order,
# 3 times each) and each of the 2 workers processes BATCHES non-empty batches of 7 while they
# run. (The 20 s soak this replaces did ~150 calls a stream, ~27 batches a worker on a quiet
# machine; a slower machine now takes longer rather than conflicting less.)
STREAMS, BATCHES = 40, 12


async def test_concurrent_ingestion_and_workers_never_deadlock(world: World) -> None:
    """Issue 13: several IngestReports streams in random tracker orders and two workers with
    small batches, until every stream has sent and every worker has processed enough to
    conflict many times over (counted, not timed); PostgreSQL counts no deadlock, no call
    fails, and every tracker ends up processed."""
    assert world.stack.collector_channel is not None
    stub = rs_grpc.ReportServiceStub(world.stack.collector_channel)
    trackers = [await world.tracker() for _ in range(60)]
    dbname = (await sql(world, "SELECT current_database() AS d"))[0]["d"]

    async def deadlocks() -> int:
        rows = await sql(world, "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", dbname)
        return int(rows[0]["deadlocks"])

    before = await deadlocks()
    stop = asyncio.Event()
    failures: list[BaseException] = []
    sent = 0
    streams = [0] * 3  # IngestReports calls each stream completed
    batches = [0] * 2  # non-empty batches each worker processed

    async def ingest(seed: int) -> None:
        nonlocal sent
        rng = random.Random(seed)
        base = datetime.now(UTC) - timedelta(hours=2)
        n = 0
        while not stop.is_set():
            messages = []
            for _ in range(3):
                order = rng.sample(trackers, len(trackers))
                reports = []
                for t in order:
                    n += 1
                    at = base + timedelta(milliseconds=n, microseconds=seed)
                    msg = rs.ReportInput(
                        tracker_id=str(t),
                        latitude=rng.choice([BERLIN_STORE, HAMBURG_WAREHOUSE])[0],
                        longitude=13.4132,
                        confidence=3,
                        horizontal_accuracy_m=10,
                    )
                    msg.report_time.FromDatetime(at)
                    reports.append(msg)
                messages.append(rs.IngestReportsRequest(reports=reports))
            try:
                got = await stub.IngestReports(iter(messages))
                assert got.rejected_count == 0, got.errors
                sent += got.stored_count
                streams[seed] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    async def work(i: int, p: ProcessNewReports) -> int:
        done = 0
        while not stop.is_set():
            try:
                b = await p()
            except BaseException as exc:
                failures.append(exc)
                return done
            done += b.trackers
            if b.quarantined:
                failures.append(AssertionError(f"{b.quarantined} quarantined"))
            if b.claimed:
                batches[i] += 1
            else:
                await asyncio.sleep(0.01)
        return done

    workers = [await worker(world, batch_size=7) for _ in range(2)]
    tasks = [asyncio.create_task(ingest(s)) for s in range(3)]
    tasks += [asyncio.create_task(work(i, p)) for i, p in enumerate(workers)]
    # Until each stream has sent STREAMS calls and each worker has processed BATCHES batches
    # while they ran (the timeout only bounds a failure; a loaded machine takes long).
    async with asyncio.timeout(600):
        while not failures and (min(streams) < STREAMS or min(batches) < BATCHES):
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    assert not failures, failures[:3]
    assert sent > 0
    assert await deadlocks() == before
    # Everything ingested gets processed.
    while (await workers[0]()).claimed:
        pass
    assert not await sql(
        world, "SELECT 1 FROM processing_queue UNION ALL SELECT 1 FROM processing_inbox"
    )
    for t in trackers:
        assert (await status_of(world, t)).status != st.TRACKER_STATUS_UNSPECIFIED


class StuckGeocoder:
    """Holds every batch until released: a batch in flight for as long as a test likes. The
    batches run on the worker's own thread and loop: thread-safe events, polled."""

    def __init__(self) -> None:
        self.real: providers.Provider[Geocoder] | None = None
        self.entered = threading.Event()
        self.go = threading.Event()

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        self.entered.set()
        while not self.go.is_set():
            await asyncio.sleep(0.01)
        assert self.real is not None
        real: Geocoder = await self.real.async_()
        return await real.nearest(points)


async def test_lag_gauge_tells_the_age_of_the_oldest_unprocessed_report(world: World) -> None:
    """Issue 13: one loop's batch is in flight, the other loop idles; the gauge still tells
    how long the oldest report has waited (it read 0 from the idle loop before)."""
    c = world.stack.container
    assert c is not None
    stuck = StuckGeocoder()

    class Loop(WorkerLoop):
        def batch_container(self):  # type: ignore[no-untyped-def]
            own = super().batch_container()
            stuck.real = providers.Singleton(PostgresGeocoder, own.db_pool)  # its own pool
            own.geocoder.override(providers.Object(stuck))
            return own

    settings = stack_settings(
        c.settings().database.dsn,
        worker_idle_s=0.02,
        worker_concurrency=2,
        worker_metrics_interval_s=0.05,
    )
    a = await world.tracker()
    await world.store([rep(a, T0, HAMBURG_WAREHOUSE)])
    stored = datetime.now(UTC)
    process = Process(settings, [], [Loop(settings)])
    await process.start()
    try:
        async with asyncio.timeout(10):
            while not stuck.entered.is_set():
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        lag = prometheus.WORKER_LAG._value.get()
        waited = (datetime.now(UTC) - stored).total_seconds()
        assert 0.9 <= lag <= waited + 0.5
        assert prometheus.WORKER_BACKLOG._value.get() == 1
        stuck.go.set()
        async with asyncio.timeout(10):
            while prometheus.WORKER_LAG._value.get() or prometheus.WORKER_BACKLOG._value.get():
                await asyncio.sleep(0.05)
        assert (await status_of(world, a)).status == st.TRACKER_STATUS_IN_STORAGE
    finally:
        stuck.go.set()
        await process.stop(0)
