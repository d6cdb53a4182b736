"""Benchmark of full fetch cycles: N trackers (250,000 by default) all due at once, fetched
by ``tracker-fetcher`` processes from our simulator (real Find My encryption, one new report
per tag and cycle), decrypted by findmy and stored in PostgreSQL. Per cycle it prints the
wall time (from the first fetcher's registration to the last turn), throughput, the requests
sent, mean keys per request, requests per account and hour, and the fetchers' CPU time per
tracker (read from /proc), split into their main threads (the event loop) and the rest (the
decryption threads); then the fetchers' peak memory. Trackers count from before the fetchers
are spawned; each fetcher's startup CPU (imports, wiring) is read by a thread the moment it
registers in the queue and printed apart; the simulator runs in this process and is not
counted. Cycle 1 makes every key pair; cycle 2 (``--cycles 2``, the default) answers each key
with the first cycle's report again (held: not decrypted) and a new one, with the key pairs
the fetchers kept (``TRACKER_FETCH_KEY_CACHE``; with several fetchers each kept only those
it served in cycle 1). The same-run baseline is findmy's decryption of the same reports on
one core, in CPU time (wall time would flatter the ratio on a loaded machine), twice: with
the key pairs made beforehand ("bare decryption") and with each ``KeyPair`` made from its
private key. The target: >= 0.8x of bare decryption per core used.

    .venv/bin/python -m bench.fetch_cycle --trackers 250000 --fetchers 2 --accounts 4
    .venv/bin/python -m bench.fetch_cycle --trackers 25000   # a tenth, for a shared machine
    .venv/bin/python -m bench.fetch_cycle --trackers 25000 --profile /tmp/prof   # py-spy
    .venv/bin/python -m bench.fetch_cycle --trackers 25000 --cprofile /tmp/prof  # cProfile
    .venv/bin/python -m bench.fetch_cycle --keep-tags /tmp/tags.pkl   # reuse the tags made
    .venv/bin/python -m bench.fetch_cycle --trackers 25000 --stall 17  # one fetcher stalls

Per cycle it also counts the trackers asked for more than once (the simulator records every
key asked): a second turn before the fleet was served, against the fairness rule (issue 11).
``--stall S`` stops the first fetcher for S seconds early in cycle 2, as a starved event loop
looks from Redis: past its TTL its claims go to the other fetcher.

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
import pickle
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO

import asyncpg
import redis
import redis.asyncio as aioredis
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


Tag = tuple[bytes, bytes, bytes, bytes | None]
"""Private key, advertisement key, the report of the first cycle, that of the second."""


def _tags(args: tuple[int, int, bool]) -> list[Tag]:
    """``n`` tags with one encrypted report each (two with ``second``), made in a worker."""
    n, seed, second = args
    now = datetime.now(UTC).replace(microsecond=0)
    out: list[Tag] = []
    for i in range(n):
        pair = KeyPair.new()
        adv = pair.adv_key_bytes
        plain = PlainReport(now - timedelta(minutes=5 + (seed + i) % 50), 52.52, 13.40, 2, 25)
        later = PlainReport(now - timedelta(minutes=2), 52.53, 13.41, 2, 25)
        out.append(
            (
                pair.private_key_bytes,
                adv,
                encrypt_report(adv, plain),
                encrypt_report(adv, later) if second else None,
            )
        )
    return out


async def make_tags(n: int, second: bool, keep: str | None = None) -> list[Tag]:
    """The tags, made in worker processes; with ``keep``, read from that file if it holds
    as many (made earlier: reports dated up to an hour before then), else written to it."""
    t0 = time.perf_counter()
    path = pathlib.Path(keep) if keep else None
    if path is not None and path.exists():
        kept: list[Tag] = pickle.loads(path.read_bytes())
        if len(kept) >= n and (not second or kept[0][3] is not None):
            print(f"setup: {n} key pairs and encrypted reports read from {path}")
            return kept[:n]
    chunk = 5000
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(os.cpu_count() or 2) as pool:
        parts = await asyncio.to_thread(
            pool.map, _tags, [(min(chunk, n - s), s, second) for s in range(0, n, chunk)]
        )
    tags = [t for part in parts for t in part]
    print(f"setup: {n} key pairs and encrypted reports in {time.perf_counter() - t0:.1f}s")
    if path is not None:
        path.write_bytes(pickle.dumps(tags))
    return tags


async def seed(db: str, tags: list[Tag]) -> None:
    n, chunk = len(tags), 5000
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
            for private, adv, _, _ in tags[s : s + chunk]:
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


def decrypt_rates(tags: list[Tag]) -> tuple[float, float]:
    """findmy's decryption alone, on one core, in reports per second of CPU time (the
    thread's, so a loaded machine does not flatter the ratio): with the key pair made
    beforehand, and with it made from the stored private key as a fetch must."""
    sample = tags[:3000]
    hashed = [hashlib.sha256(a).digest() for _, a, _, _ in sample]
    t0 = time.thread_time()
    pairs = [KeyPair(p) for p, _, _, _ in sample]
    derive = time.thread_time() - t0
    t0 = time.thread_time()
    for pair, h, (_, _, payload, _) in zip(pairs, hashed, sample, strict=True):
        LocationReport(payload, h).decrypt(pair)
    decrypt = time.thread_time() - t0
    return len(sample) / decrypt, len(sample) / (derive + decrypt)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a live process (or of one of its threads) so far."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    try:
        fields = pathlib.Path(stat).read_text().rsplit(")", 1)[1].split()
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


Registered = dict[int, tuple[float, float, float]]
"""Per fetcher pid: its CPU time when it registered, when, and its main thread's CPU time."""


def _watch_registrations(
    prefix: str,
    pids: list[int],
    found: Registered,
    stop: threading.Event,
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
                    found[pid] = (cpu_seconds(pid), time.time(), cpu_seconds(pid, pid))
            time.sleep(0.002)
    finally:
        client.close()


async def _ready(procs: list[asyncio.subprocess.Process], found: Registered) -> None:
    """Until every fetcher has registered in the queue (imports and wiring done)."""
    while len(found) < len(procs):
        if any(p.returncode is not None for p in procs):
            raise SystemExit("a fetcher exited before it was ready")
        await asyncio.sleep(0.05)


@dataclass
class Cycle:
    done: int
    took: float
    cpu_s: float
    requests: int
    keys: float
    main_s: float = 0.0
    """Of ``cpu_s``, the fetchers' main threads (the event loop); the rest is mostly the
    decryption threads."""
    repeated: int = 0
    """Trackers whose key was asked for more than once in the cycle (a second turn before
    the fleet was served: a wasted request slot, and against the fairness rule)."""


async def _cycle(
    conn: asyncpg.Connection,
    procs: list[asyncio.subprocess.Process],
    sim: Simulator,
    n: int,
    since: datetime,
    t_from: float,
    cpu_from: float,
    main_from: float,
    timeout_s: float,
    marks: tuple[int, int] = (0, 0),
) -> Cycle:
    """Until every tracker has had a turn since ``since``: how many did, the wall time from
    ``t_from`` to the last turn, the fetchers' CPU from ``cpu_from`` on, the requests sent."""
    asked, sent = marks  # the simulator's counts when the cycle began
    done = 0
    while time.time() - t_from < timeout_s:
        await asyncio.sleep(0.25)
        done = await conn.fetchval(
            "SELECT count(*) FROM fetch_state WHERE last_attempt_time >= $1", since
        )
        if done >= n:
            break
    cpu_s = sum(cpu_seconds(p.pid) for p in procs) - cpu_from
    main_s = sum(cpu_seconds(p.pid, p.pid) for p in procs) - main_from
    last = await conn.fetchval("SELECT max(last_attempt_time) FROM fetch_state")
    took = max((last.timestamp() if last else time.time()) - t_from, 1e-3)
    keys = sim.keys_asked[asked:]
    repeated = sum(
        1 for times in sim.asked.values() if sum(t >= since.timestamp() for t in times) > 1
    )
    return Cycle(
        done, took, cpu_s, len(sim.requests) - sent, sum(keys) / max(len(keys), 1), main_s, repeated
    )


async def _all_due(prefix: str) -> None:
    """Every queued tracker due now (the second cycle: the first left them an interval
    ahead)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    key = hash_tagged(prefix) + ":due"
    try:
        members = await client.zrange(key, 0, -1)
        now_ms = int(time.time() * 1000)
        for s in range(0, len(members), 10_000):
            await client.zadd(key, dict.fromkeys(members[s : s + 10_000], now_ms), xx=True)
    finally:
        await client.aclose()


async def _stall(pid: int, seconds: float) -> None:
    """The fetcher ``pid`` stopped for ``seconds`` (a starved event loop, seen from Redis)."""
    await asyncio.sleep(2)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def _print_cycle(
    name: str, c: Cycle, n: int, fetchers: int, accounts: int, decrypt_only: float, with_key: float
) -> None:
    n_accounts = fetchers * accounts
    print(
        f"{name}: {c.done}/{n} trackers fetched, decrypted and stored in {c.took:.1f}s = "
        f"{c.done / c.took:,.0f} trackers/s ({fetchers} fetcher processes x {accounts} accounts)"
    )
    print(
        f"{name}: {c.requests} requests sent, {c.keys:.1f} keys per request on average, "
        f"{c.requests / n_accounts / (c.took / 3600):,.0f} requests per account-hour while it "
        f"ran (unpaced: the simulator is no Apple account; at the default budget of 4 an "
        f"hour the same cycle needs {math.ceil(c.requests / 4)} account-hours)"
    )
    print(f"{name}: {c.repeated} trackers asked for more than once in the cycle (target 0)")
    per_core = c.done / c.cpu_s if c.cpu_s else 0.0
    print(
        f"{name}: fetchers' CPU {c.cpu_s:.1f}s = {1e6 * c.cpu_s / max(c.done, 1):,.0f} us per "
        f"tracker, {c.cpu_s / c.took:.2f} cores; per core used {per_core / decrypt_only:.2f}x "
        f"of bare decryption (target >= 0.8x), {per_core / with_key:.2f}x of decryption with "
        f"the key pair made"
    )
    per = 1e6 / max(c.done, 1)
    print(
        f"{name}: of which the event loop (main threads) {c.main_s * per:,.0f} us per tracker, "
        f"other threads (decryption: findmy, key pairs, JSON, reports) "
        f"{(c.cpu_s - c.main_s) * per:,.0f} us"
    )


async def bench(
    n: int,
    fetchers: int,
    accounts: int,
    timeout_s: float,
    profile: str | None = None,
    cprofile: str | None = None,
    cycles: int = 2,
    keep_tags: str | None = None,
    stall_s: float = 0,
) -> None:
    tags = await make_tags(n, cycles > 1, keep_tags)
    async with throwaway_database() as db:
        await seed(db, tags)
        sim = Simulator(keep=1, accounts=fetchers * accounts, record=True)
        for _, adv, payload, _ in tags:
            sim.payloads[base64.b64encode(hashlib.sha256(adv).digest()).decode()].append(
                (time.time() - 600, payload)
            )
        runner = await start(sim)
        decrypt_only, with_key = decrypt_rates(tags)
        seconds = [(adv, second) for _, adv, _, second in tags]
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
        registered: Registered = {}
        stop_watch = threading.Event()
        watcher: threading.Thread | None = None
        pids: list[int] = []
        results: list[Cycle] = []
        pauser: asyncio.Task[None] | None = None
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
            t_ready = min(at for _, at, _ in registered.values())
            if profile:
                spies = [
                    await _spy(p.pid, pathlib.Path(profile) / f"fetcher-{i}.txt")
                    for i, p in enumerate(procs)
                ]
            conn = await asyncpg.connect(db)
            try:
                results.append(
                    await _cycle(
                        conn,
                        procs,
                        sim,
                        n,
                        started,
                        t_ready,
                        sum(startup_cpu),
                        sum(registered[p.pid][2] for p in procs),
                        timeout_s,
                    )
                )
                stored = [await conn.fetchval("SELECT count(*) FROM reports")]
                if cycles > 1 and results[0].done >= n:
                    # A second cycle, each tracker's answer holding the report of the first
                    # again (held: not decrypted) and a new one; the key pairs are kept.
                    for adv, second in seconds:
                        if second is not None:
                            sim.payloads[
                                base64.b64encode(hashlib.sha256(adv).digest()).decode()
                            ].append((time.time() - 120, second))
                    await asyncio.sleep(1.5)  # the first cycle's last turns and rebuilds
                    since, t1 = datetime.now(UTC), time.time()
                    cpu1 = sum(cpu_seconds(p.pid) for p in procs)
                    main1 = sum(cpu_seconds(p.pid, p.pid) for p in procs)
                    marks = (len(sim.keys_asked), len(sim.requests))
                    await _all_due(prefix)  # (the simulator answers meanwhile)
                    if stall_s > 0:
                        pauser = asyncio.create_task(_stall(procs[0].pid, stall_s))
                    results.append(
                        await _cycle(conn, procs, sim, n, since, t1, cpu1, main1, timeout_s, marks)
                    )
                    stored.append(await conn.fetchval("SELECT count(*) FROM reports"))
                    if pauser is not None:
                        await pauser
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
        print(f"load before the cycle: {_load()}")
        print(
            f"fetchers: peak RSS {', '.join(f'{r:.0f} MB' for r in rss)}; startup CPU "
            f"{sum(startup_cpu):.1f}s ({t_ready - t_spawn:.1f}s to the first ready, not counted)"
        )
        print(
            f"baseline (same run, CPU time, one core): findmy decryption alone "
            f"{decrypt_only:,.0f} reports/s ({1e6 / decrypt_only:.0f} us); with the KeyPair "
            f"made from the private key {with_key:,.0f} reports/s ({1e6 / with_key:.0f} us)"
        )
        for i, c in enumerate(results):
            name = "cycle 1 (key pairs made)" if i == 0 else f"cycle {i + 1} (key pairs kept)"
            _print_cycle(name, c, n, fetchers, accounts, decrypt_only, with_key)
        _drop_keys(prefix)
        print(
            f"reports stored after each cycle: {', '.join(map(str, stored))}; "
            f"{reported} trackers reported in their last turn"
        )


def _drop_keys(prefix: str) -> None:
    """The cycle's queue keys, gone from the bench's Redis database."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=hash_tagged(prefix) + ":*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


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
        "--cycles",
        type=int,
        default=2,
        choices=(1, 2),
        help="2: a second cycle with the key pairs kept, each answer holding a new report",
    )
    ap.add_argument(
        "--keep-tags",
        help="a file for the generated tags, reused by the next run (250,000 take minutes)",
    )
    ap.add_argument(
        "--stall",
        type=float,
        default=0,
        help="seconds to pause the first fetcher (SIGSTOP) 2 s into cycle 2, as a loaded "
        "machine starves one; past its TTL (15 s) another takes its claims over",
    )
    ap.add_argument(
        "--profile", help="directory for py-spy profiles of the fetchers (pip install py-spy)"
    )
    ap.add_argument(
        "--cprofile", help="directory for cProfile profiles (CPU time) of the fetchers' loops"
    )
    args = ap.parse_args()
    asyncio.run(
        bench(
            args.trackers,
            args.fetchers,
            args.accounts,
            args.timeout,
            args.profile,
            args.cprofile,
            args.cycles,
            args.keep_tags,
            args.stall,
        )
    )


if __name__ == "__main__":
    main()
