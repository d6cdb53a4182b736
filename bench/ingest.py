"""Benchmark of report ingestion end to end: `ReportService/IngestReports` from a real gRPC
client (this process) to committed rows, through a `tracker-collector` process, beside raw
COPY of the same number of reports into the same table in the same run (the ceiling), by
tracker id and by hashed key, with 1,000- and 5,000-report messages. Then one more run with a
`tracker-worker` process beside it, sampling the processing lag (age of the oldest queued
report) while ingest runs and the time to drain afterwards. Prints figures.

    .venv/bin/python -m bench.ingest --trackers 1000 --reports 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import timedelta

import asyncpg
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.ports import free_port

from adapters.grpc.reports import MAX_REPORTS_PER_TRANSACTION
from bench.processing import BIN, make_world
from bench.throwaway import throwaway_database
from servers.config import Settings
from servers.container import Container
from tracker.v1 import report_service_pb2 as r

METHOD = "/tracker.v1.ReportService/IngestReports"
COLUMNS = [
    "tracker_id",
    "report_time",
    "latitude_e7",
    "longitude_e7",
    "confidence",
    "horizontal_accuracy_m",
    "status",
    "source",
]


def messages(
    trackers: list[tuple[uuid.UUID, bytes]], n: int, size: int, by_key: bool, seed: int
) -> list[bytes]:
    """``n`` distinct reports of the last three days in serialized messages of ``size``."""
    rng = random.Random(seed)
    now = int(time.time())
    out = []
    for start in range(0, n, size):
        msg = r.IngestReportsRequest()
        for i in range(start, min(n, start + size)):
            tid, key = trackers[i % len(trackers)]
            m = msg.reports.add()
            if by_key:
                m.hashed_advertisement_key = key
            else:
                m.tracker_id = str(tid)
            m.report_time.seconds = now - rng.randrange(3 * 86400)
            m.latitude = rng.uniform(47.0, 55.0)
            m.longitude = rng.uniform(6.0, 15.0)
            m.confidence = rng.choice((1, 2, 3))
            m.horizontal_accuracy_m = rng.randrange(5, 200)
            m.source = "bench"
        out.append(msg.SerializeToString())
    return out


def copy_payloads(
    trackers: list[tuple[uuid.UUID, bytes]], n: int, size: int, seed: int
) -> list[memoryview]:
    """Binary COPY data for ``reports`` (no published time, source "bench"), encoded ahead:
    the raw COPY baseline times the database's side only."""
    rng = random.Random(seed)
    now_us = int(time.time()) * 1_000_000 - 946_684_800_000_000
    fields = [
        ("tracker_id", "V16"),
        ("report_time", ">i8"),
        ("latitude_e7", ">i4"),
        ("longitude_e7", ">i4"),
        ("confidence", ">i2"),
        ("horizontal_accuracy_m", ">i4"),
        ("status", ">i2"),
        ("source", "S5"),
    ]
    row = np.dtype(
        [("count", ">i2")] + [x for f, k in fields for x in ((f"len_{f}", ">i4"), (f, k))]
    )
    out = []
    for start in range(0, n, size):
        m = min(n, start + size) - start
        a = np.zeros(m, dtype=row)
        a["count"] = len(fields)
        for f, k in fields:
            a[f"len_{f}"] = np.dtype(k).itemsize
        a["tracker_id"] = np.frombuffer(
            b"".join(trackers[(start + i) % len(trackers)][0].bytes for i in range(m)), "V16"
        )
        a["report_time"] = [now_us - rng.randrange(3 * 86400) * 1_000_000 for _ in range(m)]
        a["latitude_e7"] = [round(rng.uniform(47.0, 55.0) * 1e7) for _ in range(m)]
        a["longitude_e7"] = [round(rng.uniform(6.0, 15.0) * 1e7) for _ in range(m)]
        a["confidence"] = [rng.choice((1, 2, 3)) for _ in range(m)]
        a["horizontal_accuracy_m"] = [rng.randrange(5, 200) for _ in range(m)]
        a["source"] = b"bench"
        header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
        out.append(memoryview(header + a.tobytes() + b"\xff\xff"))
    return out


async def raw_copy(url: str, payloads: list[memoryview]) -> float:
    """Each payload COPYed into ``reports`` in a transaction of its own."""
    conn = await asyncpg.connect(url)
    try:
        t0 = time.perf_counter()
        for data in payloads:
            async with conn.transaction():
                await conn.copy_to_table("reports", source=data, columns=COLUMNS, format="binary")
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def ingest(
    channel: grpc.aio.Channel, token: str, msgs: list[bytes], streams: int
) -> tuple[float, int]:
    """Send the messages over ``streams`` concurrent streams; seconds and reports stored."""
    call = channel.stream_unary(
        METHOD, request_serializer=None, response_deserializer=r.IngestReportsResponse.FromString
    )
    meta = (("authorization", f"Bearer {token}"),)

    async def one(part: list[bytes]) -> int:
        async def gen():  # type: ignore[no-untyped-def]
            for m in part:
                yield m

        resp = await call(gen(), metadata=meta)
        assert resp.rejected_count == 0, resp.errors[:3]
        return int(resp.stored_count)

    t0 = time.perf_counter()
    stored = await asyncio.gather(*(one(msgs[k::streams]) for k in range(streams)))
    return time.perf_counter() - t0, sum(stored)


async def lag_sampler(
    url: str, samples: list[tuple[float, float, int]], stop: asyncio.Event
) -> None:
    conn = await asyncpg.connect(url)
    t0 = time.perf_counter()
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                "SELECT coalesce(extract(epoch FROM now() - min(enqueue_time)), 0)::float8 AS lag,"
                " count(*) AS n FROM processing_queue"
            )
            assert row is not None
            samples.append((time.perf_counter() - t0, row["lag"], row["n"]))
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> None:
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        await make_world(conn, args.trackers)
        trackers = [
            (row["id"], bytes(row["hashed_advertisement_key"]))
            for row in await conn.fetch("SELECT id, hashed_advertisement_key FROM trackers")
        ]
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
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DB_")},
            "TRACKER_DATABASE_URL": url,
            "TRACKER_REDIS_URL": os.environ.get(
                "TRACKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"
            ),
            "TRACKER_COLLECTOR_PORT": str(port),
            "TRACKER_HEALTH_PORT": str(health_port),
            "TRACKER_METRICS_PORT": "0",
            "TRACKER_LOG_LEVEL": "WARNING",
        }
        if args.profile:  # the collector under cProfile, written when it stops
            server = await asyncio.create_subprocess_exec(
                BIN / "python", "-m", "cProfile", "-o", args.profile, "-m", "servers.collector",
                env=env,
            )  # fmt: skip
        else:
            server = await asyncio.create_subprocess_exec(BIN / "tracker-collector", env=env)
        worker = baseline = None
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
        )
        old_channel = None
        if args.baseline_src:  # the same collector from another source tree (e.g. before)
            old_port = free_port()
            baseline = await asyncio.create_subprocess_exec(
                BIN / "python", "-m", "servers.collector",
                env={
                    **env,
                    "PYTHONPATH": args.baseline_src,
                    "TRACKER_COLLECTOR_PORT": str(old_port),
                    "TRACKER_HEALTH_PORT": str(free_port()),
                },
            )  # fmt: skip
            old_channel = grpc.aio.insecure_channel(f"127.0.0.1:{old_port}")
        try:
            for ch in (channel, old_channel):
                if ch is None:
                    continue
                health = health_pb2_grpc.HealthStub(ch)
                for _ in range(100):
                    try:
                        await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
            n = args.reports
            print(f"trackers {args.trackers}, reports per run {n}, streams {args.streams}")
            seed = 0
            big = MAX_REPORTS_PER_TRANSACTION
            print(
                f"  (each line's ratio: to raw binary COPY of {n} reports, encoded ahead, into "
                f"reports in {big}-row transactions, measured just before it)"
            )
            for size in args.sizes:
                for by_key in (False, True):
                    seed += 1
                    msgs = messages(trackers, n, size, by_key, seed)
                    how = "hashed key" if by_key else "tracker id"
                    seed += 1
                    await conn.execute("TRUNCATE reports, processing_queue")
                    copy_s = await raw_copy(url, copy_payloads(trackers, n, big, seed))
                    print(f"  raw COPY {n / copy_s:31.0f} reports/s")
                    for name, ch in (("", channel), (" [baseline]", old_channel)):
                        if ch is None:
                            continue
                        await conn.execute("TRUNCATE reports, processing_queue")
                        await ingest(ch, token, msgs[:2], args.streams)  # warm-up
                        await conn.execute("TRUNCATE reports, processing_queue")
                        secs, stored = await ingest(ch, token, msgs, args.streams)
                        assert stored == n, (stored, n)
                        assert await conn.fetchval("SELECT count(*) FROM reports") == n
                        print(
                            f"  IngestReports by {how:10}, {size}/message{name}: "
                            f"{n / secs:8.0f} reports/s  ({copy_s / secs:.2f}x of COPY)"
                        )
            if args.worker:
                await conn.execute("TRUNCATE reports, processing_queue")
                worker = await asyncio.create_subprocess_exec(
                    BIN / "tracker-worker",
                    env={**env, "TRACKER_HEALTH_PORT": "0", "TRACKER_METRICS_PORT": "0"},
                )
                size = args.sizes[-1]
                seed += 1
                msgs = messages(trackers, n, size, False, seed)
                samples: list[tuple[float, float, int]] = []
                stop = asyncio.Event()
                sampler = asyncio.create_task(lag_sampler(url, samples, stop))
                secs, _ = await ingest(channel, token, msgs, args.streams)
                during = [lag for _, lag, _ in samples]
                t_end = time.perf_counter()
                while (await conn.fetchval("SELECT count(*) FROM processing_queue")) > 0:
                    if time.perf_counter() - t_end > 120:
                        break
                    await asyncio.sleep(0.1)
                drain = time.perf_counter() - t_end
                stop.set()
                await sampler
                print(
                    f"  with a worker: ingest {n / secs:.0f} reports/s; processing lag during "
                    f"ingest median {statistics.median(during or [0]):.1f} s, max "
                    f"{max(during or [0]):.1f} s; queue drained {drain:.1f} s after the last "
                    f"message"
                )
        finally:
            await channel.close()
            if old_channel is not None:
                await old_channel.close()
            for p in (server, worker, baseline):
                if p is not None:
                    p.terminate()
                    await p.wait()
            await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=1000)
    ap.add_argument("--reports", type=int, default=100_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--worker", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile", help="run the collector under cProfile, stats to this file")
    ap.add_argument(
        "--baseline-src",
        help="also run a collector from this src directory (e.g. `git archive` of an older "
        "commit, with its generated src/tracker), on the same database, for a before/after",
    )
    asyncio.run(bench(ap.parse_args()))


if __name__ == "__main__":
    main()
