"""Benchmark of the setup API, through real gRPC on loopback against a throwaway database.

Figures are ratios against a baseline measured in the same run, since the machine is noisy:
- creating trackers one unary call each versus BatchCreateTrackers (1000 per call);
- listing trackers, 1000 per page;
- GetTracker latency (authenticated: JWT check + user lookup + the read) versus a
  grpc.health.v1 Check on the same server (no auth, no database).
Prints figures; asserts nothing.

    make bench          # or: .venv/bin/python -m bench.setup_api --trackers 5000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from datetime import timedelta

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.throwaway import throwaway_database
from domain.access import Principal
from servers import endpoints
from servers.config import Settings
from servers.runtime import Process
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_query_service_pb2_grpc as q_grpc
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import setup_service_pb2_grpc as s_grpc
from usecases.access import NewUser


def key(n: int, salt: int) -> bytes:
    return hashlib.sha256(f"{salt}-{n}".encode()).digest()[:28]


def percentile(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))]


async def make_run(setup: s_grpc.SetupServiceStub, auth: tuple[tuple[str, str], ...]) -> str:
    client = (
        await setup.CreateClient(
            s.CreateClientRequest(client=pb.Client(display_name="bench")), metadata=auth
        )
    ).client
    brand = (
        await setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="bench")),
            metadata=auth,
        )
    ).brand
    run = pb.ProductionRun(brand_id=brand.id, display_name="bench")
    run.start_time.FromJsonString("2026-01-01T00:00:00Z")
    run.end_time.FromJsonString("2027-01-01T00:00:00Z")
    return (
        await setup.CreateProductionRun(
            s.CreateProductionRunRequest(production_run=run), metadata=auth
        )
    ).production_run.id


async def bench(n: int, concurrency: int, samples: int) -> None:
    async with throwaway_database() as url:
        settings = Settings(
            database_url=url,
            collector_port=0,
            query_port=0,
            health_port=0,
            metrics_port=0,
            log_level="WARNING",
        )
        process = Process(settings, [endpoints.collector(settings), endpoints.query(settings)])
        ports = await process.start()
        try:
            access = await process.container.access_usecases.async_()
            await access.create_user(
                Principal.system(),
                NewUser(email="bench@example.com", password="bench-password-123", admin=True),
            )
            token, _ = await access.mint_service_token(
                Principal.system(), "bench@example.com", timedelta(hours=1)
            )
            auth = (("authorization", f"Bearer {token}"),)
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{ports['collector']}") as ch,
                grpc.aio.insecure_channel(f"127.0.0.1:{ports['query']}") as qch,
            ):
                setup, query = s_grpc.SetupServiceStub(ch), q_grpc.SetupQueryServiceStub(qch)
                health = health_pb2_grpc.HealthStub(qch)
                sem = asyncio.Semaphore(concurrency)
                run = await make_run(setup, auth)

                async def one(i: int) -> None:
                    async with sem:
                        await setup.CreateTracker(
                            s.CreateTrackerRequest(
                                tracker=pb.Tracker(
                                    production_run_id=run, advertisement_key=key(i, 1)
                                )
                            ),
                            metadata=auth,
                        )

                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(n)))
                unary_s = time.perf_counter() - t0

                run2 = await make_run(setup, auth)
                t0 = time.perf_counter()
                for start in range(0, n, 1000):
                    await setup.BatchCreateTrackers(
                        s.BatchCreateTrackersRequest(
                            production_run_id=run2,
                            trackers=[
                                pb.Tracker(advertisement_key=key(i, 2))
                                for i in range(start, min(n, start + 1000))
                            ],
                        ),
                        metadata=auth,
                    )
                batch_s = time.perf_counter() - t0

                t0 = time.perf_counter()
                token_, listed, first_id = "", 0, ""
                while True:
                    page = await query.ListTrackers(
                        q.ListTrackersRequest(
                            production_run_id=run2, page_size=1000, page_token=token_
                        ),
                        metadata=auth,
                    )
                    listed += len(page.trackers)
                    first_id = first_id or page.trackers[0].id
                    token_ = page.next_page_token
                    if not token_:
                        break
                list_s = time.perf_counter() - t0

                get_ms, health_ms = [], []
                for _ in range(samples):
                    t0 = time.perf_counter()
                    await health.Check(health_pb2.HealthCheckRequest())
                    health_ms.append((time.perf_counter() - t0) * 1e3)
                    t0 = time.perf_counter()
                    await query.GetTracker(q.GetTrackerRequest(id=first_id), metadata=auth)
                    get_ms.append((time.perf_counter() - t0) * 1e3)
            print(f"trackers                                 {n}")
            print(f"CreateTracker (unary, {concurrency} in flight): {n / unary_s:10.0f} trackers/s")
            print(f"BatchCreateTrackers (1000 per call):    {n / batch_s:10.0f} trackers/s")
            print(f"  ratio batch/unary:                     {unary_s / batch_s:10.1f}x")
            print(f"ListTrackers (1000 per page):           {listed / list_s:10.0f} trackers/s")
            for name, ms in (
                ("Health.Check (baseline)", health_ms),
                ("GetTracker (auth+read)", get_ms),
            ):
                print(
                    f"{name:28} p50 {statistics.median(ms):6.2f} ms   "
                    f"p99 {percentile(ms, 0.99):6.2f} ms   ({samples} sequential calls)"
                )
            print(
                f"  ratio GetTracker/Check p50:            "
                f"{statistics.median(get_ms) / statistics.median(health_ms):10.1f}x"
            )
        finally:
            await process.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    asyncio.run(bench(args.trackers, args.concurrency, args.samples))


if __name__ == "__main__":
    main()
