"""Detectors and travel times (issue 16): sightings ingested per second end to end through
gRPC, travel-time computation per second of sightings, and the estimates scored against the
traffic simulator's ground truth, side by side with the plain mean of all matches.

A real ``tracker-collector`` process on a throwaway database; the simulator's road graph
(default 200 detectors, 1,000 links) created through the API; its sightings pushed over
concurrent streams. Baseline in the same run: the same rows COPYed straight into the table
(no gRPC, no validation, no keying), so the ratio says what the API costs. Then every
destination is computed by the worker's use case (in this process) and the bins are scored.

    python -m bench.travel_times [--detectors 200 --sources 5 --hours 1 --vehicles 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.ports import free_port

from bench.processing import BIN
from bench.throwaway import throwaway_database
from domain.access import Principal
from servers.config import Settings
from servers.container import Container
from simulator.traffic import RoadGraph, create_graph, messages, push, score, simulate
from usecases.access import NewUser
from usecases.setup import NewClient
from usecases.travel_times import ComputeTravelTimes, TravelTimeSettings


async def raw_copy(url: str, traffic_rows: list[tuple[uuid.UUID, datetime, bytes]]) -> float:
    """Seconds to COPY the same number of rows straight into a copy of the table."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE sightings_baseline (LIKE sightings INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        t0 = time.perf_counter()
        await conn.copy_records_to_table(
            "sightings_baseline",
            records=[(d, t, k, 1, -60, 1) for d, t, k in traffic_rows],
            columns=["detector_id", "seen_time", "device_key", "key_id", "rssi_dbm", "radio"],
        )
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> None:
    graph = RoadGraph.random(args.detectors, args.sources, seed=args.seed).with_incident(
        share=0.1, onset_s=args.hours * 3600 / 2
    )
    start = (datetime.now(UTC) - timedelta(hours=args.hours + 1)).replace(
        minute=0, second=0, microsecond=0
    )
    day_s = 7.5 * 3600  # the morning peak
    t0 = time.perf_counter()
    traffic = simulate(graph, args.hours, args.vehicles, day_s, seed=args.seed)
    print(
        f"detectors {len(graph.positions)}, links {len(graph.links)}, simulated hours "
        f"{args.hours:g}: traversals {traffic.traversals:,}, stops {traffic.stops:,}, "
        f"sightings {traffic.count:,} ({time.perf_counter() - t0:.1f} s to simulate)"
    )
    async with throwaway_database() as url:
        container = Container(settings=Settings(database_url=url))
        await container.init_resources()  # type: ignore[misc]
        access = await container.access_usecases.async_()
        await access.create_user(
            Principal.system(), NewUser(email="bench@example.com", password="x" * 16, admin=True)
        )
        token, _ = await access.mint_service_token(
            Principal.system(), "bench@example.com", timedelta(hours=2)
        )
        setup = await container.setup_usecases.async_()
        client = await setup.create_client(Principal.system(), NewClient("bench"))
        port, health_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DB_")},
            "TRACKER_DATABASE_URL": url,
            "TRACKER_COLLECTOR_PORT": str(port),
            "TRACKER_HEALTH_PORT": str(health_port),
            "TRACKER_METRICS_PORT": "0",
            "TRACKER_LOG_LEVEL": "WARNING",
        }
        server = await asyncio.create_subprocess_exec(BIN / "tracker-collector", env=env)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
        )
        try:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(200):
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
            ids = await create_graph(channel, token, str(client.id), graph, tag="bench")
            msgs = [
                m.SerializeToString()
                for m in messages(ids, traffic, start.timestamp(), batch=args.batch)
            ]
            seconds, stored = await push(channel, token, msgs, streams=args.streams)
            rate = traffic.count / seconds
            print(
                f"ingest through gRPC: {traffic.count:,} sightings in {seconds:.1f} s = "
                f"{rate:,.0f}/s over {args.streams} streams ({stored:,} stored; target 50,000/s)"
            )
        finally:
            await channel.close()
            server.terminate()
            await server.wait()
        rows = [
            (uuid.UUID(ids[det]), start + timedelta(seconds=t), os.urandom(16))
            for det, items in traffic.sightings.items()
            for _, t, _ in items
        ]
        baseline = await raw_copy(url, rows)
        print(
            f"baseline COPY of the same rows: {baseline:.1f} s = {len(rows) / baseline:,.0f}/s; "
            f"gRPC end to end at {rate / (len(rows) / baseline):.2f}x of it"
        )

        uow = await container.uow_factory.async_()
        settings = TravelTimeSettings(claim=8)
        turn = ComputeTravelTimes(uow, container.clock(), "bench", settings)
        t0 = time.perf_counter()
        done = bins = 0
        while done < len(graph.positions):
            result = await turn()
            if not result.destinations:
                break
            done, bins = done + result.destinations, bins + result.bins
        spent = time.perf_counter() - t0
        print(
            f"travel times: {done} destinations, {bins:,} bins in {spent:.1f} s = "
            f"{traffic.count / spent:,.0f} sightings/s of computation"
        )

        index = {(ids[x.destination], ids[x.source]): n for n, x in enumerate(graph.links)}
        conn = await asyncpg.connect(url)
        try:
            found = await conn.fetch(
                "SELECT destination_id, source_id, extract(epoch FROM bin_start)::bigint AS b, "
                "estimate_s, mean_s, used_count FROM travel_times WHERE estimate_s IS NOT NULL"
            )
        finally:
            await conn.close()
        estimates: dict[int, dict[int, tuple[float, float, int]]] = {}
        for r in found:
            link = index[(str(r["destination_id"]), str(r["source_id"]))]
            estimates.setdefault(link, {})[r["b"]] = (r["estimate_s"], r["mean_s"], r["used_count"])
        s = score(graph, traffic.truth_bins(start.timestamp()), estimates, start.timestamp())
        print(f"scored bins (>= 10 matches): {s.bins:,}")
        print(f"{'':28}{'robust (median, Hampel)':>26}{'plain mean':>14}")
        print(
            f"{'median |error| / truth':28}{s.median_error * 100:>25.2f}%"
            f"{s.mean_median_error * 100:>13.2f}%   (target <= 5%)"
        )
        print(f"{'bias':28}{s.bias * 100:>25.2f}%{s.mean_bias * 100:>13.2f}%")
        print(
            f"{'onset followed after (bins)':28}{_bins(s.onset_lag_bins):>26}"
            f"{_bins(s.mean_onset_lag_bins):>14}   (target <= 2; median over incident links)"
        )
        await container.shutdown_resources()  # type: ignore[misc]


def _bins(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectors", type=int, default=200)
    p.add_argument("--sources", type=int, default=5, help="links into each destination")
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--vehicles", type=float, default=200.0, help="departures per link-hour")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--batch", type=int, default=5000, help="sightings per message")
    p.add_argument("--seed", type=int, default=7)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
