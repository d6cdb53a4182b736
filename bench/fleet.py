"""Benchmark of the fleet statistics (FleetQueryService/GetFleetStatistics) on 250,000
trackers: each with a status, a learned cadence (a tenth silent) and a fetch state, and
100,000 reports stored in the last hour; grouped by client, brand and run, for the ADMIN (every
client) and for one client's users. Beside it, in the same run, the floor: a bare
``count(*)`` over the same trackers. Prints figures.

    .venv/bin/python -m bench.fleet --trackers 250000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from adapters.postgres.fleet import PostgresFleetStatistics
from adapters.postgres.pool import open_pool
from bench.processing import make_world
from bench.throwaway import throwaway_database
from domain.fleet import GroupBy


async def seed(conn: asyncpg.Connection, n: int, reports: int) -> uuid.UUID:
    now = datetime.now(UTC)
    await make_world(conn, n)
    await conn.execute(
        """INSERT INTO tracker_status (tracker_id, status, last_report_time, last_latitude_e7,
               last_longitude_e7, last_accuracy_m)
           SELECT id,
                  (ARRAY['IN_STORAGE', 'IN_TRANSIT', 'DELIVERED'])[1 + abs(hashtext(id::text)) % 3],
                  $1::timestamptz, 0, 0, 10 FROM trackers WHERE abs(hashtext(id::text)) % 5 > 0""",
        now,
    )
    await conn.execute(
        """INSERT INTO tracker_cadence (tracker_id, cadence_s, gaps, first_report_time,
               last_report_time, silent_time, update_time)
           SELECT id, 3600, 20, $1::timestamptz - interval '20 days',
                  CASE WHEN abs(hashtext(id::text)) % 10 = 0 THEN $1 - interval '1 day' ELSE $1 END,
                  CASE WHEN abs(hashtext(id::text)) % 10 = 0 THEN $1 - interval '21 hours'
                       ELSE $1 + interval '3 hours' END, $1
           FROM trackers""",
        now,
    )
    await conn.execute(
        """INSERT INTO fetch_state (tracker_id, factor, last_attempt_time)
           SELECT id, 1, $1::timestamptz - (abs(hashtext(id::text)) % 7200) * interval '1 second'
           FROM trackers""",
        now,
    )
    await conn.execute(
        """INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7, confidence,
               horizontal_accuracy_m, source, fetch_time)
           SELECT id, $1::timestamptz - interval '2 hours', 0, 0, 2, 10, 'bench', $1
           FROM trackers ORDER BY id LIMIT $2""",
        now,
        reports,
    )
    await conn.execute("ANALYZE")
    client: uuid.UUID = await conn.fetchval("SELECT id FROM clients LIMIT 1")
    return client


async def timed(work, repeat: int) -> float:  # type: ignore[no-untyped-def]
    spent = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await work()
        spent.append(time.perf_counter() - t0)
    return statistics.median(spent)


async def bench(n: int, reports: int, repeat: int) -> None:
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        try:
            t0 = time.perf_counter()
            client = await seed(conn, n, reports)
            print(
                f"fleet statistics: {n} trackers, {reports} reports in the last hour "
                f"(seeded in {time.perf_counter() - t0:.1f} s); median of {repeat}"
            )
        finally:
            await conn.close()
        pool = await open_pool(url, max_size=2)
        try:
            stats = PostgresFleetStatistics(pool)
            now = datetime.now(UTC) + timedelta(seconds=1)

            async def floor() -> None:
                await pool.fetchval("SELECT count(*) FROM trackers")

            base = await timed(floor, repeat)
            print(f"  floor (count(*) over trackers):       {base * 1000:7.1f} ms")
            for group_by in GroupBy:
                for who, clients in (("admin", None), ("one client", frozenset({client}))):

                    async def run(
                        g: GroupBy = group_by, c: frozenset[uuid.UUID] | None = clients
                    ) -> None:
                        await stats.statistics(c, g, now)

                    spent = await timed(run, repeat)
                    print(
                        f"  by {group_by.value:15} ({who:10}): {spent * 1000:7.1f} ms"
                        f" = {spent / base:5.1f}x the floor"
                    )
        finally:
            await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trackers", type=int, default=250_000)
    ap.add_argument("--reports", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(bench(a.trackers, a.reports, a.repeat))


if __name__ == "__main__":
    main()
