"""Benchmark of reports: decrypted per second on one core (findmy's own decryption of payloads
our simulator encrypted), and stored per second with COPY (staging table + INSERT ... ON
CONFLICT) versus row-by-row INSERT ... ON CONFLICT, in the same run. Prints figures.

    .venv/bin/python -m bench.reports --reports 20000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from findmy import KeyPair
from findmy.reports.reports import LocationReport

from adapters.postgres.reports import PostgresReportRepository
from bench.throwaway import throwaway_database
from domain.model import GeoPoint
from domain.reports import Report, e7
from simulator.crypto import PlainReport, encrypt_report


async def bench(n: int) -> None:
    rng = random.Random(1)
    pair = KeyPair.new()
    now = datetime.now(UTC).replace(microsecond=0)
    payloads = [
        encrypt_report(
            pair.adv_key_bytes,
            PlainReport(
                now - timedelta(seconds=30 * i),
                rng.uniform(-80, 80),
                rng.uniform(-170, 170),
                rng.choice([1, 2, 3]),
                rng.randrange(200),
            ),
        )
        for i in range(n)
    ]
    t0 = time.perf_counter()
    decrypted = []
    for p in payloads:
        r = LocationReport(p, pair.hashed_adv_key_bytes)
        r.decrypt(pair)
        decrypted.append(r)
    decrypt_s = time.perf_counter() - t0

    tracker = uuid.uuid4()
    reports = [
        Report(
            tracker_id=tracker,
            report_time=r.timestamp.astimezone(UTC),
            position=GeoPoint(r.latitude, r.longitude),
            confidence=r.confidence,
            horizontal_accuracy_m=r.horizontal_accuracy,
        )
        for r in decrypted
    ]
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        try:
            repo = PostgresReportRepository(conn)
            t0 = time.perf_counter()
            async with conn.transaction():
                for start in range(0, n, 5000):
                    await repo.add_many(reports[start : start + 5000])
            copy_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            async with conn.transaction():
                again = 0
                for start in range(0, n, 5000):
                    again += await repo.add_many(reports[start : start + 5000])
            dup_s = time.perf_counter() - t0
            await conn.execute("TRUNCATE reports")
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7, "
                    "confidence, horizontal_accuracy_m, status, source) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    [
                        (
                            r.tracker_id,
                            r.report_time,
                            e7(r.position.latitude),
                            e7(r.position.longitude),
                            r.confidence,
                            r.horizontal_accuracy_m,
                            r.status,
                            r.source,
                        )
                        for r in reports
                    ],
                )
            insert_s = time.perf_counter() - t0
        finally:
            await conn.close()
    print(f"reports                                 {n}")
    print(f"decrypted (findmy, one core):         {n / decrypt_s:10.0f} reports/s")
    print(f"stored with COPY + ON CONFLICT:       {n / copy_s:10.0f} reports/s")
    print(f"  the same again (all duplicates):    {n / dup_s:10.0f} reports/s, {again} new")
    print(f"stored with INSERT (executemany):     {n / insert_s:10.0f} reports/s")
    print(f"  ratio COPY/INSERT:                  {insert_s / copy_s:10.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reports", type=int, default=20000)
    asyncio.run(bench(ap.parse_args().reports))


if __name__ == "__main__":
    main()
