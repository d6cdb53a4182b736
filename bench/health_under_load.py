"""Benchmark: how fast a worker process answers grpc.health.v1 checks while it works
through a large backlog (beside ingestion into the same database), against the same process
idle, in the same run. Kubernetes probes time out after ``timeoutSeconds`` (1 s by default,
2 s in the chart): the target is under 100 ms at any load. Prints p50/p99/max and the ratio
of the loaded p99 to the idle p99.

    .venv/bin/python -m bench.health_under_load --trackers 20000 --reports 4

``BENCH_WORKER_CMD`` replaces the worker's command line, e.g. to profile it:
``BENCH_WORKER_CMD="$PWD/.venv/bin/python -m cProfile -o w.prof -m servers.worker"``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.postgres.pool import open_pool
from adapters.postgres.processing import PostgresProcessingQueue
from adapters.postgres.reports import PostgresReportRepository
from bench.processing import free_port, make_world, new_reports
from bench.throwaway import throwaway_database

BIN = Path(sys.executable).parent


class Poller:
    """Health checks one after another (every ``every_s``) from a thread of their own, so
    what the bench's event loop does never delays them; records each latency."""

    def __init__(self, port: int, every_s: float = 0.02) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._every_s = every_s
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self._stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            except grpc.RpcError as err:
                self.failures.append(str(err.code()))
            else:
                self.latencies.append(time.perf_counter() - started)
            self._stop.wait(self._every_s)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_serving(port: int, timeout_s: float = 60) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError("the worker never became SERVING")


def figures(name: str, lat: list[float]) -> float:
    ms = sorted(x * 1000 for x in lat)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{name:34s} {len(ms):6d} checks  p50 {statistics.median(ms):7.1f} ms  "
        f"p99 {p99:7.1f} ms  max {ms[-1]:7.1f} ms"
    )
    return p99


async def run(trackers: int, per_tracker: int, batch: int, idle_s: float) -> None:
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        pool = await open_pool(url, max_size=1)
        try:
            ids = await make_world(conn, trackers)
            health_port = free_port()
            parts = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
            env = {
                **{k: v for k, v in os.environ.items() if k not in parts},
                "TRACKER_DATABASE_URL": url,
                "TRACKER_HEALTH_PORT": str(health_port),
                "TRACKER_METRICS_PORT": "0",
                "TRACKER_LOG_LEVEL": "WARNING",
                "TRACKER_WORKER_BATCH_SIZE": str(batch),
                "TRACKER_WORKER_IDLE_S": "0.2",
            }
            worker = await asyncio.create_subprocess_exec(
                *(os.environ.get("BENCH_WORKER_CMD", "").split() or [BIN / "tracker-worker"]),
                env=env,
            )
            try:
                await asyncio.to_thread(wait_serving, health_port)
                with Poller(health_port) as idle:
                    await asyncio.sleep(idle_s)
                rng = random.Random(7)
                reports = [
                    dataclasses.replace(r, report_time=r.report_time - timedelta(minutes=k))
                    for k in range(0, per_tracker, 2)
                    for r in new_reports(ids, rng)
                ]
                queue = PostgresProcessingQueue(pool)
                repo = PostgresReportRepository(conn)
                started = time.perf_counter()
                with Poller(health_port) as loaded:
                    for i in range(0, len(reports), 20_000):  # ingestion beside the worker
                        async with conn.transaction():
                            await repo.add_many(reports[i : i + 20_000])
                    ingested = time.perf_counter() - started
                    while True:
                        backlog = await queue.backlog()
                        if not backlog.waiting and backlog.oldest_arrival is None:
                            break
                        await asyncio.sleep(0.25)
                took = time.perf_counter() - started
            finally:
                worker.terminate()
                await worker.wait()
        finally:
            await pool.close()
            await conn.close()
    print(
        f"{trackers} trackers, {len(reports)} reports ingested in {ingested:.1f} s, "
        f"processed in batches of {batch} by one worker in {took:.1f} s"
    )
    base = figures("health, worker idle (baseline)", idle.latencies)
    busy = figures("health, worker processing backlog", loaded.latencies)
    print(
        f"p99 loaded / idle: {busy / base:.1f}x; failed checks: {idle.failures + loaded.failures}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=20_000)
    ap.add_argument("--reports", type=int, default=4, help="new reports per tracker (even)")
    ap.add_argument("--batch", type=int, default=2000, help="TRACKER_WORKER_BATCH_SIZE")
    ap.add_argument("--idle-s", type=float, default=3.0)
    args = ap.parse_args()
    asyncio.run(run(args.trackers, args.reports, args.batch, args.idle_s))


if __name__ == "__main__":
    main()
