"""The detector events feed (``PostgresFeed.events_after``) against real PostgreSQL: polls
of a limited size hand out every committed sighting once, in commit order, whatever order
concurrent transactions commit in, and resuming later from any position handed out gives
exactly the sightings not yet read through it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from adapters.postgres.detectors import PostgresFeed
from adapters.postgres.pool import open_pool
from domain.detectors import DetectorEvent

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


async def add_detector(conn: asyncpg.Connection, client: uuid.UUID) -> uuid.UUID:
    d = uuid.uuid4()
    await conn.execute(
        "INSERT INTO detectors (id, client_id, display_name, latitude, longitude, radios,"
        " create_time, update_time) VALUES ($1, $2, 'd', 52.5, 13.4, '{1}', $3, $3)",
        d,
        client,
        NOW,
    )
    return d


async def add(conn: asyncpg.Connection, detector: uuid.UUID, n: int, key: int) -> None:
    await conn.executemany(
        "INSERT INTO sightings (detector_id, seen_time, device_key, key_id, rssi_dbm, radio)"
        " VALUES ($1, $2, $3, 1, -60, 1)",
        [(detector, NOW + timedelta(seconds=i), bytes([key, i]) * 8) for i in range(n)],
    )


def keys(events: list[DetectorEvent]) -> list[tuple[int, int]]:
    return [(e.device_key[0], e.device_key[1]) for e in events]


async def read_all(
    feed: PostgresFeed, position: str, ids: list[uuid.UUID], limit: int
) -> tuple[list[DetectorEvent], list[str]]:
    """Poll until a poll comes back short; every position handed out, in order."""
    got: list[DetectorEvent] = []
    positions = [position]
    while True:
        events, position = await feed.events_after(position, ids, limit)
        got += events
        positions.append(position)
        if len(events) < limit:
            return got, positions


async def test_limited_polls_hand_out_each_sighting_once_in_commit_order(
    database_url: str,
) -> None:
    pool = await open_pool(database_url, max_size=3)
    feed = PostgresFeed(pool)
    try:
        async with pool.acquire() as conn:
            client = uuid.uuid4()
            await conn.execute(
                "INSERT INTO clients (id, display_name, create_time, update_time)"
                " VALUES ($1, 'c', $2, $2)",
                client,
                NOW,
            )
            a, b = await add_detector(conn, client), await add_detector(conn, client)
        start = await feed.start()
        async with pool.acquire() as slow, pool.acquire() as conn:
            late = slow.transaction()
            await late.start()
            await add(slow, a, 2, key=9)  # the lowest xid, committed last
            await add(conn, a, 3, key=1)
            await add(conn, b, 2, key=2)
            await add(conn, a, 1, key=3)
            first, positions = await read_all(feed, start, [a, b], 2)
            assert keys(first) == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0)]
            await late.commit()
        rest, more = await read_all(feed, positions[-1], [a, b], 2)
        assert keys(rest) == [(9, 0), (9, 1)]

        everything = first + rest
        handed_out = positions + more[1:]
        read_by_then = [0, 2, 4, 6, 6, 8, 8]  # events read when each position was handed out
        assert len(handed_out) == len(read_by_then)
        for position, n in zip(handed_out, read_by_then, strict=True):
            after, _ = await read_all(feed, position, [a, b], 3)
            # the same sightings, once each (resumed after the late commit, in xid order)
            assert sorted(keys(after)) == sorted(keys(everything[n:])), n
        only_b, _ = await read_all(feed, start, [b], 1)
        assert keys(only_b) == [(2, 0), (2, 1)]
    finally:
        await pool.close()
