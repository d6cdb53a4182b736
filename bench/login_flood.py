"""Memory of a collector under a sign-in flood (issue 10, finding 5).

Starts a real collector process per configuration on a throwaway database, creates one
user, then sends 100 wrong-password Login calls from 8 concurrent clients and reads the
process's resident memory from /proc: before the flood (VmRSS) and its peak (VmHWM).
Configurations, measured in the same run:
- ``unbounded``: as before issue 10, password checks on as many threads as the default
  thread pool has here (min(32, cores + 4)) and no attempt limit;
- ``bounded``: the dedicated hashing pool (2 at once), still no attempt limit;
- ``defaults``: the dedicated pool and the default attempt limits (10 per account).
Prints figures; asserts nothing.

    .venv/bin/python -m bench.login_flood
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter

import grpc
from tests.ports import free_port

from bench.throwaway import throwaway_database
from tracker.v1 import auth_service_pb2 as a
from tracker.v1 import auth_service_pb2_grpc as a_grpc

REDIS_URL = os.environ.get("TRACKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
EMAIL, PASSWORD = "flood@example.com", "the-real-password-123"
UNLIMITED = "1000000"
CONFIGS = {
    "unbounded": {
        "TRACKER_PASSWORD_HASH_CONCURRENCY": str(min(32, (os.cpu_count() or 1) + 4)),
        "TRACKER_PASSWORD_HASH_QUEUE": "10000",
        "TRACKER_LOGIN_MAX_FAILURES_PER_ACCOUNT": UNLIMITED,
        "TRACKER_LOGIN_MAX_FAILURES_PER_ADDRESS": UNLIMITED,
    },
    "bounded": {
        "TRACKER_LOGIN_MAX_FAILURES_PER_ACCOUNT": UNLIMITED,
        "TRACKER_LOGIN_MAX_FAILURES_PER_ADDRESS": UNLIMITED,
    },
    "defaults": {},
}


def memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return fields


async def wait_serving(port: int, deadline_s: float = 60) -> None:
    start = time.monotonic()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = a_grpc.AuthServiceStub(ch)
        while True:
            try:
                await stub.Login(a.LoginRequest(email="x@example.com", password="y" * 12))
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    return
            if time.monotonic() - start > deadline_s:
                raise RuntimeError("the collector did not start")
            await asyncio.sleep(0.3)


async def flood(port: int, attempts: int, clients: int) -> tuple[Counter[str], float]:
    codes: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(attempts):
        queue.put_nowait(i)

    async def client() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = a_grpc.AuthServiceStub(ch)
            while not queue.empty():
                queue.get_nowait()
                try:
                    await stub.Login(a.LoginRequest(email=EMAIL, password="wrong-password-1"))
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as err:
                    codes[err.code().name] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return codes, time.perf_counter() - start


async def measure(name: str, extra: dict[str, str], attempts: int, clients: int) -> None:
    async with throwaway_database() as url:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
        env.pop("DB_NAME", None)
        env |= {
            "TRACKER_DATABASE_URL": url,
            "TRACKER_REDIS_URL": REDIS_URL,
            "TRACKER_COLLECTOR_PORT": str(port),
            "TRACKER_HEALTH_PORT": "0",
            "TRACKER_METRICS_PORT": "0",
            "TRACKER_LOG_LEVEL": "WARNING",
            "TRACKER_LOGIN_THROTTLE_PREFIX": f"bench-{name}-{os.getpid()}",
            **extra,
        }
        user = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "servers.trackerctl", "user", "create-admin"),
            *("--email", EMAIL, "--password-stdin"),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        _, stderr = await user.communicate((PASSWORD + "\n").encode())
        if user.returncode != 0:
            raise RuntimeError(stderr.decode())
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from servers.collector import main; raise SystemExit(main())",
            env=env,
        )
        try:
            await wait_serving(port)
            await asyncio.sleep(1)
            before = memory_mib(proc.pid)
            codes, seconds = await flood(port, attempts, clients)
            after = memory_mib(proc.pid)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    print(
        f"{name:>10}: RSS before {before['VmRSS']:6.0f} MiB, peak {after['VmHWM']:6.0f} MiB "
        f"(+{after['VmHWM'] - before['VmRSS']:.0f}), after {after['VmRSS']:6.0f} MiB; "
        f"{attempts} attempts in {seconds:.1f} s: {dict(codes)}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attempts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append")
    args = parser.parse_args()
    for name in args.only or CONFIGS:
        await measure(name, CONFIGS[name], args.attempts, args.clients)


if __name__ == "__main__":
    asyncio.run(main())
