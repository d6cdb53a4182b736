"""Benchmark: creating trackers through the collector, one unary call each versus
BatchCreateTrackers, in the same run against the same server and database (a ratio, since the
machine is noisy). Prints figures; asserts nothing.

    make bench          # or: .venv/bin/python -m bench.setup_api --trackers 5000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc

from adapters.postgres.migrator import migrate
from servers import endpoints
from servers.config import Settings
from servers.runtime import Process
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_query_service_pb2_grpc as q_grpc
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import setup_service_pb2_grpc as s_grpc

ADMIN_URL = os.environ.get(
    "TRACKER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def key(n: int, salt: int) -> bytes:
    return hashlib.sha256(f"{salt}-{n}".encode()).digest()[:28]


async def run_run(setup: s_grpc.SetupServiceStub) -> str:
    client = (
        await setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="b")))
    ).client
    brand = (
        await setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="b"))
        )
    ).brand
    r = pb.ProductionRun(brand_id=brand.id, display_name="bench")
    r.start_time.FromJsonString("2026-01-01T00:00:00Z")
    r.end_time.FromJsonString("2027-01-01T00:00:00Z")
    return (
        await setup.CreateProductionRun(s.CreateProductionRunRequest(production_run=r))
    ).production_run.id


async def bench(n: int, concurrency: int) -> None:
    db = f"tracker_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{db}"')
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + db))
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    settings = Settings(
        database_url=url, collector_port=0, query_port=0, health_port=0, log_level="WARNING"
    )
    process = Process(settings, [endpoints.collector(settings), endpoints.query(settings)])
    ports = await process.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{ports['collector']}") as ch,
            grpc.aio.insecure_channel(f"127.0.0.1:{ports['query']}") as qch,
        ):
            setup, query = s_grpc.SetupServiceStub(ch), q_grpc.SetupQueryServiceStub(qch)

            run = await run_run(setup)
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with sem:
                    await setup.CreateTracker(
                        s.CreateTrackerRequest(
                            tracker=pb.Tracker(production_run_id=run, advertisement_key=key(i, 1))
                        )
                    )

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            unary_s = time.perf_counter() - t0

            run2 = await run_run(setup)
            t0 = time.perf_counter()
            for start in range(0, n, 1000):
                await setup.BatchCreateTrackers(
                    s.BatchCreateTrackersRequest(
                        production_run_id=run2,
                        trackers=[
                            pb.Tracker(advertisement_key=key(i, 2))
                            for i in range(start, min(n, start + 1000))
                        ],
                    )
                )
            batch_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            token, listed = "", 0
            while True:
                page = await query.ListTrackers(
                    q.ListTrackersRequest(production_run_id=run2, page_size=1000, page_token=token)
                )
                listed += len(page.trackers)
                token = page.next_page_token
                if not token:
                    break
            list_s = time.perf_counter() - t0
        print(f"trackers                 {n}")
        print(f"CreateTracker (unary, {concurrency} in flight): {n / unary_s:10.0f} trackers/s")
        print(f"BatchCreateTrackers (1000 per call):   {n / batch_s:10.0f} trackers/s")
        print(f"ratio batch/unary:                      {unary_s / batch_s:10.1f}x")
        print(f"ListTrackers (1000 per page):          {listed / list_s:10.0f} trackers/s")
    finally:
        await process.stop(0)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    asyncio.run(bench(args.trackers, args.concurrency))


if __name__ == "__main__":
    main()
