"""Changes pushed (issue 17): events written in the transaction of their change (status
history, silence, outages), and a stream that resumes from any cursor with nothing missed and
nothing repeated while concurrent writers commit out of id order; over real gRPC too."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from adapters.postgres.events import PostgresEventFeed
from adapters.postgres.pool import open_pool
from adapters.postgres.silence import PostgresCadenceRepository
from domain.access import Principal, Role
from domain.events import EventKind
from domain.ports.events import EventFilter
from domain.silence import SilenceRule
from tests.integration.conftest import Stack, stack_settings
from tests.integration.test_keys import run_of_new_client
from tests.integration.test_silence import add_reports, new_trackers
from tests.unit.fakes.base import FakeClock
from tracker.v1 import event_query_service_pb2 as eq
from tracker.v1 import event_query_service_pb2_grpc as eq_grpc
from tracker.v1 import events_pb2 as pb
from usecases.access import NewUser
from usecases.silence import LearnCadences

pytestmark = pytest.mark.integration

T0 = datetime(2026, 8, 1, tzinfo=UTC)


async def open_outage(conn: asyncpg.Connection, client_id: str, key: str) -> int:
    outage_id: int = await conn.fetchval(
        """INSERT INTO outage_events (client_id, dimension, key, trackers, silent, share,
               baseline, start_time)
           VALUES ($1, 'CLIENT', $2, 10, 5, 0.5, 0.0, $3) RETURNING id""",
        uuid.UUID(client_id),
        key,
        T0,
    )
    return outage_id


async def drain(
    feed: PostgresEventFeed, cursor: str, filter: EventFilter, limit: int = 1000
) -> tuple[list[int], str]:
    ids: list[int] = []
    while True:
        got, cursor = await feed.after(cursor, filter, limit)
        ids += [e.id for e, _ in got]
        if len(got) < limit:
            return ids, cursor


async def test_events_are_written_with_their_change_and_only_if_it_commits(
    stack: Stack, database_url: str
) -> None:
    client, run = await run_of_new_client(stack, "evt")
    (tracker,) = await new_trackers(stack, run.id, 1)
    pool = await open_pool(database_url, 4)
    feed = PostgresEventFeed(pool)
    only = EventFilter(client_id=uuid.UUID(client.id))
    start = await feed.start()
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():  # status change and outage: rolled back, no event
            await conn.execute(
                """INSERT INTO status_history (tracker_id, report_time, latitude_e7,
                       longitude_e7, status, horizontal_accuracy_m, confidence)
                   VALUES ($1, $2, 10, 20, 'IN_TRANSIT', 5, 2)""",
                uuid.UUID(tracker),
                T0,
            )
            await open_outage(conn, client.id, "x")
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM events WHERE client_id = $1", uuid.UUID(client.id)
                )
                == 2
            )
            await conn.execute("SELECT 1/0")
    except asyncpg.DivisionByZeroError:
        pass
    try:
        assert (await drain(feed, start, only))[0] == []
        await conn.execute(
            """INSERT INTO status_history (tracker_id, report_time, latitude_e7, longitude_e7,
                   status, previous_status, horizontal_accuracy_m, confidence)
               VALUES ($1, $2, 10, 20, 'DELIVERED', 'IN_TRANSIT', 5, 2)""",
            uuid.UUID(tracker),
            T0,
        )
        outage = await open_outage(conn, client.id, "y")
        await conn.execute(
            "UPDATE outage_events SET end_time = $2 WHERE id = $1", outage, T0 + timedelta(hours=1)
        )
        await conn.execute(  # another update of a closed outage is not an event
            "UPDATE outage_events SET silent = 1 WHERE id = $1", outage
        )
    finally:
        await conn.close()
    got, _ = await feed.after(start, only, 100)
    kinds = [e.kind for e, _ in got]
    assert kinds == [EventKind.STATUS_CHANGED, EventKind.OUTAGE_OPENED, EventKind.OUTAGE_CLOSED]
    status = got[0][0]
    assert str(status.tracker_id) == tracker
    assert status.data["status"] == "DELIVERED"
    assert status.data["previous_status"] == "IN_TRANSIT"
    assert status.occur_time == T0
    assert got[2][0].outage_id == outage
    assert got[2][0].data["end_time"] is not None

    # silence: the cadence pass that finds a tracker silent writes TRACKER_SILENT; the pass
    # after it reported again, TRACKER_REPORTING_AGAIN; passes that change nothing, nothing
    await add_reports(database_url, [(tracker, T0 + timedelta(hours=h)) for h in range(0, 12, 2)])
    rule = SilenceRule()
    clock = FakeClock(T0 + timedelta(hours=11))
    learn = LearnCadences(PostgresCadenceRepository(pool), clock, rule, chunk=10_000)
    mark = (await feed.after(start, only, 100))[1]
    await learn()
    assert (await drain(feed, mark, only))[0] == []
    clock.set(T0 + timedelta(days=5))
    await learn()
    await learn()
    silent, mark2 = await feed.after(mark, only, 100)
    assert [e.kind for e, _ in silent] == [EventKind.TRACKER_SILENT]
    await add_reports(database_url, [(tracker, T0 + timedelta(days=5))])
    await learn()
    again, _ = await feed.after(mark2, only, 100)
    assert [e.kind for e, _ in again] == [EventKind.TRACKER_REPORTING_AGAIN]
    await pool.close()


async def test_concurrent_writers_committing_out_of_order_nothing_missed_nor_repeated(
    stack: Stack, database_url: str
) -> None:
    """Writers take ids in one order and commit in another (one holds the lowest id until
    all others committed; some roll back). A reader polling with small pages, and readers
    resuming from every cursor it was given, see each committed event exactly once."""
    client, _ = await run_of_new_client(stack, "conc")
    pool = await open_pool(database_url, 8)
    feed = PostgresEventFeed(pool)
    only = EventFilter(client_id=uuid.UUID(client.id))
    start = await feed.start()
    rng = random.Random(17)
    committed: list[int] = []
    others_done = asyncio.Event()
    first_has_id = asyncio.Event()

    async def writer(n: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            tx = conn.transaction()
            await tx.start()
            outage = await open_outage(conn, client.id, f"k{n}")
            if n == 0:
                first_has_id.set()
                await others_done.wait()  # the lowest id commits last
            else:
                await asyncio.sleep(rng.uniform(0, 0.15))
            if n % 7 == 3:
                await tx.rollback()
                return
            await tx.commit()
            committed.append(
                await conn.fetchval("SELECT id FROM events WHERE outage_id = $1", outage)
            )
        finally:
            await conn.close()

    seen: list[int] = []
    cursors: list[str] = []
    stop = asyncio.Event()

    async def reader() -> None:
        cursor = start
        while True:
            # stopped before this poll began, so after every commit: an empty page is the end
            # (a poll begun before the last commit may miss it and must not end the reading)
            last = stop.is_set()
            got, cursor = await feed.after(cursor, only, 3)
            for e, c in got:
                seen.append(e.id)
                cursors.append(c)
            if last and not got:
                return
            await asyncio.sleep(0.01)

    reading = asyncio.create_task(reader())
    first = asyncio.create_task(writer(0))
    await first_has_id.wait()
    await asyncio.gather(*(writer(n) for n in range(1, 40)))
    async with asyncio.timeout(60):  # a bound for a loaded machine, not a speed
        while len(seen) < len(committed):  # the reader has read past the others
            await asyncio.sleep(0.01)
    others_done.set()
    await first
    stop.set()
    await reading

    assert len(seen) == len(set(seen)), "an event was read twice"
    assert sorted(seen) == sorted(committed)
    assert len(committed) == 40 - len([n for n in range(40) if n % 7 == 3])
    # the lowest id came after higher ones: a reader keeping "the last id" would have lost it
    assert seen[-1] == min(seen)
    # resuming from each cursor: exactly the events read after it (in commit order, which
    # may group them otherwise than the reader's polls did)
    for i in rng.sample(range(len(seen)), 12):
        rest, _ = await drain(feed, cursors[i], only, limit=rng.choice((1, 2, 5, 100)))
        assert len(rest) == len(set(rest)), i
        assert sorted(rest) == sorted(seen[i + 1 :]), i
    await pool.close()


async def test_stream_events_resumes_after_a_disconnect_with_nothing_missed(
    stack_for, database_url: str
) -> None:
    stack: Stack = await stack_for(stack_settings(database_url, events_stream_poll_s=0.05))
    client, _ = await run_of_new_client(stack, "streamer")
    other, _ = await run_of_new_client(stack, "stranger")
    user = await stack.access.create_user(
        Principal.system(),
        NewUser(
            email="streamer@example.com",
            password="streamer-password-1",
            memberships={uuid.UUID(client.id): Role.VIEWER},
        ),
    )
    assert user
    viewer = stack.as_token(await stack.token_for("streamer@example.com"))
    assert viewer.query_channel is not None
    events = eq_grpc.EventQueryServiceStub(viewer.query_channel)
    conn = await asyncpg.connect(database_url)
    try:
        call = events.StreamEvents(eq.StreamEventsRequest())
        first = await call.read()
        assert not first.HasField("event")
        assert first.cursor
        for n in range(3):
            await open_outage(conn, client.id, f"a{n}")
            await open_outage(conn, other.id, f"a{n}")  # never shown to this viewer
        got = [await call.read() for _ in range(3)]
        assert [g.event.client_id for g in got] == [client.id] * 3
        assert all(g.event.kind == pb.EVENT_KIND_OUTAGE_OPENED for g in got)
        ids = [g.event.id for g in got]
        call.cancel()
        # while disconnected
        for n in range(3, 6):
            await open_outage(conn, client.id, f"a{n}")
        resumed = events.StreamEvents(eq.StreamEventsRequest(after_cursor=got[1].cursor))
        assert (await resumed.read()).cursor == got[1].cursor  # the heartbeat: where it starts
        again = [await resumed.read() for _ in range(4)]
        assert next(g.event.id for g in again) == ids[2]
        assert len({g.event.id for g in again} | set(ids)) == 6
        resumed.cancel()
        kinds = events.StreamEvents(
            eq.StreamEventsRequest(after_cursor=first.cursor, kinds=[pb.EVENT_KIND_STATUS_CHANGED])
        )
        await kinds.read()
        with pytest.raises(asyncio.TimeoutError):  # six outages, none of the kind asked for
            await asyncio.wait_for(kinds.read(), 0.5)
        kinds.cancel()
    finally:
        await conn.close()
    for bad in ("nonsense", "AAAA", "x" * 9000):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await events.StreamEvents(eq.StreamEventsRequest(after_cursor=bad)).read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "after_cursor" in str(err.value.trailing_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events.StreamEvents(eq.StreamEventsRequest(client_id=other.id)).read()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # ListEvents: newest first, in pages, the viewer's client only
    listed: list[int] = []
    token = ""
    while True:
        page = await events.ListEvents(eq.ListEventsRequest(page_size=4, page_token=token))
        listed += [e.id for e in page.events]
        assert {e.client_id for e in page.events} <= {client.id}
        token = page.next_page_token
        if not token:
            break
    assert len(listed) == 6
    assert listed == sorted(listed, reverse=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events.ListEvents(eq.ListEventsRequest(page_size=4, page_token="forged"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
