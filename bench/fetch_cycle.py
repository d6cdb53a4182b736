"""Benchmark of one full fetch cycle: N trackers (250,000 by default) all due at once, fetched
by ``tracker-fetcher`` processes from our simulator (real Find My encryption, one report per
tag), decrypted by findmy and stored in PostgreSQL. Prints the wall time, throughput, the
requests sent, mean keys per request, requests per account and hour, the fetchers' peak
memory, and their CPU time during the cycle (read from /proc, counted from when every fetcher
has registered in the queue, read by a thread as each one registers: imports and wiring are
printed apart; trackers count from before the fetchers are spawned; the simulator runs in this
process and is not counted), per tracker. The same-run baseline is findmy's decryption of the
same reports on one core, in CPU time (wall time would flatter the ratio on a loaded machine),
twice: with the key pairs made beforehand ("bare decryption") and with each ``KeyPair`` made
from its private key, as a fetch must. The target: >= 0.8x of bare decryption per core used.

    .venv/bin/python -m bench.fetch_cycle --trackers 250000 --fetchers 2 --accounts 4
    .venv/bin/python -m bench.fetch_cycle --trackers 25000   # a tenth, for a shared machine
    .venv/bin/python -m bench.fetch_cycle --trackers 25000 --profile /tmp/prof   # py-spy
    .venv/bin/python -m bench.fetch_cycle --trackers 25000 --cprofile /tmp/prof  # cProfile

``--profile`` needs ``pip install py-spy``: one collapsed-stack file per fetcher, samples of
the thread holding the GIL (on a loaded machine that includes time descheduled while holding
it). ``--cprofile``: the fetchers' main thread in CPU time (decryption runs in a thread).
``BENCH_FETCHER_LOG_DIR`` / ``BENCH_FETCHER_LOG_LEVEL`` keep the fetchers' logs.
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
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import IO

import asyncpg
import redis
from findmy import KeyPair
from findmy.reports.reports import LocationReport

from adapters.clock import SystemClock
from adapters.postgres.pool import open_pool
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from adapters.redis.client import hash_tagged
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


def decrypt_rates(tags: list[tuple[bytes, bytes, bytes]]) -> tuple[float, float]:
    """findmy's decryption alone, on one core, in reports per second of CPU time (the
    thread's, so a loaded machine does not flatter the ratio): with the key pair made
    beforehand, and with it made from the stored private key as a fetch must."""
    sample = tags[:3000]
    hashed = [hashlib.sha256(a).digest() for _, a, _ in sample]
    t0 = time.thread_time()
    pairs = [KeyPair(p) for p, _, _ in sample]
    derive = time.thread_time() - t0
    t0 = time.thread_time()
    for pair, h, (_, _, payload) in zip(pairs, hashed, sample, strict=True):
        LocationReport(payload, h).decrypt(pair)
    decrypt = time.thread_time() - t0
    return len(sample) / decrypt, len(sample) / (derive + decrypt)


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


def _fetcher_cmd(f: int, env: dict[str, str], cprofile: str | None) -> list[str]:
    if not cprofile:
        return [str(BIN / "tracker-fetcher")]
    env["BENCH_CPROFILE_OUT"] = str(pathlib.Path(cprofile) / f"fetcher-{f}.prof")
    code = (
        "import cProfile, os, time\n"
        "from servers.fetcher import main\n"
        "p = cProfile.Profile(time.thread_time)\n"
        "p.enable()\n"
        "try:\n    main([])\n"
        "finally:\n    p.disable(); p.dump_stats(os.environ['BENCH_CPROFILE_OUT'])\n"
    )
    return [sys.executable, "-c", code]


async def _spy(pid: int, out: pathlib.Path) -> asyncio.subprocess.Process:
    """py-spy (``pip install py-spy``) on a fetcher: samples of the thread holding the GIL,
    as collapsed stacks."""
    return await asyncio.create_subprocess_exec(
        *(str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw"),
        *("--rate", "100", "--nonblocking", "--gil", "-o", str(out)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _watch_registrations(
    prefix: str, pids: list[int], found: dict[int, tuple[float, float]], stop: threading.Event
) -> None:
    """In a thread (the event loop is busy serving the simulator): as soon as a fetcher has
    registered in the queue (its worker id names its pid), its CPU time so far (imports,
    wiring) and when. Polled every few ms, so the reading holds next to no work of the cycle."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        while not stop.is_set() and len(found) < len(pids):
            for member in client.zrange(hash_tagged(prefix) + ":workers", 0, -1):
                parts = member.decode().rsplit("-", 2)
                pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1
                if pid in pids and pid not in found:
                    found[pid] = (cpu_seconds(pid), time.time())
            time.sleep(0.002)
    finally:
        client.close()


async def _ready(
    procs: list[asyncio.subprocess.Process], found: dict[int, tuple[float, float]]
) -> None:
    """Until every fetcher has registered in the queue (imports and wiring done)."""
    while len(found) < len(procs):
        if any(p.returncode is not None for p in procs):
            raise SystemExit("a fetcher exited before it was ready")
        await asyncio.sleep(0.05)


async def bench(
    n: int,
    fetchers: int,
    accounts: int,
    timeout_s: float,
    profile: str | None = None,
    cprofile: str | None = None,
) -> None:
    async with throwaway_database() as db:
        tags = await seed(db, n)
        sim = Simulator(keep=1, accounts=fetchers * accounts)
        for _, adv, payload in tags:
            sim.payloads[base64.b64encode(hashlib.sha256(adv).digest()).decode()].append(
                (time.time() - 600, payload)
            )
        runner = await start(sim)
        decrypt_only, with_key = decrypt_rates(tags)
        del tags
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-fetch-"))
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        procs: list[asyncio.subprocess.Process] = []
        spies: list[asyncio.subprocess.Process] = []
        log_dir = os.environ.get("BENCH_FETCHER_LOG_DIR")
        # Trackers count from before the fetchers are spawned: they start work as soon as
        # they have registered, before this process sees them registered (a quiet machine
        # fetches much of the cycle meanwhile). Startup CPU is read at registration.
        started, t_spawn = datetime.now(UTC), time.time()
        registered: dict[int, tuple[float, float]] = {}
        stop_watch = threading.Event()
        watcher: threading.Thread | None = None
        pids: list[int] = []
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
                    "TRACKER_FETCH_QUEUE_PREFIX": prefix,
                    "REQUEST_INTERVAL_HOURS": "1",
                    "FETCH_INTERVAL": "0",
                    # the simulator, not Apple: the cycle measures our side, unpaced
                    "TRACKER_FETCH_ACCOUNT_BUDGET_PER_HOUR": "0",
                    "TRACKER_HEALTH_PORT": "0",
                    "TRACKER_METRICS_PORT": "0",
                    "TRACKER_LOG_LEVEL": os.environ.get("BENCH_FETCHER_LOG_LEVEL", "WARNING"),
                }
                out: int | IO[bytes] = asyncio.subprocess.DEVNULL
                if log_dir:
                    out = (pathlib.Path(log_dir) / f"fetcher-{f}.log").open("wb")
                cmd = _fetcher_cmd(f, env, cprofile)
                procs.append(
                    await asyncio.create_subprocess_exec(*cmd, env=env, stdout=out, stderr=out)
                )
                pids.append(procs[-1].pid)
                if watcher is None:
                    watcher = threading.Thread(
                        target=_watch_registrations,
                        args=(prefix, pids, registered, stop_watch),
                        daemon=True,
                    )
                    watcher.start()
            await _ready(procs, registered)
            # From here on: the cycle. Startup (imports, wiring) is counted apart, read by
            # the watcher as each fetcher registered.
            startup_cpu = [registered[p.pid][0] for p in procs]
            t_ready = min(at for _, at in registered.values())
            if profile:
                spies = [
                    await _spy(p.pid, pathlib.Path(profile) / f"fetcher-{i}.txt")
                    for i, p in enumerate(procs)
                ]
            conn = await asyncpg.connect(db)
            done = 0
            try:
                while time.time() - t_ready < timeout_s:
                    await asyncio.sleep(0.25)
                    done = await conn.fetchval(
                        "SELECT count(*) FROM fetch_state WHERE last_attempt_time >= $1", started
                    )
                    if done >= n:
                        break
                cpu_s = sum(cpu_seconds(p.pid) for p in procs) - sum(startup_cpu)
                # from the first registration to the last tracker's turn
                last = await conn.fetchval("SELECT max(last_attempt_time) FROM fetch_state")
                took = max((last.timestamp() if last else time.time()) - t_ready, 1e-3)
                stored = await conn.fetchval("SELECT count(*) FROM reports")
                reported = await conn.fetchval(
                    "SELECT count(*) FROM fetch_state WHERE last_result = 'reported'"
                )
            finally:
                await conn.close()
            rss = [peak_rss_mb(p.pid) for p in procs]
        finally:
            stop_watch.set()
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await proc.wait()
            for spy in spies:
                await spy.wait()
            await runner.cleanup()
        requests = len(sim.requests)
        n_accounts = fetchers * accounts
        keys = sum(sim.keys_asked) / max(len(sim.keys_asked), 1)
        print(f"load before the cycle: {_load()}")
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
        print(
            f"fetchers: peak RSS {', '.join(f'{r:.0f} MB' for r in rss)}; startup CPU "
            f"{sum(startup_cpu):.1f}s ({t_ready - t_spawn:.1f}s to the first ready, "
            f"not counted); cycle CPU {cpu_s:.1f}s = {1e6 * cpu_s / max(done, 1):,.0f} us per "
            f"tracker, {cpu_s / took:.2f} cores"
        )
        per_core = done / cpu_s if cpu_s else 0.0
        print(
            f"baseline (same run, CPU time, one core): findmy decryption alone "
            f"{decrypt_only:,.0f} reports/s ({1e6 / decrypt_only:.0f} us); with the KeyPair "
            f"made from the private key {with_key:,.0f} reports/s ({1e6 / with_key:.0f} us)"
        )
        print(
            f"per core used: {per_core / decrypt_only:.2f}x of bare decryption "
            f"(target >= 0.8x); {per_core / with_key:.2f}x of decryption with the key pair made"
        )


def _load() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3]) + " (1/5/15 min)"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=250_000)
    ap.add_argument("--fetchers", type=int, default=2)
    ap.add_argument("--accounts", type=int, default=4, help="per fetcher")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--profile", help="directory for py-spy profiles of the fetchers (pip install py-spy)"
    )
    ap.add_argument(
        "--cprofile", help="directory for cProfile profiles (CPU time) of the fetchers' loops"
    )
    args = ap.parse_args()
    asyncio.run(
        bench(
            args.trackers, args.fetchers, args.accounts, args.timeout, args.profile, args.cprofile
        )
    )


if __name__ == "__main__":
    main()
