"""Benchmark of the fetch queue (Redis + Lua): claims plus completions per second with 250,000
trackers queued, claimed in batches of one Lua call each, against the same work with one Redis
round trip per tracker (claim of one, complete of one), in the same run. Also Redis's own time
per tracker (INFO commandstats), which bounds what any number of fetchers can reach together.
Prints figures.

    .venv/bin/python -m bench.queue --trackers 250000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from adapters.redis.queue import RedisFetchQueue

REDIS_URL = os.environ.get("TRACKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
INTERVAL = timedelta(minutes=15)
LEASE = timedelta(minutes=2)


async def _drain(prefix: str, now: datetime, batch: int, claimants: int, tag: str) -> int:
    """Claim and complete everything due, with ``claimants`` concurrent tasks."""
    client = aioredis.Redis.from_url(REDIS_URL)
    q = RedisFetchQueue(client, prefix=prefix)
    done = 0

    async def claimant(name: str) -> None:
        nonlocal done
        nxt = now + INTERVAL
        while claims := (await q.claim(name, batch, now, LEASE)).claims:
            # not `done += await ...`: that loses updates between claimants
            completed = await q.complete(name, [(c.tracker_id, nxt) for c in claims])
            done += completed

    try:
        await asyncio.gather(*(claimant(f"{tag}-{i}") for i in range(claimants)))
    finally:
        await client.aclose()
    return done


def _process(args: tuple[str, datetime, int, int, str]) -> int:
    return asyncio.run(_drain(*args))


async def _evalsha_usec(client: aioredis.Redis) -> float:
    stats = await client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def run_case(
    client: aioredis.Redis, n: int, batch: int, processes: int, claimants: int
) -> tuple[float, float]:
    """(trackers per second end to end, Redis microseconds per tracker)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    q = RedisFetchQueue(client, prefix=prefix)
    now = datetime.now(UTC)
    await q.add_missing([(uuid.uuid4(), now - timedelta(seconds=1)) for _ in range(n)])
    await q.mark_synced(now)
    before = await _evalsha_usec(client)
    t0 = time.perf_counter()
    jobs = [(prefix, now, batch, claimants, f"p{i}") for i in range(processes)]
    if processes == 1:
        done = await _drain(*jobs[0])
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            done = sum(await asyncio.to_thread(pool.map, _process, jobs))
    took = time.perf_counter() - t0
    redis_us = (await _evalsha_usec(client) - before) / n
    stats = await q.stats(now + INTERVAL + timedelta(seconds=1))
    assert done == n, (done, n)
    assert (stats.queued, stats.claimed) == (n, 0)
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        await client.delete(key)
    return n / took, redis_us


async def bench(n: int, baseline_n: int) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        rows = []
        for batch, processes, claimants in ((64, 1, 4), (64, 2, 2), (500, 2, 2)):
            rate, us = await run_case(client, n, batch, processes, claimants)
            rows.append((f"batch {batch}, {processes} process(es)", rate, us))
            print(
                f"batched  {batch:3d} per Lua call, {processes} process(es) x {claimants} "
                f"claimants: {rate:,.0f} claim+complete/s; Redis {us:.2f} us per tracker "
                f"(capacity {1e6 / us:,.0f}/s)"
            )
        base, base_us = await run_case(client, baseline_n, 1, 1, 4)
        print(
            f"baseline one tracker per round trip ({baseline_n} trackers, 4 claimants): "
            f"{base:,.0f}/s; Redis {base_us:.2f} us per tracker"
        )
        for label, rate, _ in rows:
            print(f"ratio {label} / baseline: {rate / base:.1f}x")
        best = max(rate for _, rate, _ in rows)
        print(f"target >= 100,000/s: best end to end {best:,.0f}/s")
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=250_000)
    ap.add_argument("--baseline-trackers", type=int, default=20_000)
    args = ap.parse_args()
    asyncio.run(bench(args.trackers, args.baseline_trackers))


if __name__ == "__main__":
    main()
