"""Issue 15: what a Kubernetes rollout needs from the servers, with real processes.

- A rollout drill: two query server processes behind one client (round_robin over both,
  client-side health checks) that keeps calling; one gets SIGTERM, goes NOT_SERVING, keeps
  serving through its drain, then stops: not one call fails.
- ``grpc.max_connection_age``: a long-lived client connection is closed by the server and the
  client reconnects (to whatever the address now leads to) without a failed call.
- Health checks answer while the worker's batch holds the CPU of its own loop.

Every check here is about order (what happened before what), never about speed; the time
limits are generous bounds for a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from dependency_injector import providers
from grpc_health.v1 import health_pb2, health_pb2_grpc

from domain.geo import NearestCity
from domain.model import GeoPoint
from servers import endpoints
from servers.config import Settings
from servers.runtime import Endpoint, Process, server_options
from servers.worker import WorkerLoop
from tests.conftest import REDIS_URL, process_env
from tests.integration.conftest import ADMIN_EMAIL, Stack, stack_settings
from tests.integration.proxy import TcpProxy
from tests.integration.test_processing import HAMBURG_WAREHOUSE, T0, World, make_world, rep
from tests.ports import free_port
from tracker.v1 import setup_query_service_pb2 as sq
from tracker.v1 import setup_query_service_pb2_grpc as sq_grpc

pytestmark = pytest.mark.integration

BIN = pathlib.Path(sys.executable).parent
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def database_url(geo_database_url: str) -> str:
    return geo_database_url


@pytest.fixture
async def world(stack: Stack) -> World:
    return await make_world(stack)


class QueryServer:
    """A ``tracker-query`` process on free ports, as Kubernetes runs it."""

    def __init__(self, database_url: str, log: pathlib.Path, **settings: str) -> None:
        self.port = free_port()
        self.log_path = log
        env = process_env(
            TRACKER_DATABASE_URL=database_url,
            TRACKER_REDIS_URL=REDIS_URL,
            TRACKER_QUERY_PORT=str(self.port),
            TRACKER_HEALTH_PORT="0",
            TRACKER_METRICS_PORT="0",
            TRACKER_HEALTH_CHECK_INTERVAL_S="0.5",
            **settings,
        )
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "tracker-query")], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text()

    async def serving(self, timeout_s: float = 60) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(timeout_s):
                while True:
                    assert self.proc.poll() is None, self.log()
                    try:
                        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                        if reply.status == SERVING:
                            return
                    except grpc.aio.AioRpcError:
                        pass
                    await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
async def query_servers(stack: Stack, tmp_path: pathlib.Path) -> AsyncIterator[list[QueryServer]]:
    servers: list[QueryServer] = []
    yield servers
    for server in servers:
        server.stop()


class ServiceProxy:
    """A Kubernetes Service in small: each new TCP connection goes to the next backend in
    its endpoints (round robin), and a backend is in the endpoints only while its readiness
    probe (a health check every ``period_s``) says SERVING. Open connections stay where they
    are, as with kube-proxy. A backend that stops listening before the probe noticed gets
    connections that fail: what a rollout without a drain does to callers."""

    def __init__(self, backends: Sequence[int], period_s: float = 1.5) -> None:
        self.backends = list(backends)
        self.ready: list[int] = []
        self.removed: dict[int, float] = {}  # backend -> when its probe failed first
        self.connections: dict[int, int] = {}  # backend -> connections made to it so far
        self._period_s = period_s
        self._next = 0
        self._server: asyncio.Server | None = None
        self._probe: asyncio.Task[None] | None = None
        self.port = 0

    async def __aenter__(self) -> ServiceProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._probe = asyncio.create_task(self._probes())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        assert self._probe is not None
        self._probe.cancel()
        self._server.close()

    async def _probes(self) -> None:
        channels = {p: grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in self.backends}
        try:
            while True:
                for port, channel in channels.items():
                    try:
                        reply = await health_pb2_grpc.HealthStub(channel).Check(
                            health_pb2.HealthCheckRequest(), timeout=2
                        )
                        ok = reply.status == SERVING
                    except grpc.aio.AioRpcError:
                        ok = False
                    if ok and port not in self.ready and port not in self.removed:
                        self.ready.append(port)
                    elif not ok and port in self.ready:
                        self.ready.remove(port)
                        self.removed[port] = time.monotonic()
                await asyncio.sleep(self._period_s)
        finally:
            for channel in channels.values():
                await channel.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.ready:
            writer.transport.abort()
            return
        self._next += 1
        backend = self.ready[self._next % len(self.ready)]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            writer.transport.abort()
            return
        self.connections[backend] = self.connections.get(backend, 0) + 1

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def keep_calling(
    target: str,
    token: str,
    stop: asyncio.Event,
    callers: int = 6,
    answered: list[int] | None = None,
) -> tuple[int, list[str]]:
    """``callers`` loops of ListClients, each over a channel (a connection) of its own, until
    ``stop``: (calls, failures). ``answered``, if given, counts each caller's successful
    calls as they happen."""
    calls, failures = 0, []
    answered = answered if answered is not None else [0] * callers
    meta = (("authorization", f"Bearer {token}"),)

    async def caller(i: int) -> None:
        nonlocal calls
        async with grpc.aio.insecure_channel(target) as channel:
            stub = sq_grpc.SetupQueryServiceStub(channel)
            while not stop.is_set():
                try:
                    await stub.ListClients(
                        sq.ListClientsRequest(page_size=10), metadata=meta, timeout=30
                    )
                    answered[i] += 1
                except grpc.aio.AioRpcError as err:
                    failures.append(f"{err.code().name}: {err.details()}")
                calls += 1
                await asyncio.sleep(0.005)

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return calls, failures


async def test_rollout_drill_one_of_two_servers_drains_and_stops_without_a_failed_call(
    stack: Stack, query_servers: list[QueryServer], tmp_path: pathlib.Path
) -> None:
    """Two query servers behind a Service; callers keep calling through it; one server
    gets SIGTERM (a rollout replacing its pod). It turns NOT_SERVING, the Service's probe
    takes it out of the endpoints during the drain, new connections go to the other, and
    then it stops, letting in-flight calls finish: zero failed calls. (With
    TRACKER_SHUTDOWN_DRAIN_S=0 the same drill failed 585 of 1,771 calls with UNAVAILABLE:
    new connections went to the stopped server until the probe noticed.)"""
    assert stack.container is not None
    database_url = stack.container.settings().database.dsn
    token = await stack.token_for(ADMIN_EMAIL)
    for name in ("old", "new"):
        query_servers.append(
            QueryServer(
                database_url,
                tmp_path / f"{name}.log",
                TRACKER_SHUTDOWN_DRAIN_S="4",  # > the probe period (1.5 s), with room
                TRACKER_SHUTDOWN_GRACE_S="5",
                # connections are re-made now and then, so both servers get callers
                TRACKER_GRPC_MAX_CONNECTION_AGE_S="1",
            )
        )
    old, new = query_servers
    await asyncio.gather(old.serving(), new.serving())

    async with ServiceProxy([old.port, new.port]) as service:
        async with asyncio.timeout(30):
            while len(service.ready) < 2:
                await asyncio.sleep(0.05)
        stop = asyncio.Event()
        answered = [0] * 6
        calling = asyncio.create_task(
            keep_calling(f"127.0.0.1:{service.port}", token, stop, answered=answered)
        )
        # calls flow to both: the six callers' connections went round robin to both servers,
        # and every caller has had answers
        async with asyncio.timeout(60):
            while min(answered) < 5 or len(service.connections) < 2:
                await asyncio.sleep(0.05)
        old.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            while old.proc.poll() is None:
                await asyncio.sleep(0.05)
        stopped = time.monotonic()
        # and go on, to the one left: every caller has answers after the old server stopped
        since = list(answered)
        async with asyncio.timeout(60):
            while any(a < b + 5 for a, b in zip(answered, since, strict=True)):
                await asyncio.sleep(0.05)
        stop.set()
        calls, failures = await calling

    assert failures == [], (len(failures), calls, failures[:5])
    assert old.port in service.removed
    assert service.removed[old.port] < stopped
    assert old.proc.returncode == 0, old.log()
    log = old.log()
    assert log.index('"draining"') < log.index('"stopped"'), log
    assert calls > 50, calls
    assert new.proc.poll() is None, "the other server serves on"


async def test_a_long_lived_connection_is_closed_at_its_maximum_age_without_a_failed_call(
    stack: Stack,
) -> None:
    """With ``grpc_max_connection_age_s`` the server sends GOAWAY to a connection that
    reached its age; the client's next calls go over a new connection (through a proxy that
    counts them). Without it one connection would carry every call."""
    assert stack.container is not None
    settings = stack_settings(
        stack.container.settings().database.dsn,
        grpc_max_connection_age_s=0.5,
        grpc_max_connection_age_grace_s=5.0,
    )
    assert ("grpc.max_connection_age_ms", 500) in server_options(settings)
    process = Process(settings, [Endpoint("health", 0)])
    ports = await process.start()
    proxy = TcpProxy("127.0.0.1", ports["health"])
    await proxy.open()
    failures = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(60):
                while proxy.connections < 3:
                    try:
                        await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    except grpc.aio.AioRpcError as err:
                        failures.append(err.code().name)
                    await asyncio.sleep(0.02)
    finally:
        await proxy.cut()
        await process.stop(0)
    assert failures == []


def test_servers_take_no_connection_age_when_it_is_zero() -> None:
    options = dict(server_options(stack_settings("postgresql://x", grpc_max_connection_age_s=0)))
    assert "grpc.max_connection_age_ms" not in options
    options = dict(server_options(stack_settings("postgresql://x")))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000


class HoggingGeocoder:
    """Holds its thread's CPU (a busy loop, never yielding to its event loop) until
    released, as a batch of thousands of trackers does between two queries."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hogging = False

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        self.entered.set()
        self.hogging = True
        deadline = time.monotonic() + 60  # a bound, should the test die
        n = 0
        while not self.release.is_set() and time.monotonic() < deadline:
            n += 1  # pure Python: holds the GIL but for the interpreter's switches
        self.hogging = False
        return [None] * len(points)


async def test_health_answers_while_a_worker_batch_holds_the_cpu(world: World) -> None:
    """The worker's batches run on a loop of their own: while one computes without yielding,
    the process's health server answers every check (and the batch is still computing when
    the answers come)."""
    assert world.stack.container is not None
    hog = HoggingGeocoder()

    class Loop(WorkerLoop):
        def batch_container(self):  # type: ignore[no-untyped-def]
            own = super().batch_container()
            own.geocoder.override(providers.Object(hog))
            return own

    settings = stack_settings(world.stack.container.settings().database.dsn, worker_idle_s=0.05)
    tracker = await world.tracker()
    await world.store([rep(tracker, T0, HAMBURG_WAREHOUSE)])
    process = Process(settings, [Endpoint("health", 0)], [Loop(settings)])
    ports = await process.start()
    answered_while_hogging = []
    try:
        async with asyncio.timeout(30):
            while not hog.entered.is_set():
                await asyncio.sleep(0.01)

        def check_from_a_thread() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{ports['health']}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(5):
                    stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10)
                    answered_while_hogging.append(hog.hogging)

        await asyncio.to_thread(check_from_a_thread)
    finally:
        hog.release.set()
        await process.stop(0)
    assert answered_while_hogging == [True] * 5


def test_only_processes_behind_a_service_drain() -> None:
    """The fetcher and the worker serve only their own probes: nothing to move away, so a
    SIGTERM stops them without the drain; API servers and the standalone health drain."""
    settings = Settings(database_url="postgresql://x", health_port=5000)
    assert not Process(settings, endpoints.health(settings)).takes_calls
    assert Process(settings, [endpoints.query(settings)]).takes_calls
    assert Process(settings, endpoints.standalone_health(settings)).takes_calls
