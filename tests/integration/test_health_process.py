"""``health_process``: the health port answered by a child process from the statuses the
parent's checks publish. It follows a PostgreSQL outage like the in-process server, keeps
answering while the parent's event loop is blocked (and says NOT_SERVING once the last
check is older than ``health_max_age_s``), and goes NOT_SERVING, then away, on stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servers.container import WorkerContainer
from servers.runtime import Endpoint, Process
from servers.services import POSTGRES
from tests.integration.conftest import stack_settings
from tests.integration.proxy import TcpProxy
from tests.integration.test_health import Quiet, via

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_AGE_S = 1.0


def check(port: int, service: str = "") -> int | None:
    """One Check from a plain (synchronous) client; None if it got no answer."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
        except grpc.RpcError:
            return None
    return int(reply.status)


async def until(port: int, want: int, service: str = "") -> None:
    async with asyncio.timeout(30):  # a bound for a loaded machine, not a speed
        while await asyncio.to_thread(check, port, service) != want:
            await asyncio.sleep(0.05)


@pytest.fixture
async def worker(database_url: str) -> AsyncIterator[tuple[Process, TcpProxy]]:
    """A worker-shaped process (health only, needing PostgreSQL through a proxy)."""
    target = urlsplit(database_url)
    pg = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await pg.open()
    settings = stack_settings(
        via(database_url, pg.port),
        health_process=True,
        health_check_timeout_s=0.5,
        health_max_age_s=MAX_AGE_S,
    )
    process = Process(settings, [Endpoint("health", 0)], [Quiet(POSTGRES)], WorkerContainer)
    await process.start()
    try:
        yield process, pg
    finally:
        await process.stop(0)
        if pg._server is not None:
            await pg.cut()


async def test_the_child_follows_a_postgres_outage(worker: tuple[Process, TcpProxy]) -> None:
    process, pg = worker
    port = process.ports["health"]
    assert process.servers == []  # no gRPC server of the parent listens for health
    await until(port, SERVING)
    assert await asyncio.to_thread(check, port, "liveness") == SERVING
    await pg.cut()
    await until(port, NOT_SERVING)
    assert await asyncio.to_thread(check, port, "liveness") == SERVING
    listed = await asyncio.to_thread(listing, port)  # List: the same, for every service
    assert listed[""] == NOT_SERVING
    assert listed["liveness"] == SERVING
    await pg.open()
    await until(port, SERVING)


def listing(port: int) -> dict[str, int]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
    return {name: int(r.status) for name, r in reply.statuses.items()}


async def test_the_child_answers_while_the_parent_is_blocked(
    worker: tuple[Process, TcpProxy],
) -> None:
    """The parent's loop blocked for three freshness bounds: every check still gets an
    answer; the last ones say NOT_SERVING (the parent's checks stopped), liveness stays."""
    process, _ = worker
    port = process.ports["health"]
    await until(port, SERVING)
    answers: list[tuple[int | None, int | None]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            answers.append((check(port), check(port, "liveness")))
            stop.wait(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(3 * MAX_AGE_S)  # blocking the loop is the point
    finally:
        stop.set()
        poller.join()
    assert len(answers) >= 3
    assert None not in {a for pair in answers for a in pair}  # never without an answer
    assert answers[-1] == (NOT_SERVING, SERVING)
    await until(port, SERVING)  # the loop runs again, and so do the checks


async def test_stop_turns_the_child_not_serving_then_closes_it(
    worker: tuple[Process, TcpProxy],
) -> None:
    process, _ = worker
    port = process.ports["health"]
    await until(port, SERVING)
    await process.drain(0)
    assert await asyncio.to_thread(check, port) == NOT_SERVING
    assert await asyncio.to_thread(check, port, "liveness") == NOT_SERVING
    await process.stop(0)
    assert await asyncio.to_thread(check, port) is None  # nothing listens any more
