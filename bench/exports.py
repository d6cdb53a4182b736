"""Benchmark of history exports (ExportQueryService/ExportHistory's use case) of one
production run of 250,000 reports (500 trackers x 500 reports), in CSV, GeoJSON and GPX,
against the floor measured in the same run: PostgreSQL's own ``COPY (the same query) TO
STDOUT (FORMAT csv)`` of the same rows into this process. Prints rows/s and the ratio.

    .venv/bin/python -m bench.exports --trackers 500 --per-tracker 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from adapters.postgres.exports import PostgresExportSource, points_sql
from adapters.postgres.pool import open_pool
from bench.processing import make_world
from bench.throwaway import throwaway_database
from domain.access import Principal
from domain.exports import ExportFormat, ExportQuery
from usecases.exports import HistoryExports


async def seed(conn: asyncpg.Connection, trackers: int, per_tracker: int) -> uuid.UUID:
    """``trackers`` trackers in one run with ``per_tracker`` reports each (the other runs
    of the world hold no reports); returns the run."""
    await make_world(conn, trackers * 50)  # 50 runs: one of them gets ``trackers``
    run: uuid.UUID = await conn.fetchval(
        "SELECT production_run_id FROM trackers GROUP BY 1 ORDER BY 1 LIMIT 1"
    )
    await conn.execute(
        """INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7, confidence,
               horizontal_accuracy_m, source)
           SELECT t.id, $2::timestamptz - i * interval '7 minutes', 525219000 + i * 997,
                  134132000 - i * 1301, 3, 10 + i % 40, 'findmy'
           FROM (SELECT id FROM trackers WHERE production_run_id = $1 ORDER BY id LIMIT $3) t,
                generate_series(1, $4) i""",
        run,
        datetime.now(UTC),
        trackers,
        per_tracker,
    )
    await conn.execute("ANALYZE")
    return run


async def timed(work: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, int]:
    spent, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = await work()
        spent.append(time.perf_counter() - t0)
    return statistics.median(spent), size


async def bench(trackers: int, per_tracker: int, repeat: int) -> None:
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        try:
            t0 = time.perf_counter()
            run = await seed(conn, trackers, per_tracker)
            rows = await conn.fetchval(
                "SELECT count(*) FROM reports r JOIN trackers t ON t.id = r.tracker_id"
                " WHERE t.production_run_id = $1",
                run,
            )
            print(
                f"exports: one run of {trackers} trackers, {rows:,} reports "
                f"(seeded in {time.perf_counter() - t0:.1f} s); median of {repeat}"
            )
        finally:
            await conn.close()
        pool = await open_pool(url, max_size=2)
        try:

            async def copy() -> int:
                size = 0

                async def sink(data: bytes) -> None:
                    nonlocal size
                    size += len(data)

                async with pool.acquire() as c:
                    await c.copy_from_query(
                        points_sql(run=True), run, None, None, 1, output=sink, format="csv"
                    )
                return size

            base, base_size = await timed(copy, repeat)
            print(
                f"  floor: COPY (the same query) TO STDOUT csv: {base:6.2f} s "
                f"{rows / base:10,.0f} rows/s {base_size / 2**20:7.1f} MiB"
            )
            exports = HistoryExports(PostgresExportSource(pool))
            for fmt in ExportFormat:

                async def export(f: ExportFormat = fmt) -> int:
                    size = 0
                    query = ExportQuery(f, production_run_id=run, min_confidence=1)
                    async for chunk in await exports.export(Principal.system(), query):
                        size += len(chunk)
                    return size

                spent, size = await timed(export, repeat)
                print(
                    f"  export {fmt.value:8}:                      {spent:6.2f} s "
                    f"{rows / spent:10,.0f} rows/s {size / 2**20:7.1f} MiB"
                    f"  = {spent / base:4.1f}x the COPY's time"
                )
        finally:
            await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trackers", type=int, default=500)
    ap.add_argument("--per-tracker", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(bench(a.trackers, a.per_tracker, a.repeat))


if __name__ == "__main__":
    main()
