"""Health follows real dependency checks: PostgreSQL or Redis cut -> NOT_SERVING, back ->
SERVING; Watch streams the changes. Outages are made by a TCP proxy we cut and restore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import REDIS_URL
from tests.integration.conftest import Stack, stack_settings
from tests.integration.proxy import TcpProxy
from tracker.v1 import setup_query_service_pb2 as q

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
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


async def eventually(stack: Stack, want: int, service: str = "", timeout: float = 5.0) -> None:
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


async def test_redis_outage_turns_overall_status_not_serving(
    proxied: tuple[Stack, TcpProxy, TcpProxy],
) -> None:
    stack, _, rd = proxied
    await eventually(stack, SERVING)
    await rd.cut()
    await eventually(stack, NOT_SERVING)
    # The setup services need only PostgreSQL.
    assert await status(stack, "tracker.v1.SetupService") == SERVING
    await rd.open()
    await eventually(stack, SERVING)


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
    await asyncio.sleep(0.3)
    await pg.cut()
    await asyncio.sleep(0.6)
    await pg.open()
    async with asyncio.timeout(5):
        await reader
    assert seen == [SERVING, NOT_SERVING, SERVING]


async def test_unknown_service_is_not_found(proxied: tuple[Stack, TcpProxy, TcpProxy]) -> None:
    stack, _, _ = proxied
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await status(stack, "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
