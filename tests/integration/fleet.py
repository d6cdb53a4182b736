"""A fleet for fetcher tests: trackers with real Find My keys in a run, a simulator that knows
them, and ``tracker-fetcher`` processes pointed at both."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import pathlib
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from adapters.clock import SystemClock
from adapters.keys import FindMyKeyPairFactory
from adapters.postgres.pool import open_pool
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from domain.access import Principal
from domain.model import Tracker
from servers.config import Settings
from servers.container import _sealer
from servers.parts import setup_usecases
from simulator.server import FETCH_PATH, Simulator
from tests.conftest import process_env
from usecases.setup import NewBrand, NewClient, NewProductionRun

BIN = pathlib.Path(sys.executable).parent


@dataclass
class Fleet:
    run_id: uuid.UUID
    trackers: list[uuid.UUID]
    adv_keys: dict[uuid.UUID, bytes]

    def hashed(self, tracker_id: uuid.UUID) -> str:
        return base64.b64encode(hashlib.sha256(self.adv_keys[tracker_id]).digest()).decode()


async def seed_fleet(database_url: str, n: int, name: str = "Fleet") -> Fleet:
    """A client, brand and active run with ``n`` trackers whose private keys are sealed
    under the development KEK (what a fetcher without TRACKER_KEK_RING uses)."""
    pool = await open_pool(database_url, max_size=2)
    try:
        uow = PostgresUnitOfWorkFactory(pool)
        setup = setup_usecases(uow, SystemClock())
        system = Principal.system()
        now = datetime.now(UTC)
        client = await setup.create_client(system, NewClient(name))
        brand = await setup.create_brand(system, NewBrand(client.id, name + " brand"))
        run = await setup.create_production_run(
            system,
            NewProductionRun(
                brand.id, name + " run", now - timedelta(days=1), now + timedelta(days=30)
            ),
        )
        factory, sealer = FindMyKeyPairFactory(), _sealer(Settings())
        trackers: list[Tracker] = []
        for _ in range(n):
            private, adv = factory.generate()
            trackers.append(
                Tracker.in_run(run, adv, now, sealed_private_key=sealer.seal(private, adv.hashed))
            )
        for start in range(0, n, 1000):
            async with uow() as u:
                await u.trackers.add_many(trackers[start : start + 1000])
                await u.commit()
        return Fleet(
            run.id, [t.id for t in trackers], {t.id: t.advertisement_key.value for t in trackers}
        )
    finally:
        await pool.close()


def report(minutes_ago: float, lat: float = 52.52, lon: float = 13.40) -> dict[str, Any]:
    return {
        "time": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "latitude": lat,
        "longitude": lon,
        "confidence": 2,
        "accuracy_m": 25,
    }


def write_accounts(sim: Simulator, directory: pathlib.Path, n: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (directory / f"account-{i}.json").write_text(json.dumps(sim.account_json(i)))
    return str(directory)


@dataclass
class Fetchers:
    """``tracker-fetcher`` processes sharing one queue."""

    env: dict[str, str]
    logs: pathlib.Path
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self, n: int = 1, **extra: str) -> list[asyncio.subprocess.Process]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            out = open(self.logs / f"fetcher-{i}.log", "wb")  # noqa: SIM115, ASYNC230
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "tracker-fetcher"),
                env={**self.env, **extra},
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
            out.close()
            self.procs.append(proc)
            started.append(proc)
        return started

    def log(self, i: int) -> str:
        return (self.logs / f"fetcher-{i}.log").read_text()

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()


def fetcher_env(
    database_url: str,
    redis_url: str,
    sim: Simulator,
    accounts: str,
    *,
    interval_s: float,
    prefix: str,
    **extra: Any,
) -> dict[str, str]:
    env = {
        **process_env(),
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_REDIS_URL": redis_url,
        "TRACKER_FINDMY_ACCOUNT_FILE": accounts,
        "TRACKER_FINDMY_FETCH_URL": sim.base_url + FETCH_PATH,
        "TRACKER_FINDMY_TIMEOUT_S": "30",
        "REQUEST_INTERVAL_HOURS": repr(interval_s / 3600),
        "FETCH_INTERVAL": "0",
        "TRACKER_FETCH_ACCOUNT_BUDGET_PER_HOUR": "0",  # the simulator, not an Apple account
        "TRACKER_FETCH_LEASE_S": "10",
        "TRACKER_FETCH_HEARTBEAT_S": "0.5",
        "TRACKER_FETCH_WORKER_TTL_S": "2",
        "TRACKER_FETCH_QUEUE_CHECK_S": "2",
        "TRACKER_FETCH_QUEUE_PREFIX": prefix,
        "TRACKER_HEALTH_PORT": "0",
        "TRACKER_METRICS_PORT": "0",
        "TRACKER_LOG_LEVEL": "INFO",
        "TRACKER_SHUTDOWN_GRACE_S": "5",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


async def fetch_states(database_url: str, ids: Sequence[uuid.UUID] | None = None) -> dict:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT tracker_id, factor, successes, failures, last_success_time, "
            "last_attempt_time, last_result FROM fetch_state"
        )
    finally:
        await conn.close()
    wanted = None if ids is None else set(ids)
    return {r["tracker_id"]: r for r in rows if wanted is None or r["tracker_id"] in wanted}


async def count_reports(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM reports"))
    finally:
        await conn.close()


async def wait_for(check: Any, timeout: float, every: float = 0.25) -> Any:
    """Await ``check()`` until it returns something truthy; the last value on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(every)
