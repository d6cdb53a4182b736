"""Benchmark: how fast a worker process answers grpc.health.v1 checks while it works
through a large backlog (beside ingestion into the same database), against the same process
idle, in the same run; each also beside ``--hogs`` busy processes (external CPU load, as
other pods on the node). Kubernetes probes time out after ``timeoutSeconds`` (1 s by
default, 2 s in the chart): the target is under 100 ms at any load. Prints p50/p99/max and
the load average of each phase, and the ratio of the loaded p99 to the idle p99.

The checks come from a process of their own (a client thread beside the bench's own
ingestion would wait for the bench's GIL and count that as the server's latency).

    .venv/bin/python -m bench.health_under_load --trackers 20000 --reports 4 --hogs 4

``BENCH_WORKER_CMD`` replaces the worker's command line, e.g. to profile it:
``BENCH_WORKER_CMD="$PWD/.venv/bin/python -m cProfile -o w.prof -m servers.worker"``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.ports import free_port

from adapters.postgres.pool import open_pool
from adapters.postgres.processing import PostgresProcessingQueue
from adapters.postgres.reports import PostgresReportRepository
from bench.processing import make_world, new_reports
from bench.throwaway import throwaway_database

BIN = Path(sys.executable).parent


def _poll(port: int, every_s: float, ready: Any, stop: Any, out: Any) -> None:
    """Health checks one after another (every ``every_s``) until ``stop`` is set; sends the
    latencies and failures back through ``out``. ``ready``: set once connected."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    stub.Check(health_pb2.HealthCheckRequest(), timeout=30)  # connected, not counted
    ready.set()
    latencies: list[float] = []
    failures: list[str] = []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as err:
            failures.append(str(err.code()))
        else:
            latencies.append(time.perf_counter() - started)
        stop.wait(every_s)
    channel.close()
    out.send((latencies, failures))


class Poller:
    """Health checks from a process of their own (``_poll``), for the ``with`` block."""

    def __init__(self, port: int, every_s: float = 0.02) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop, self._ready = ctx.Event(), ctx.Event()
        self._inbox, out = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_poll, args=(port, every_s, self._ready, self._stop, out)
        )
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.load = ""

    def __enter__(self) -> Poller:
        self._process.start()
        if not self._ready.wait(60):
            raise RuntimeError("the health poller did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.load = f"{os.getloadavg()[0]:.1f}"
        self._stop.set()
        self.latencies, self.failures = self._inbox.recv()
        self._process.join()


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


class Hogs:
    """``n`` busy processes for the ``with`` block (external CPU load)."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._procs = [ctx.Process(target=_spin, args=(self._stop,)) for _ in range(n)]

    def __enter__(self) -> Hogs:
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join()


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


def figures(name: str, poller: Poller) -> float:
    ms = sorted(x * 1000 for x in poller.latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{name:44s} load {poller.load:>5s}  {len(ms):5d} checks  "
        f"p50 {statistics.median(ms):6.1f} ms  p99 {p99:6.1f} ms  max {ms[-1]:6.1f} ms"
    )
    return p99


async def run(
    trackers: int, per_tracker: int, batch: int, idle_s: float, hogs: int, own_process: bool
) -> None:
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
                "TRACKER_HEALTH_PROCESS": "true" if own_process else "false",
            }
            worker = await asyncio.create_subprocess_exec(
                *(os.environ.get("BENCH_WORKER_CMD", "").split() or [BIN / "tracker-worker"]),
                env=env,
            )
            queue = PostgresProcessingQueue(pool)
            repo = PostgresReportRepository(conn)
            rng = random.Random(7)

            async def backlog(shift: int) -> tuple[Poller, int, float, float]:
                """New reports of every tracker, ingested while the worker processes them."""
                reports = [
                    dataclasses.replace(
                        r, report_time=r.report_time - timedelta(minutes=k, seconds=shift)
                    )
                    for k in range(0, per_tracker, 2)
                    for r in new_reports(ids, rng)
                ]
                started = time.perf_counter()
                with Poller(health_port) as loaded:
                    for i in range(0, len(reports), 20_000):  # ingestion beside the worker
                        async with conn.transaction():
                            await repo.add_many(reports[i : i + 20_000])
                    ingested = time.perf_counter() - started
                    while True:
                        waiting = await queue.backlog()
                        if not waiting.waiting and waiting.oldest_arrival is None:
                            break
                        await asyncio.sleep(0.25)
                return loaded, len(reports), ingested, time.perf_counter() - started

            try:
                await asyncio.to_thread(wait_serving, health_port)
                with Poller(health_port) as idle:
                    await asyncio.sleep(idle_s)
                loaded, count, ingested, took = await backlog(0)
                results = [("health, worker idle (baseline)", idle)]
                results.append(("health, worker processing backlog", loaded))
                if hogs:
                    with Hogs(hogs), Poller(health_port) as idle_hogs:
                        await asyncio.sleep(idle_s)
                    with Hogs(hogs):
                        loaded_hogs, *_ = await backlog(1)
                    results.append((f"health, worker idle, {hogs} CPU hogs", idle_hogs))
                    results.append((f"health, backlog, {hogs} CPU hogs", loaded_hogs))
            finally:
                worker.terminate()
                await worker.wait()
        finally:
            await pool.close()
            await conn.close()
    print(
        f"{trackers} trackers, {count} reports ingested in {ingested:.1f} s, "
        f"processed in batches of {batch} by one worker in {took:.1f} s "
        f"({os.cpu_count()} CPUs); health served "
        + ("by a child process (TRACKER_HEALTH_PROCESS)" if own_process else "in the worker")
    )
    p99s = [figures(name, poller) for name, poller in results]
    failed = [f for _, poller in results for f in poller.failures]
    print(f"p99 loaded / idle: {p99s[1] / p99s[0]:.1f}x; failed checks: {failed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=20_000)
    ap.add_argument("--reports", type=int, default=4, help="new reports per tracker (even)")
    ap.add_argument("--batch", type=int, default=2000, help="TRACKER_WORKER_BATCH_SIZE")
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--hogs", type=int, default=0, help="busy processes beside (phases 3-4)")
    ap.add_argument(
        "--health-process", action="store_true", help="the worker with TRACKER_HEALTH_PROCESS"
    )
    args = ap.parse_args()
    asyncio.run(
        run(
            args.trackers,
            args.reports,
            args.batch,
            args.idle_s,
            args.hogs,
            args.health_process,
        )
    )


if __name__ == "__main__":
    main()
