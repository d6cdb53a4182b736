"""Retention (migration 0030): rows past their keep are deleted in chunks by the real
PostgreSQL adapter; what is younger, pending or dead stays; an event (or detector event)
stream cursor that had not seen the newest deleted event (sighting) is refused
(CURSOR_EXPIRED) instead of resuming with a gap, while a cursor that had seen it resumes as
before."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from adapters.postgres.detectors import PostgresFeed
from adapters.postgres.events import PostgresEventFeed
from adapters.postgres.pool import open_pool
from adapters.postgres.retention import PostgresRetention
from domain.errors import FailedPrecondition
from domain.ports.events import EventFilter
from domain.retention import Prunable, RetentionPolicy
from usecases.maintenance import PruneExpired

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


class Fixed:
    def now(self) -> datetime:
        return NOW


POLICY = RetentionPolicy(
    {
        Prunable.SIGHTINGS: 90 * DAY,
        Prunable.DETECTOR_STATUSES: 365 * DAY,
        Prunable.EVENTS: 30 * DAY,
        Prunable.DELIVERED_WEBHOOK_DELIVERIES: 7 * DAY,
    }
)


async def seed(conn: asyncpg.Connection) -> dict[str, object]:
    client = uuid.uuid4()
    await conn.execute(
        "INSERT INTO clients (id, display_name, create_time, update_time) VALUES ($1, 'c', $2, $2)",
        client,
        NOW,
    )
    detectors = [uuid.uuid4() for _ in range(3)]
    for d in detectors:
        await conn.execute(
            "INSERT INTO detectors (id, client_id, display_name, latitude, longitude, radios,"
            " create_time, update_time) VALUES ($1, $2, 'd', 52.5, 13.4, '{1}', $3, $3)",
            d,
            client,
            NOW,
        )
    # per detector: 7 sightings 100 days old, 4 of 10 days; statuses 400 and 100 days old
    rows = []
    for d in detectors:
        for i in range(11):
            age = 100 * DAY if i < 7 else 10 * DAY
            rows.append((d, NOW - age + i * timedelta(seconds=1), bytes([i]) * 16, 1, -60, 1))
        for age in (400 * DAY, 100 * DAY):
            await conn.execute(
                "INSERT INTO detector_statuses VALUES ($1, $2, 3.1, 1, 1)", d, NOW - age
            )
    await conn.copy_records_to_table(
        "sightings",
        records=rows,
        columns=["detector_id", "seen_time", "device_key", "key_id", "rssi_dbm", "radio"],
    )
    hook = uuid.uuid4()
    await conn.execute(
        "INSERT INTO webhooks (id, client_id, url, secret_kek_id, secret_sealed, create_time,"
        " update_time) VALUES ($1, $2, 'https://example.com/h', 'k', '\\x00', $3, $3)",
        hook,
        client,
        NOW,
    )
    return {"client": client, "detectors": detectors, "hook": hook}


async def add_events(conn: asyncpg.Connection, client: uuid.UUID, ages: list[timedelta]) -> None:
    """Events of the given ages, one transaction each (each its own xid); the fan-out
    trigger gives each a PENDING delivery to the client's webhook."""
    for age in ages:
        await conn.execute(
            "INSERT INTO events (client_id, kind, occur_time, data, create_time)"
            " VALUES ($1, 'OUTAGE_OPENED', $2, '{}', $2)",
            client,
            NOW - age,
        )


async def test_rows_past_their_keep_go_in_chunks_the_rest_stays(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            world = await seed(conn)
            await add_events(conn, world["client"], [40 * DAY] * 5 + [20 * DAY] * 2)  # type: ignore[arg-type]
            # deliveries: old delivered, recent delivered, old dead, the rest pending
            await conn.execute(
                "UPDATE webhook_deliveries SET state = 'DELIVERED', deliver_time = $1"
                " WHERE event_id IN (SELECT id FROM events WHERE create_time > $2)",
                NOW - 10 * DAY,
                NOW - 25 * DAY,
            )
            recent = await conn.fetchval("SELECT max(id) FROM events")
            await conn.execute(
                "UPDATE webhook_deliveries SET deliver_time = $1 WHERE event_id = $2",
                NOW - DAY,
                recent,
            )
        prune = PruneExpired(PostgresRetention(pool), Fixed(), POLICY, chunk=2, max_chunks=50)
        deleted = await prune()
        assert deleted == {
            Prunable.SIGHTINGS: 21,
            Prunable.DETECTOR_STATUSES: 3,
            Prunable.EVENTS: 5,
            Prunable.DELIVERED_WEBHOOK_DELIVERIES: 1,
        }
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM sightings") == 12
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM sightings WHERE seen_time < $1", NOW - 90 * DAY
                )
                == 0
            )
            assert await conn.fetchval("SELECT count(*) FROM detector_statuses") == 3
            assert await conn.fetchval("SELECT count(*) FROM events") == 2
            # the old events' deliveries went with them; the recent delivered one stays
            states = await conn.fetch("SELECT state FROM webhook_deliveries ORDER BY event_id")
            assert [r["state"] for r in states] == ["DELIVERED"]
        assert set((await prune()).values()) == {0}  # nothing left to do
    finally:
        await pool.close()


async def test_a_bounded_turn_leaves_the_rest_for_the_next(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            await seed(conn)
        only = RetentionPolicy({Prunable.SIGHTINGS: 90 * DAY})
        prune = PruneExpired(PostgresRetention(pool), Fixed(), only, chunk=4, max_chunks=2)
        assert await prune() == {Prunable.SIGHTINGS: 8}
        assert await prune() == {Prunable.SIGHTINGS: 8}
        assert await prune() == {Prunable.SIGHTINGS: 5}
        assert await prune() == {Prunable.SIGHTINGS: 0}
    finally:
        await pool.close()


async def test_a_cursor_older_than_the_kept_events_is_refused(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=2)
    feed = PostgresEventFeed(pool)
    everyone = EventFilter()
    try:
        before = await feed.start()  # a consumer that stopped reading long ago
        async with pool.acquire() as conn:
            world = await seed(conn)
            await add_events(conn, world["client"], [40 * DAY] * 3)  # type: ignore[arg-type]
        seen_old, _ = await feed.after(before, everyone, 100)
        assert len(seen_old) == 3
        caught_up = seen_old[-1][1]  # a consumer that read them all
        async with pool.acquire() as conn:
            await add_events(conn, world["client"], [DAY])  # type: ignore[arg-type]
        only = RetentionPolicy({Prunable.EVENTS: 30 * DAY})
        assert await PruneExpired(PostgresRetention(pool), Fixed(), only)() == {Prunable.EVENTS: 3}

        with pytest.raises(FailedPrecondition) as err:
            await feed.after(before, everyone, 100)
        assert err.value.kind == "CURSOR_EXPIRED"
        assert err.value.subject == "after_cursor"

        resumed, _ = await feed.after(caught_up, everyone, 100)  # had seen what was deleted
        assert [e.occur_time for e, _ in resumed] == [NOW - DAY]
        fresh, _ = await feed.after(await feed.start(), everyone, 100)
        assert fresh == []
    finally:
        await pool.close()


async def add_sightings(
    conn: asyncpg.Connection, detector: uuid.UUID, ages: list[timedelta], key: int
) -> None:
    """Sightings of the given ages in one transaction (one xid), as a late upload."""
    await conn.copy_records_to_table(
        "sightings",
        records=[
            (detector, NOW - age, bytes([key, i]) * 8, 1, -60, 1) for i, age in enumerate(ages)
        ],
        columns=["detector_id", "seen_time", "device_key", "key_id", "rssi_dbm", "radio"],
    )


async def test_a_detector_stream_cursor_older_than_the_kept_sightings_is_refused(
    database_url: str,
) -> None:
    pool = await open_pool(database_url, max_size=2)
    feed = PostgresFeed(pool)
    only = RetentionPolicy({Prunable.SIGHTINGS: 90 * DAY})
    try:
        async with pool.acquire() as conn:
            world = await seed(conn)
        a = world["detectors"][0]  # type: ignore[index]
        # the seed's old sightings go: committed before any cursor below, they cost none
        assert await PruneExpired(PostgresRetention(pool), Fixed(), only)() == {
            Prunable.SIGHTINGS: 21
        }
        before = await feed.start()  # a consumer that stopped reading
        async with pool.acquire() as conn:
            await add_sightings(conn, a, [100 * DAY] * 2, key=1)  # a late upload, too old
            await add_sightings(conn, a, [DAY], key=2)
            await add_sightings(conn, a, [DAY], key=3)
        one, inside = await feed.events_after(before, [a], 1)  # read into the old upload
        three, past = await feed.events_after(before, [a], 3)  # read past it, not to the end
        four, caught_up = await feed.events_after(before, [a], 100)
        assert (len(one), len(three), len(four)) == (1, 3, 4)
        assert await PruneExpired(PostgresRetention(pool), Fixed(), only)() == {
            Prunable.SIGHTINGS: 2
        }

        for expired in (before, inside):
            with pytest.raises(FailedPrecondition) as err:
                await feed.events_after(expired, [a], 100)
            assert err.value.kind == "CURSOR_EXPIRED"
            assert err.value.subject == "after_cursor"
            assert "retention_sightings_days" in err.value.reason

        resumed, _ = await feed.events_after(past, [a], 100)  # had seen what was deleted
        assert [e.device_key for e in resumed] == [bytes([3, 0]) * 8]
        assert (await feed.events_after(caught_up, [a], 100))[0] == []
        assert (await feed.events_after(await feed.start(), [a], 100))[0] == []
    finally:
        await pool.close()
