"""Benchmark of idempotent creates (issue 15), through real gRPC on loopback against a
throwaway database: CreateTracker without a request_id (the baseline, same run), with a new
request_id each (claim + create + keep the response + purge), and retries of those request_ids
(each answered from the kept response). Prints figures; asserts nothing.

    .venv/bin/python -m bench.idempotency --trackers 3000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc

from bench.setup_api import key, make_run
from bench.throwaway import throwaway_database
from domain.access import Principal
from servers import endpoints
from servers.config import Settings
from servers.runtime import Process
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import setup_service_pb2_grpc as s_grpc
from usecases.access import NewUser


async def timed(n: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t0)


async def bench(n: int, concurrency: int) -> None:
    async with throwaway_database() as url:
        settings = Settings(
            database_url=url,
            collector_port=0,
            query_port=0,
            health_port=0,
            metrics_port=0,
            log_level="WARNING",
        )
        process = Process(settings, [endpoints.collector(settings)])
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
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['collector']}") as ch:
                setup = s_grpc.SetupServiceStub(ch)
                run = await make_run(setup, auth)
                ids = [str(uuid.uuid4()) for _ in range(n)]

                def request(i: int, salt: int, request_id: str = "") -> s.CreateTrackerRequest:
                    tracker = pb.Tracker(production_run_id=run, advertisement_key=key(i, salt))
                    return s.CreateTrackerRequest(tracker=tracker, request_id=request_id)

                async def plain(i: int) -> object:
                    return await setup.CreateTracker(request(i, 1), metadata=auth)

                async def keyed(i: int) -> object:
                    return await setup.CreateTracker(request(i, 2, ids[i]), metadata=auth)

                await timed(
                    200, concurrency, lambda i: setup.CreateTracker(request(i, 0), metadata=auth)
                )  # fmt: skip  (warm-up)
                baseline = await timed(n, concurrency, plain)
                first = await timed(n, concurrency, keyed)
                replay = await timed(n, concurrency, keyed)
            print(f"CreateTracker, {n} calls, {concurrency} in flight")
            print(f"  without request_id (baseline): {baseline:8.0f} calls/s")
            print(
                f"  with a new request_id:         {first:8.0f} calls/s"
                f"   ({first / baseline:.2f}x of baseline)"
            )
            print(
                f"  retried (answered from store): {replay:8.0f} calls/s"
                f"   ({replay / baseline:.2f}x of baseline)"
            )
        finally:
            await process.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    asyncio.run(bench(args.trackers, args.concurrency))


if __name__ == "__main__":
    main()
