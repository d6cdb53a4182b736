"""Health follows real dependency checks: PostgreSQL or Redis cut -> NOT_SERVING, back ->
SERVING; Watch streams the changes. Outages are made by a TCP proxy we cut and restore."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servers import endpoints
from servers.config import Settings
from servers.container import (
    CollectorContainer,
    Core,
    FetcherContainer,
    QueryContainer,
    WorkerContainer,
)
from servers.runtime import Endpoint, Process
from servers.services import COLLECTOR, POSTGRES, QUERY, REDIS, SERVICES
from tests.conftest import REDIS_URL
from tests.integration.conftest import Stack, stack_settings
from tests.integration.proxy import TcpProxy
from tracker.v1 import setup_query_service_pb2 as q

pytestmark = pytest.mark.integration
PROTO = pathlib.Path(__file__).resolve().parents[2] / "proto" / "tracker" / "v1"

SERVING = health_pb2.HealthCheckResponse.SERVING
FETCH_QUERY = "tracker.v1.FetchQueryService"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def via(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


@pytest.fixture
async def proxied(database_url: str, stack_for) -> AsyncIterator[tuple[Stack, TcpProxy, TcpProxy]]:
    pg_target, redis_target = urlsplit(database_url), urlsplit(REDIS_URL)
    pg = TcpProxy(pg_target.hostname or "127.0.0.1", pg_target.port or 5432)
    rd = TcpProxy(redis_target.hostname or "127.0.0.1", redis_target.port or 6379)
    await pg.open()
    await rd.open()
    settings = stack_settings(
        via(database_url, pg.port), via(REDIS_URL, rd.port), health_check_timeout_s=0.5
    )
    yield await stack_for(settings), pg, rd
    for p in (pg, rd):
        if p._server is not None:
            await p.cut()


async def status(stack: Stack, service: str = "") -> int:
    return (await stack.health.Check(health_pb2.HealthCheckRequest(service=service))).status


async def eventually(stack: Stack, want: int, service: str = "", timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while await status(stack, service) != want:
            await asyncio.sleep(0.05)


async def test_postgres_outage_and_recovery(proxied: tuple[Stack, TcpProxy, TcpProxy]) -> None:
    stack, pg, _ = proxied
    await eventually(stack, SERVING)
    assert await status(stack, "tracker.v1.SetupQueryService") == SERVING
    await pg.cut()
    await eventually(stack, NOT_SERVING)
    assert await status(stack, "tracker.v1.SetupQueryService") == NOT_SERVING
    assert await status(stack, "liveness") == SERVING
    # A request meanwhile is UNAVAILABLE (retryable), never INTERNAL.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.query.ListClients(q.ListClientsRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await pg.open()
    await eventually(stack, SERVING)
    await eventually(stack, SERVING, "tracker.v1.SetupQueryService")
    await stack.query.ListClients(q.ListClientsRequest())


async def test_redis_outage_leaves_the_api_serving_but_the_fetch_queue_view(
    proxied: tuple[Stack, TcpProxy, TcpProxy],
) -> None:
    """Issue 14: only FetchQueryService (and the fetcher) need Redis; the collector and query
    servers stay in their Services while Redis is down."""
    stack, _, rd = proxied
    await eventually(stack, SERVING)
    await eventually(stack, SERVING, FETCH_QUERY)
    await rd.cut()
    await eventually(stack, NOT_SERVING, FETCH_QUERY)
    assert await status(stack) == SERVING
    assert await status(stack, "tracker.v1.SetupService") == SERVING
    assert await status(stack, "tracker.v1.SetupQueryService") == SERVING
    # the API still answers meanwhile (sign-in throttling falls back to memory)
    await stack.query.ListClients(q.ListClientsRequest())
    await rd.open()
    await eventually(stack, SERVING, FETCH_QUERY)
    assert await status(stack) == SERVING


async def test_watch_streams_each_change(proxied: tuple[Stack, TcpProxy, TcpProxy]) -> None:
    stack, pg, _ = proxied
    await eventually(stack, SERVING)
    seen: list[int] = []
    call = stack.health.Watch(health_pb2.HealthCheckRequest(service=""))

    async def read() -> None:
        async for msg in call:
            seen.append(msg.status)
            if len(seen) == 3:
                return

    reader = asyncio.create_task(read())
    async with asyncio.timeout(30):  # bounds for a loaded machine; the order is the test
        while not seen:
            await asyncio.sleep(0.05)
    await pg.cut()
    async with asyncio.timeout(30):
        while len(seen) < 2:
            await asyncio.sleep(0.05)
    await pg.open()
    async with asyncio.timeout(30):
        await reader
    assert seen == [SERVING, NOT_SERVING, SERVING]


async def test_unknown_service_is_not_found(proxied: tuple[Stack, TcpProxy, TcpProxy]) -> None:
    stack, _, _ = proxied
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await status(stack, "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_names_every_service_with_its_status(
    proxied: tuple[Stack, TcpProxy, TcpProxy],
) -> None:
    """grpc.health.v1 List (grpcio's servicer leaves it unimplemented: INTERNAL)."""
    stack, _, rd = proxied
    await eventually(stack, SERVING, FETCH_QUERY)
    listed = (await stack.health.List(health_pb2.HealthListRequest())).statuses
    assert {"", "liveness", FETCH_QUERY} <= set(listed)
    assert all(listed[name].status == SERVING for name in ("", "liveness", FETCH_QUERY))
    await rd.cut()
    await eventually(stack, NOT_SERVING, FETCH_QUERY)
    listed = (await stack.health.List(health_pb2.HealthListRequest())).statuses
    assert listed[FETCH_QUERY].status == NOT_SERVING
    assert listed["liveness"].status == SERVING


class Quiet:
    """A background part of a process that needs what it is told and does nothing."""

    def __init__(self, *needs: str) -> None:
        self.needs = needs

    async def start(self, container: Core) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
async def proxies(database_url: str) -> AsyncIterator[tuple[Settings, TcpProxy]]:
    """Settings whose Redis goes through a proxy the test can cut."""
    target = urlsplit(REDIS_URL)
    rd = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await rd.open()
    yield stack_settings(database_url, via(REDIS_URL, rd.port), health_check_timeout_s=0.5), rd
    if rd._server is not None:
        await rd.cut()


async def health_of(process: Process, service: str = "") -> int:
    assert process.reporter is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{process.ports['health']}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def wait_health(process: Process, want: int, service: str = "") -> None:
    async with asyncio.timeout(30):  # a bound for a loaded machine, not a speed
        while await health_of(process, service) != want:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("root", "served", "not_served", "overall_without_redis"),
    [
        ("collector", "tracker.v1.ReportService", FETCH_QUERY, SERVING),
        ("query", FETCH_QUERY, "tracker.v1.ReportService", SERVING),
        ("worker", None, "tracker.v1.SetupService", SERVING),
        ("fetcher", None, FETCH_QUERY, NOT_SERVING),
    ],
)
async def test_each_process_reports_what_it_serves(
    proxies: tuple[Settings, TcpProxy],
    root: str,
    served: str | None,
    not_served: str,
    overall_without_redis: int,
) -> None:
    """Each process reports statuses only for its own services; ``""`` follows what it
    needs: Redis down takes only the fetcher (and FetchQueryService) out of service."""
    settings, rd = proxies
    api = {"collector": [endpoints.collector(settings)], "query": [endpoints.query(settings)]}
    parts = {"worker": [Quiet(POSTGRES)], "fetcher": [Quiet(POSTGRES, REDIS)]}
    roots: dict[str, type[Core]] = {
        "collector": CollectorContainer,
        "query": QueryContainer,
        "worker": WorkerContainer,
        "fetcher": FetcherContainer,
    }
    process = Process(
        settings, [*api.get(root, []), Endpoint("health", 0)], parts.get(root, []), roots[root]
    )
    await process.start()
    try:
        await wait_health(process, SERVING)
        # only the query server (FetchQueryService) and the fetcher check Redis at all
        redis_checked = root in ("query", "fetcher")
        assert process.needs.probed == ((POSTGRES, REDIS) if redis_checked else (POSTGRES,))
        if served is not None:
            await wait_health(process, SERVING, served)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_of(process, not_served)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        await rd.cut()
        await wait_health(process, overall_without_redis)
        if root == "query":
            await wait_health(process, NOT_SERVING, FETCH_QUERY)
        await asyncio.sleep(0.5)  # a few more checks: it stays so
        assert await health_of(process) == overall_without_redis
    finally:
        await process.stop(0)


def test_the_service_table_names_every_service_of_the_api() -> None:
    """One row per service the .proto files declare, each carried by the collector or the
    query server, and only FetchQueryService needs Redis."""
    declared = {
        svc.full_name
        for path in (PROTO.glob("*.proto"))
        for svc in descriptor_pool.Default()
        .FindFileByName(f"tracker/v1/{path.name}")
        .services_by_name.values()
    }
    assert {s.name for s in SERVICES} == declared
    assert sorted(s.name for s in (*COLLECTOR, *QUERY)) == sorted(declared)
    assert [s.name for s in SERVICES if REDIS in s.needs] == [FETCH_QUERY]
