"""Fetching a run's trackers once: keys from a batch, reports from the simulator through the
Find My adapter, stored idempotently; and the same through `trackerctl findmy fetch`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from findmy.reports.account import AsyncAppleAccount

from adapters.findmy.source import FindMyLocationSource
from domain.access import Principal
from simulator.server import FETCH_PATH, Simulator, start
from tests.integration.conftest import Stack
from tests.integration.test_keys import export, run_of_new_client, stubs
from tracker.v1 import key_query_service_pb2 as kq
from tracker.v1 import key_service_pb2 as k
from usecases.fetching import FetchRunReports

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
        fetch = FetchRunReports(
            await stack.container.uow_factory.async_(),
            source,
            stack.container.clock(),
            keys_per_request=64,
        )
        first = await fetch(Principal.system(), uuid.UUID(run.id))
        assert (first.trackers, first.requests, first.reports, first.stored) == (70, 2, 210, 210)
        again = await fetch(Principal.system(), uuid.UUID(run.id))
        assert (again.reports, again.stored) == (210, 0)
        await source.close()

        # The operator's one-off fetch, as a separate process.
        account_file = tmp_path / "account.json"
        account_file.write_text(json.dumps(sim.account_json()))
        settings = stack.container.settings()
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "trackerctl"),
            "findmy",
            "fetch",
            "--run",
            run.id,
            env={
                "PATH": str(Path(sys.executable).parent),
                "TRACKER_DATABASE_URL": settings.database_url,
                "TRACKER_REDIS_URL": settings.redis_url,
                "TRACKER_FINDMY_ACCOUNT_FILE": str(account_file),
                "TRACKER_FINDMY_FETCH_URL": sim.base_url + FETCH_PATH,
                "MAX_KEYS_PER_BATCH": "32",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert (
            "70 trackers (0 without a private key), 3 requests, 210 reports, 0 new" in out.decode()
        )
    finally:
        await runner.cleanup()
