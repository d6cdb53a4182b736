"""Benchmark of one full fetch cycle: N trackers (250,000 by default) all due at once, fetched
by ``tracker-fetcher`` processes from our simulator (real Find My encryption, one report per
tag), decrypted by findmy and stored in PostgreSQL. Prints the wall time, throughput, the
requests sent, mean keys per request, requests per account and hour, each fetcher's peak
memory and CPU, and as the same-run baseline the rate of findmy's decryption alone on one
core (the target: >= 0.8x of it per core the fetchers used).

    .venv/bin/python -m bench.fetch_cycle --trackers 250000 --fetchers 2 --accounts 4
    .venv/bin/python -m bench.fetch_cycle --trackers 25000   # a tenth, for a shared machine
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from findmy import KeyPair
from findmy.reports.reports import LocationReport

from adapters.clock import SystemClock
from adapters.postgres.pool import open_pool
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from bench.throwaway import throwaway_database
from domain.access import Principal
from domain.model import AdvertisementKey, Tracker
from servers.config import Settings
from servers.container import _sealer
from servers.parts import setup_usecases
from simulator.crypto import PlainReport, encrypt_report
from simulator.server import FETCH_PATH, Simulator, start
from usecases.setup import NewBrand, NewClient, NewProductionRun

BIN = pathlib.Path(sys.executable).parent
REDIS_URL = os.environ.get("TRACKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def _tags(args: tuple[int, int]) -> list[tuple[bytes, bytes, bytes]]:
    """``n`` tags: (private key, advertisement key, one encrypted report), made in a worker."""
    n, seed = args
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for i in range(n):
        pair = KeyPair.new()
        plain = PlainReport(now - timedelta(minutes=5 + (seed + i) % 50), 52.52, 13.40, 2, 25)
        out.append(
            (pair.private_key_bytes, pair.adv_key_bytes, encrypt_report(pair.adv_key_bytes, plain))
        )
    return out


async def seed(db: str, n: int) -> list[tuple[bytes, bytes, bytes]]:
    t0 = time.perf_counter()
    chunk = 5000
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(os.cpu_count() or 2) as pool:
        parts = await asyncio.to_thread(
            pool.map, _tags, [(min(chunk, n - s), s) for s in range(0, n, chunk)]
        )
    tags = [t for part in parts for t in part]
    print(f"setup: {n} key pairs and encrypted reports in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    pool_ = await open_pool(db, max_size=2)
    try:
        uow = PostgresUnitOfWorkFactory(pool_)
        setup = setup_usecases(uow, SystemClock())
        system, now = Principal.system(), datetime.now(UTC)
        client = await setup.create_client(system, NewClient("Bench"))
        brand = await setup.create_brand(system, NewBrand(client.id, "Bench brand"))
        run = await setup.create_production_run(
            system,
            NewProductionRun(
                brand.id, "Bench run", now - timedelta(days=1), now + timedelta(days=9)
            ),
        )
        sealer = _sealer(Settings())
        for s in range(0, n, chunk):
            trackers = []
            for private, adv, _ in tags[s : s + chunk]:
                key = AdvertisementKey(adv)
                trackers.append(
                    Tracker.in_run(
                        run, key, now, sealed_private_key=sealer.seal(private, key.hashed)
                    )
                )
            async with uow() as u:
                await u.trackers.add_many(trackers)
                await u.commit()
        # The whole fleet due now (the fetcher would otherwise spread first turns over one
        # interval): a saved state with next_due = now, which a rebuild takes as it is.
        await pool_.execute(
            "INSERT INTO fetch_state (tracker_id, factor, next_due_time) "
            "SELECT id, 1, now() - interval '1 second' FROM trackers"
        )
    finally:
        await pool_.close()
    print(f"setup: {n} trackers stored in {time.perf_counter() - t0:.1f}s")
    return tags


def decrypt_rate(tags: list[tuple[bytes, bytes, bytes]]) -> float:
    sample = tags[:3000]
    pairs = [(KeyPair(p), hashlib.sha256(a).digest(), payload) for p, a, payload in sample]
    t0 = time.perf_counter()
    for pair, hashed, payload in pairs:
        LocationReport(payload, hashed).decrypt(pair)
    return len(pairs) / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def peak_rss_mb(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def bench(n: int, fetchers: int, accounts: int, timeout_s: float) -> None:
    async with throwaway_database() as db:
        tags = await seed(db, n)
        sim = Simulator(keep=1, accounts=fetchers * accounts)
        for _, adv, payload in tags:
            sim.payloads[base64.b64encode(hashlib.sha256(adv).digest()).decode()].append(
                (time.time() - 600, payload)
            )
        runner = await start(sim)
        baseline = decrypt_rate(tags)
        del tags
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-fetch-"))
        procs = []
        try:
            for f in range(fetchers):
                files = []
                for a in range(accounts):
                    path = tmp / f"account-{f}-{a}.json"
                    path.write_text(json.dumps(sim.account_json(f * accounts + a)))
                    files.append(str(path))
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("DB_")},
                    "TRACKER_DATABASE_URL": db,
                    "TRACKER_REDIS_URL": REDIS_URL,
                    "TRACKER_FINDMY_ACCOUNT_FILE": ",".join(files),
                    "TRACKER_FINDMY_FETCH_URL": sim.base_url + FETCH_PATH,
                    "TRACKER_FETCH_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"
                    if f == 0
                    else procs[0][1]["TRACKER_FETCH_QUEUE_PREFIX"],
                    "REQUEST_INTERVAL_HOURS": "1",
                    "FETCH_INTERVAL": "0",
                    # the simulator, not Apple: the cycle measures our side, unpaced
                    "TRACKER_FETCH_ACCOUNT_BUDGET_PER_HOUR": "0",
                    "TRACKER_HEALTH_PORT": "0",
                    "TRACKER_METRICS_PORT": "0",
                    "TRACKER_LOG_LEVEL": "WARNING",
                }
                proc = await asyncio.create_subprocess_exec(
                    str(BIN / "tracker-fetcher"), env=env, stdout=asyncio.subprocess.DEVNULL
                )
                procs.append((proc, env))
            started = datetime.now(UTC)
            t0 = time.perf_counter()
            conn = await asyncpg.connect(db)
            done = 0
            try:
                while time.perf_counter() - t0 < timeout_s:
                    await asyncio.sleep(1)
                    done = await conn.fetchval(
                        "SELECT count(*) FROM fetch_state WHERE last_attempt_time >= $1", started
                    )
                    if done >= n:
                        break
                took = time.perf_counter() - t0
                stored = await conn.fetchval("SELECT count(*) FROM reports")
                reported = await conn.fetchval(
                    "SELECT count(*) FROM fetch_state WHERE last_result = 'reported'"
                )
            finally:
                await conn.close()
            rss = [peak_rss_mb(p.pid) for p, _ in procs]
            cpu_s = sum(cpu_seconds(p.pid) for p, _ in procs)
        finally:
            for proc, _ in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                await proc.wait()
            await runner.cleanup()
        requests = len(sim.requests)
        n_accounts = fetchers * accounts
        keys = sum(sim.keys_asked) / max(len(sim.keys_asked), 1)
        print(
            f"cycle: {done}/{n} trackers fetched, decrypted and stored in {took:.1f}s = "
            f"{done / took:,.0f} trackers/s ({fetchers} fetcher processes x {accounts} "
            f"accounts)"
        )
        print(
            f"cycle: {requests} requests sent, {keys:.1f} keys per request on average, "
            f"{requests / n_accounts / (took / 3600):,.0f} requests per account-hour while it "
            f"ran (unpaced: the simulator is no Apple account; at the default budget of 4 an "
            f"hour the same cycle needs {math.ceil(requests / 4)} account-hours)"
        )
        print(f"cycle: {stored} reports stored, {reported} trackers reported")
        print(f"fetcher peak RSS: {', '.join(f'{r:.0f} MB' for r in rss)}; CPU {cpu_s:.1f}s")
        cores = cpu_s / took if took else 0.0
        per_core = done / cpu_s if cpu_s else 0.0
        print(
            f"baseline: findmy decryption alone, one core: {baseline:,.0f} reports/s; the "
            f"cycle reaches {done / took / baseline:.2f}x of that in wall time, using "
            f"{cores:.2f} cores of fetcher CPU: {per_core / baseline:.2f}x of bare decryption "
            f"per core used"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=250_000)
    ap.add_argument("--fetchers", type=int, default=2)
    ap.add_argument("--accounts", type=int, default=4, help="per fetcher")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    asyncio.run(bench(args.trackers, args.fetchers, args.accounts, args.timeout))


if __name__ == "__main__":
    main()
