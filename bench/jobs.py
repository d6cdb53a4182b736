"""Benchmark of bulk jobs: a manufacturing file of 50,000 MACs imported into a run as a job
(read and stored as batches by StartJob, then applied by the worker's turn, unthrottled),
beside the same number of MACs imported by the plain ImportTrackers use case in calls of
10,000 (the baseline: one transaction per call, no bookkeeping) in the same run. Prints
figures.

    .venv/bin/python -m bench.jobs --rows 50000 --batch-size 500
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from adapters.clock import SystemClock
from adapters.keys import AesGcmSealer, FindMyKeyPairFactory
from adapters.postgres.pool import open_pool
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from bench.throwaway import throwaway_database
from domain.access import Principal
from domain.jobs import JobKind
from domain.limits import MAX_IMPORT
from servers.config import Settings, kek_ring
from servers.parts import job_usecases, key_usecases, setup_usecases
from usecases.jobs import JobDefaults, RunJobBatch, StartJobRequest
from usecases.setup import NewBrand, NewClient, NewProductionRun


async def bench(rows: int, batch_size: int) -> None:
    system = Principal.system()
    ring, active = kek_ring(Settings())
    sealer, factory, clock = AesGcmSealer(ring, active), FindMyKeyPairFactory(), SystemClock()
    async with throwaway_database() as url:
        pool = await open_pool(url, max_size=4)
        try:
            uow = PostgresUnitOfWorkFactory(pool)
            setup = setup_usecases(uow, clock)
            keys = key_usecases(uow, factory, sealer, clock)
            jobs = job_usecases(uow, factory, sealer, clock, JobDefaults(1e6, batch_size))
            client = await setup.create_client(system, NewClient("bench"))
            brand = await setup.create_brand(system, NewBrand(client.id, "bench"))
            now = datetime.now(UTC)
            runs = [
                await setup.create_production_run(
                    system, NewProductionRun(brand.id, f"r{i}", now, now + timedelta(days=30))
                )
                for i in range(2)
            ]
            macs = []
            for part in range(2):
                batch = await keys.create_key_batch(system, rows, f"part {part}")
                text = "".join(
                    [c async for c in await keys.export_key_batch(system, batch.id, "csv")]
                )
                part_macs = [line.split(",")[0] for line in text.splitlines()[1:]]
                for i in range(0, rows, MAX_IMPORT):
                    await keys.allocate_tags(system, client.id, part_macs[i : i + MAX_IMPORT])
                macs.append(part_macs)

            t0 = time.perf_counter()
            for i in range(0, rows, MAX_IMPORT):
                await keys.import_trackers(system, runs[0].id, macs[0][i : i + MAX_IMPORT])
            plain_s = time.perf_counter() - t0

            data = ("mac_address\n" + "\n".join(macs[1]) + "\n").encode()
            t0 = time.perf_counter()
            job = await jobs.start_job(
                system, StartJobRequest(JobKind.IMPORT_TRACKERS, runs[1].id, data)
            )
            start_s = time.perf_counter() - t0
            run = RunJobBatch(uow, clock, timedelta(seconds=60))
            while (await run()).job_id is not None:
                pass
            job_s = time.perf_counter() - t0
            done = await jobs.queries.get(system, job.id)
            assert done.succeeded_items == rows, done
        finally:
            await pool.close()
    print(f"bulk job import of {rows} MACs, batches of {batch_size}, one worker turn at a time:")
    print(
        f"  ImportTrackers in calls of {MAX_IMPORT} (baseline): {plain_s:.2f} s,"
        f" {rows / plain_s:,.0f} rows/s"
    )
    print(
        f"  job (StartJob {start_s:.2f} s + {done.batches_total} batches): {job_s:.2f} s,"
        f" {rows / job_s:,.0f} rows/s = {plain_s / job_s:.2f}x the baseline's rate"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    asyncio.run(bench(args.rows, args.batch_size))


if __name__ == "__main__":
    main()
