"""Benchmark of changes pushed (issue 17): what the outbox triggers add to the status
engine's writes, and how fast a stream drains a backlog of events.

1. Status changes written as ``save_statuses`` writes them (one ``INSERT ... SELECT FROM
   unnest`` per batch of 1,000 trackers), into ``status_history``: with the event trigger
   disabled (the baseline, measured in the same run), enabled without webhooks, and enabled
   with two webhooks of the client (a delivery row per event and webhook).
2. Draining the events so written: ``PostgresEventFeed.after`` from the start cursor in pages
   of 500 (the stream) against ``PostgresEventFeed.page`` in pages of 500 (plain keyset
   pages by id, the baseline).

    .venv/bin/python -m bench.events --trackers 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from adapters.postgres.events import PostgresEventFeed, encode_cursor
from adapters.postgres.pool import open_pool
from bench.processing import make_world
from bench.throwaway import throwaway_database
from domain.pagination import PageRequest
from domain.ports.events import EventFilter

BATCH = 1000
_INSERT = """INSERT INTO status_history (tracker_id, report_time, latitude_e7, longitude_e7,
                 status, previous_status, horizontal_accuracy_m, confidence)
             SELECT t, $2, 0, 0, 'IN_TRANSIT', 'IN_STORAGE', 10, 2 FROM unnest($1::uuid[]) AS t"""


async def write_round(conn: asyncpg.Connection, trackers: list[uuid.UUID], when: datetime) -> float:
    started = time.perf_counter()
    for i in range(0, len(trackers), BATCH):
        async with conn.transaction():
            await conn.execute(_INSERT, trackers[i : i + BATCH], when)
    return time.perf_counter() - started


async def main(trackers_n: int, rounds: int) -> None:
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        try:
            trackers = await make_world(conn, trackers_n)
            client: uuid.UUID = await conn.fetchval("SELECT id FROM clients LIMIT 1")
            base = datetime(2026, 6, 1, tzinfo=UTC)
            tick = iter(base + timedelta(minutes=m) for m in range(10_000))
            figures: dict[str, list[float]] = {"off": [], "on": [], "webhooks": []}
            await write_round(conn, trackers, next(tick))  # warm-up
            for _ in range(rounds):
                for mode in ("off", "on", "webhooks"):
                    if mode == "off":
                        await conn.execute(
                            "ALTER TABLE status_history DISABLE TRIGGER status_history_events"
                        )
                    if mode == "webhooks":
                        for n in range(2):
                            await conn.execute(
                                """INSERT INTO webhooks (id, client_id, url, secret_kek_id,
                                       secret_sealed, create_time, update_time)
                                   VALUES ($1, $2, $3, 'k', '\\x00', now(), now())""",
                                uuid.uuid4(), client, f"https://example.com/{n}",
                            )  # fmt: skip
                    figures[mode].append(await write_round(conn, trackers, next(tick)))
                    if mode == "off":
                        await conn.execute(
                            "ALTER TABLE status_history ENABLE TRIGGER status_history_events"
                        )
                    if mode == "webhooks":
                        await conn.execute("DELETE FROM webhooks")
            events = await conn.fetchval("SELECT count(*) FROM events")
        finally:
            await conn.close()
        per_k = {m: statistics.median(v) / trackers_n * 1000 * 1000 for m, v in figures.items()}
        print(f"status changes written: {trackers_n} per round, {rounds} rounds, batches of 1000")
        print(f"  event trigger off (baseline): {per_k['off']:.1f} ms per 1,000 changes")
        for m, label in (("on", "trigger on, no webhooks"), ("webhooks", "on, 2 webhooks")):
            print(f"  {label}: {per_k[m]:.1f} ms per 1,000 ({per_k[m] / per_k['off']:.2f}x)")

        pool = await open_pool(url, 2)
        try:
            feed = PostgresEventFeed(pool)
            everything = EventFilter()
            start = encode_cursor("1:1:")  # before every transaction
            t0 = time.perf_counter()
            cursor, streamed = start, 0
            while True:
                got, cursor = await feed.after(cursor, everything, 500)
                streamed += len(got)
                if len(got) < 500:
                    break
            stream_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            after, paged = None, 0
            while True:
                page = await feed.page(everything, PageRequest(500, after))
                paged += len(page.items)
                after = page.next_after
                if after is None:
                    break
            page_s = time.perf_counter() - t0
        finally:
            await pool.close()
        assert streamed == paged == events, (streamed, paged, events)
        print(f"draining {events} events in pages of 500:")
        print(f"  keyset pages by id (baseline): {events / page_s:,.0f} events/s")
        print(
            f"  stream from a cursor: {events / stream_s:,.0f} events/s"
            f" ({page_s / stream_s:.2f}x the baseline's rate)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trackers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.trackers, args.rounds))
