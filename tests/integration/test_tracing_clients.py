"""Issue 15: with tracing on, the Find My HTTP calls (aiohttp: our fetch POST), Redis commands
and asyncpg queries are spans of the trace that makes them. Run in a child process: tracing
instruments libraries process-wide, and this test process must stay untraced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ADMIN_URL, REDIS_URL, process_env

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    from datetime import UTC, datetime, timedelta

    import asyncpg
    import redis.asyncio as aioredis
    from findmy import KeyPair
    from findmy.reports.account import AsyncAppleAccount
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from adapters.findmy.source import FindMyLocationSource
    from adapters.keys import AesGcmSealer
    from domain.model import AdvertisementKey
    from domain.fetching import TrackerKey
    from servers import tracing
    from servers.config import Settings, kek_ring
    from simulator.server import FETCH_PATH, Simulator, start

    async def main(pg_url, redis_url):
        exporter = InMemorySpanExporter()
        traced = tracing.install(Settings(), "tracker-fetcher", exporter=exporter)
        sealer = AesGcmSealer(*kek_ring(Settings().security))
        sim = Simulator(keep=20)
        runner = await start(sim)
        pair = KeyPair.new()
        adv = AdvertisementKey(pair.adv_key_bytes)
        key = TrackerKey(uuid.uuid4(), adv, sealer.seal(pair.private_key_bytes, adv.hashed))
        now = datetime.now(UTC)
        source = FindMyLocationSource(
            AsyncAppleAccount.from_json(sim.account_json()), sealer,
            fetch_url=sim.base_url + FETCH_PATH, timeout_s=5.0,
        )
        tracer = trace.get_tracer("probe")
        with tracer.start_as_current_span("fetch turn") as turn:
            await source.fetch([key], now - timedelta(days=1), now)
            r = aioredis.Redis.from_url(redis_url)
            await r.ping()
            await r.aclose()
            conn = await asyncpg.connect(pg_url)
            await conn.fetchval("SELECT 1")
            await conn.close()
        await source.close()
        await runner.cleanup()
        traced.provider.force_flush()
        root = turn.get_span_context().trace_id
        print(json.dumps([
            {"name": s.name, "trace": s.context.trace_id == root, "kind": s.kind.name,
             "attributes": {k: str(v) for k, v in (s.attributes or {}).items()}}
            for s in exporter.get_finished_spans()
        ]))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_find_my_http_redis_and_postgres_calls_are_spans_of_the_turn() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, ADMIN_URL, REDIS_URL],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spans = json.loads(done.stdout.strip().splitlines()[-1])
    in_turn = [s for s in spans if s["trace"] and s["name"] != "fetch turn"]
    http = [s for s in in_turn if s["kind"] == "CLIENT" and s["name"].startswith("POST")]
    assert http, spans
    assert any(FETCH in json.dumps(s["attributes"]) for s in http)
    assert any(s["name"] == "PING" for s in in_turn), spans
    assert any(s["attributes"].get("db.system") == "postgresql" for s in in_turn), spans


FETCH = "/findmyservice/v2/fetch"
