"""Fetching a run's trackers once: keys from a batch, reports from the simulator through the
Find My adapter, stored idempotently; and the same through `trackerctl findmy fetch`."""

from __future__ import annotations

import asyncio
import csv
import email.utils
import io
import itertools
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from findmy.reports.account import AsyncAppleAccount

from adapters.findmy.source import FindMyLocationSource
from domain.access import Principal
from servers.fetcher import fetcher_config
from simulator.server import ANISETTE_PATH, FETCH_PATH, Simulator, start
from tests.integration.conftest import Stack
from tests.integration.test_keys import export, run_of_new_client, stubs
from tracker.v1 import key_query_service_pb2 as kq
from tracker.v1 import key_service_pb2 as k
from usecases.fetching import Account

pytestmark = pytest.mark.integration


async def test_a_run_is_fetched_in_batches_and_stored_once(stack: Stack, tmp_path: Path) -> None:
    assert stack.container is not None
    keys, _ = stubs(stack)
    batch = (await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=70))).key_batch
    rows = list(
        csv.DictReader(io.StringIO(await export(stack, batch.id, kq.KEY_EXPORT_FORMAT_CSV)))
    )
    client, run = await run_of_new_client(stack, "Fetch")
    macs = [r["mac_address"] for r in rows]
    await keys.AllocateTags(k.AllocateTagsRequest(client_id=client.id, mac_addresses=macs))
    await keys.ImportTrackers(k.ImportTrackersRequest(production_run_id=run.id, mac_addresses=macs))
    sim = Simulator(keep=20)
    runner = await start(sim)
    rng = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    for r in rows:
        adv = __import__("base64").b64decode(r["advertisement_key"])
        sim.add_reports(
            adv,
            [
                {
                    "time": (now - timedelta(hours=h)).isoformat(),
                    "latitude": rng.uniform(50, 54),
                    "longitude": rng.uniform(8, 14),
                    "confidence": 2,
                    "accuracy_m": 30,
                }
                for h in range(3)
            ],
        )
    try:
        source = FindMyLocationSource(
            AsyncAppleAccount.from_json(sim.account_json()),
            stack.container.sealer(),
            fetch_url=sim.base_url + FETCH_PATH,
        )
        settings = stack.container.settings()
        config = fetcher_config(
            settings.replace(fetch_interval_s=0.2, max_keys_per_batch=64),
            budget_per_hour=0,
            name="test-fetch-run",
        )
        fetch = await stack.container.fetch_run_reports.async_(
            accounts=[Account("sim", source)], config=config
        )
        first = await fetch(Principal.system(), uuid.UUID(run.id))
        assert (first.trackers, first.requests, first.reports, first.stored) == (70, 2, 210, 210)
        again = await fetch(Principal.system(), uuid.UUID(run.id))
        assert (again.reports, again.stored) == (210, 0)
        # A 429 whose Retry-After is an HTTP date is waited out, then the request is sent
        # again; the account's pace holds between all of them.
        sim.requests.clear()
        when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
        sim.faults.append({"mode": "429", "count": 1, "retry_after": when})
        conn = await asyncpg.connect(settings.database.dsn)
        try:
            some = await conn.fetchval(
                "SELECT id FROM trackers WHERE production_run_id = $1 LIMIT 1", uuid.UUID(run.id)
            )
        finally:
            await conn.close()
        one = await fetch(Principal.system(), tracker_id=some)
        assert (one.trackers, one.requests, one.waits, one.reports, one.failed) == (1, 2, 1, 3, 0)
        (_, t429, s429), (_, t200, s200) = sim.requests
        assert (s429, s200) == (429, 200)
        assert t200 - t429 >= 1.9  # the date was 2-3 s ahead (whole seconds)
        assert set(sim.max_in_flight.values()) == {1}
        await source.close()

        # The operator's one-off fetch, as a separate process: the accounts as a directory
        # (like the fetcher), ANISETTE_SERVER, the account's pace.
        accounts = tmp_path / "accounts"
        accounts.mkdir()
        (accounts / "a.json").write_text(json.dumps(sim.account_json()))
        sim.requests.clear()
        anisette_before = sim.stats["anisette"]
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "trackerctl"),
            "findmy",
            "fetch",
            "--run",
            run.id,
            env={
                "PATH": str(Path(sys.executable).parent),
                "TRACKER_DATABASE_URL": settings.database.dsn,
                "TRACKER_REDIS_URL": settings.redis.url.get_secret_value(),
                "TRACKER_FINDMY_ACCOUNT_FILE": str(accounts),
                "TRACKER_FINDMY_FETCH_URL": sim.base_url + FETCH_PATH,
                "ANISETTE_SERVER": sim.base_url + ANISETTE_PATH + "?via=env",
                "MAX_KEYS_PER_BATCH": "32",
                "FETCH_INTERVAL": "0.5",
                "TRACKER_FETCH_ACCOUNT_BUDGET_PER_HOUR": "0",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert "70 trackers (0 without a private key, 0 not in an active run), 3 requests, " in (
            out.decode()
        )
        assert "210 reports, 0 new" in out.decode()
        assert len(sim.requests) == 3
        assert min(b[1] - a[1] for a, b in itertools.pairwise(sim.requests)) >= 0.45
        assert sim.anisette_urls[anisette_before:]
        assert all("via=env" in u for u in sim.anisette_urls[anisette_before:])
        assert "simulator@example.com" not in err.decode() + out.decode()
    finally:
        await runner.cleanup()
