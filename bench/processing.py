"""Benchmark of processing: status evaluation of many trackers with new reports in batches
(one set-based query per batch) against one tracker per query, in the same run; roll-up and
geocoding throughput; and current-status query latency (p50/p99) at a fixed request rate
through a real query server, against a plain health check as the baseline. Prints figures.

    .venv/bin/python -m bench.processing --trackers 250000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.ports import free_port

from adapters.geonames import geonames_cities
from adapters.postgres.geocoding import PostgresGeocoder, load_cities
from adapters.postgres.pool import open_pool
from adapters.postgres.processing import (
    PostgresProcessingQueue,
    PostgresProcessingUnitOfWork,
    PostgresProcessingUnitOfWorkFactory,
)
from adapters.postgres.reports import PostgresReportRepository
from bench.throwaway import throwaway_database
from domain.model import GeoPoint
from domain.ports.processing import Claim
from domain.reports import Report
from servers.config import Settings
from servers.container import Container
from tracker.v1 import setup_query_service_pb2 as sq
from tracker.v1 import setup_query_service_pb2_grpc as sq_grpc
from tracker.v1 import status_query_service_pb2 as q
from tracker.v1 import status_query_service_pb2_grpc as q_grpc
from usecases.processing import ProcessNewReports, evaluate_statuses

BIN = Path(sys.executable).parent
RUNS = 50
BERLIN, HAMBURG, ROAD = (52.5219, 13.4132), (53.5461, 9.9661), (53.0, 11.5)


async def make_world(conn: asyncpg.Connection, trackers: int) -> list[uuid.UUID]:
    now = datetime.now(UTC)
    client, brand = uuid.uuid4(), uuid.uuid4()
    await conn.execute("INSERT INTO clients VALUES ($1, 'bench', $2, $2)", client, now)
    await conn.execute("INSERT INTO brands VALUES ($1, $2, 'bench', $3, $3)", brand, client, now)
    runs = [uuid.uuid4() for _ in range(RUNS)]
    for i, run in enumerate(runs):
        await conn.execute(
            "INSERT INTO production_runs VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            run, brand, client, f"run {i}", now - timedelta(days=10), now + timedelta(days=90), now,
        )  # fmt: skip
        for kind, (lat, lon), radius in (("DELIVERY", BERLIN, 150), ("STORAGE", HAMBURG, 400)):
            await conn.execute(
                """INSERT INTO locations (id, production_run_id, client_id, kind, display_name,
                       center, radius_m, create_time, update_time)
                   VALUES ($1, $2, $3, $4, $4,
                       ST_SetSRID(ST_MakePoint($5, $6), 4326)::geography, $7, $8, $8)""",
                uuid.uuid4(), run, client, kind, lon + i * 1e-3, lat, radius, now,
            )  # fmt: skip
    await conn.execute(
        """INSERT INTO trackers (id, client_id, production_run_id, mac_address,
               advertisement_key, hashed_advertisement_key, create_time, update_time)
           SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + i % $3], 'M' || i,
                  substring(sha256(i::text::bytea) for 28),
                  sha256(substring(sha256(i::text::bytea) for 28)), $4, $4
           FROM generate_series(1, $5) AS i""",
        client, runs, RUNS, now, trackers,
    )  # fmt: skip
    return [r["id"] for r in await conn.fetch("SELECT id FROM trackers ORDER BY id")]


def new_reports(trackers: list[uuid.UUID], rng: random.Random) -> list[Report]:
    """Two reports per tracker in the last hour: in storage, on the road or delivered."""
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for n, t in enumerate(trackers):
        lat, lon = rng.choice([BERLIN, HAMBURG, ROAD])
        lon += (n % RUNS) * 1e-3
        for k in range(2):
            out.append(
                Report(
                    tracker_id=t,
                    report_time=now - timedelta(minutes=30 - 10 * k),
                    position=GeoPoint(lat + rng.uniform(-1e-3, 1e-3), lon),
                    confidence=rng.choice([2, 3]),
                    horizontal_accuracy_m=rng.randrange(5, 100),
                )
            )
    return out


STATS: dict[str, int] = {}  # trackers replayed in bulk / one by one


async def evaluate(uow: PostgresProcessingUnitOfWork, claims: list[Claim]) -> int:
    """The status step of ProcessNewReports for a batch of claims."""
    return await evaluate_statuses(uow, claims, stats=STATS)


async def latency(url: str, trackers: list[uuid.UUID], rates: list[int], seconds: float) -> None:
    container = Container(settings=Settings(database_url=url))
    await container.init_resources()  # type: ignore[misc]
    access = await container.access_usecases.async_()
    from domain.access import Principal
    from usecases.access import NewUser

    await access.create_user(
        Principal.system(), NewUser(email="bench@example.com", password="x" * 16, admin=True)
    )
    token, _ = await access.mint_service_token(
        Principal.system(), "bench@example.com", timedelta(hours=1)
    )
    await container.shutdown_resources()  # type: ignore[misc]
    port, health_port = free_port(), free_port()
    # DB_NAME and friends would override the URL (config.compose_database_url).
    parts = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
    env = {
        **{k: v for k, v in os.environ.items() if k not in parts},
        "TRACKER_DATABASE_URL": url,
        "TRACKER_QUERY_PORT": str(port),
        "TRACKER_HEALTH_PORT": str(health_port),
        "TRACKER_METRICS_PORT": "0",
        "TRACKER_LOG_LEVEL": "WARNING",
    }
    server = await asyncio.create_subprocess_exec(BIN / "tracker-query", env=env)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        stub = q_grpc.StatusQueryServiceStub(channel)
        meta = (("authorization", f"Bearer {token}"),)
        rng = random.Random(2)

        async def status_call() -> None:
            tid = str(rng.choice(trackers))
            await stub.GetTrackerStatus(q.GetTrackerStatusRequest(tracker_id=tid), metadata=meta)

        async def health_call() -> None:
            await health.Check(health_pb2.HealthCheckRequest())

        setup = sq_grpc.SetupQueryServiceStub(channel)

        async def tracker_call() -> None:
            tid = str(rng.choice(trackers))
            await setup.GetTracker(sq.GetTrackerRequest(id=tid), metadata=meta)

        for rps in rates:
            for name, call in (
                ("health check (no auth, no DB)", health_call),
                ("SetupQuery/GetTracker (auth+DB)", tracker_call),
                ("GetTrackerStatus", status_call),
            ):
                for _ in range(200):  # warm-up: connections, plans, caches
                    await call()
                lat: list[float] = []
                failed: list[grpc.StatusCode] = []

                async def one(call=call, lat=lat, failed=failed) -> None:  # type: ignore[no-untyped-def]
                    t = time.perf_counter()
                    try:
                        await call()
                    except grpc.aio.AioRpcError as err:  # overload: counted, not timed
                        failed.append(err.code())
                        return
                    lat.append(time.perf_counter() - t)

                tasks = []
                start = time.perf_counter()
                n = int(rps * seconds)
                for i in range(n):  # open loop: a request every 1/rps seconds, answered or not
                    delay = start + i / rps - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one()))
                await asyncio.gather(*tasks)
                took = time.perf_counter() - start
                lat.sort()
                p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
                print(
                    f"{rps:5d} req/s asked  {name:<32} {len(lat) / took:5.0f} ok/s  "
                    f"p50 {p50 * 1e3:6.2f} ms  "
                    f"p99 {p99 * 1e3:6.2f} ms  mean {statistics.fmean(lat) * 1e3:6.2f} ms"
                    + (f"  failed {len(failed)} ({failed[0].name})" if failed else "")
                )
        await channel.close()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 20)


async def bench(n: int, batch: int, sample: int, rates: list[int], seconds: float) -> None:
    rng = random.Random(1)
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        t = time.perf_counter()
        cities = await load_cities(conn, geonames_cities(1000))
        print(
            f"cities loaded (cities1000):           {cities:10d} in {time.perf_counter() - t:.1f} s"
        )
        trackers = await make_world(conn, n)
        reports = new_reports(trackers, rng)
        repo = PostgresReportRepository(conn)
        t = time.perf_counter()
        for i in range(0, len(reports), 50_000):
            async with conn.transaction():
                await repo.add_many(reports[i : i + 50_000])
        ingest_s = time.perf_counter() - t
        queued = await conn.fetchval("SELECT count(DISTINCT tracker_id) FROM processing_inbox")
        print(f"trackers with new reports:            {queued:10d} ({len(reports)} reports)")
        print(f"  stored (COPY, queue trigger):       {len(reports) / ingest_s:10.0f} reports/s")
        await conn.close()

        pool = await open_pool(url, max_size=8)
        queue = PostgresProcessingQueue(pool)
        geocoder = PostgresGeocoder(pool)
        # The baseline first: the status step for `sample` trackers, one tracker per query.
        single_s = 0.0
        for _ in range(sample):
            token = uuid.uuid4()
            claims = await queue.claim(token, 1, 600)
            async with PostgresProcessingUnitOfWork(pool) as uow:
                mine = await uow.lock(token, claims)
                t = time.perf_counter()
                await evaluate(uow, mine)
                single_s += time.perf_counter() - t
                await uow.complete(token, mine, claims)
                await uow.commit()
        single_rate = sample / single_s

        phases = dict(claim=0.0, geocode=0.0, rollup=0.0, status=0.0, commit=0.0)
        geocoded = buckets = changes = 0
        all_claims: list[Claim] = []
        total = time.perf_counter()
        while True:
            t = time.perf_counter()
            token = uuid.uuid4()
            claims = await queue.claim(token, batch, 600)
            phases["claim"] += time.perf_counter() - t
            if not claims:
                break
            all_claims += claims
            async with PostgresProcessingUnitOfWork(pool) as uow:
                mine = await uow.lock(token, claims)
                t = time.perf_counter()
                todo = await uow.ungeocoded(mine)
                found = await geocoder.nearest([p for _, _, p in todo])
                await uow.set_nearest_cities(
                    [
                        (tr, k, c.city.geonameid)
                        for (tr, k, _), c in zip(todo, found, strict=True)
                        if c
                    ]
                )
                geocoded += len(todo)
                t2 = time.perf_counter()
                phases["geocode"] += t2 - t
                buckets += await uow.reroll(mine)
                t3 = time.perf_counter()
                phases["rollup"] += t3 - t2
                changes += await evaluate(uow, mine)
                t4 = time.perf_counter()
                phases["status"] += t4 - t3
                await uow.complete(token, mine, claims)
                await uow.commit()
                phases["commit"] += time.perf_counter() - t4
        total_s = time.perf_counter() - total
        print(
            f"processed in batches of {batch}:"
            f"         {len(all_claims) / total_s:10.0f} trackers/s "
            f"({total_s:.1f} s in all)"
        )
        print(
            f"  geocoding (KNN + cell cache):       "
            f"{geocoded / max(phases['geocode'], 1e-9):10.0f} reports/s "
            f"(cache hits {geocoder.hits}, misses {geocoder.misses})"
        )
        print(
            f"  roll-ups (hourly + daily):          "
            f"{buckets / max(phases['rollup'], 1e-9):10.0f} buckets/s "
            f"({buckets} hourly buckets, {phases['rollup']:.1f} s)"
        )
        print(
            f"  status, batched:                    "
            f"{len(all_claims) / max(phases['status'], 1e-9):10.0f} trackers/s "
            f"({phases['status']:.1f} s for {len(all_claims)}, {changes} changes)"
        )

        batched_rate = len(all_claims) / max(phases["status"], 1e-9)
        print(
            f"  status, one tracker per query:      {single_rate:10.0f} trackers/s "
            f"(sample of {sample}; {queued / single_rate:.0f} s for all)"
        )
        print(f"  ratio batched / one per query:      {batched_rate / single_rate:10.1f}x")

        # Steady state: one more report per tracker (in order, so each tracker continues
        # from its checkpoint), through the worker's own use case, 1 and then 2 batches at
        # once (TRACKER_WORKER_CONCURRENCY).
        process = ProcessNewReports(
            queue, PostgresProcessingUnitOfWorkFactory(pool), geocoder, batch
        )
        for round_, concurrency in enumerate((1, 2), start=1):
            later = [
                Report(
                    tracker_id=t,
                    report_time=datetime.now(UTC).replace(microsecond=0)
                    - timedelta(minutes=5 - round_),
                    position=GeoPoint(*rng.choice([BERLIN, HAMBURG, ROAD])),
                    confidence=3,
                    horizontal_accuracy_m=20,
                )
                for t in trackers
            ]
            async with pool.acquire() as conn:
                repo = PostgresReportRepository(conn)
                for i in range(0, len(later), 50_000):
                    async with conn.transaction():
                        await repo.add_many(later[i : i + 50_000])

            # What ingestion appended to the inbox goes into the queue at the workers' next
            # claim (before issue 13 the trigger did this upsert inside ingestion).
            t = time.perf_counter()
            folded = 0
            while moved := await queue.fold():
                folded += moved
            print(
                f"  inbox folded into the queue:        {folded / (time.perf_counter() - t):10.0f}"
                f" rows/s ({folded} rows, {time.perf_counter() - t:.1f} s)"
            )

            async def drain() -> int:
                done = 0
                while (b := await process()).claimed:
                    done += b.trackers
                return done

            t = time.perf_counter()
            done = sum(await asyncio.gather(*(drain() for _ in range(concurrency))))
            took = time.perf_counter() - t
            print(
                f"steady state, {concurrency} batch(es) at once:  {done / took:10.0f} trackers/s "
                f"({done} trackers with a new report in {took:.1f} s: city, roll-ups, status)"
            )
        await pool.close()
        await latency(url, trackers, rates, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=250_000)
    ap.add_argument("--batch", type=int, default=25_000, help="trackers per batch")
    ap.add_argument("--sample", type=int, default=2000, help="trackers for the baseline")
    ap.add_argument(
        "--rps", default="200,1000", help="query rates (comma-separated) for the latency figures"
    )
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    rates = [int(r) for r in a.rps.split(",")]
    asyncio.run(bench(a.trackers, a.batch, a.sample, rates, a.seconds))


if __name__ == "__main__":
    main()
