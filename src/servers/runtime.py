"""Running a process: build its container, start gRPC servers in order, stop them in order.

Start: resources -> first health check -> servers listening. Stop (SIGTERM/SIGINT): health
NOT_SERVING -> the drain (``shutdown_drain_s``: calls are still served while load balancers
and Kubernetes endpoints move callers away) -> servers refuse new calls and in-flight ones
finish within the grace period (``shutdown_grace_s``) -> resources closed.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.grpc.health import LIVENESS, HealthReporter
from adapters.grpc.reflection import SERVICE_NAME as REFLECTION_NAME
from adapters.grpc.reflection import add_reflection, source_files
from adapters.postgres.pool import ReplicaRouting
from adapters.prometheus import MetricsServer
from servers import log as logsetup
from servers import tracing
from servers.config import PROCESS_PARTS, ConfigError, Settings, check_secrets, load
from servers.container import Container, Core
from servers.health_process import HealthProcess
from servers.services import POSTGRES, REDIS, Needs, Service, needs_of, with_replica
from usecases.health import CheckDependencies

log = logging.getLogger("tracker")

HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Background(Protocol):
    """Work a process runs beside its servers (started after them, stopped before them).
    ``needs``: the dependencies it cannot work without (they count for the ``""`` status)."""

    needs: tuple[str, ...]

    async def start(self, container: Any) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Endpoint:
    """One gRPC server of the process: a name, a port and the services it carries."""

    name: str
    port: int
    services: Sequence[Service] = field(default_factory=list)
    needs: tuple[str, ...] = ()
    """Dependencies this endpoint reports on beyond its services' (the standalone health)."""


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments of every gRPC server: message size, no port sharing, and a maximum
    connection age so clients re-resolve and spread over new replicas after a rollout."""
    options = [
        ("grpc.max_receive_message_length", settings.server.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    age_s = settings.server.max_connection_age.total_seconds()
    if age_s > 0:
        grace_s = settings.server.max_connection_age_grace.total_seconds()
        options += [
            ("grpc.max_connection_age_ms", round(age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(grace_s * 1000)),
        ]
    return options


@functools.cache
def _source_files() -> dict[str, bytes]:
    return source_files()


async def build_server(
    endpoint: Endpoint, container: Core, reporter: HealthReporter, host: str
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        # a health-only endpoint needs none of the API's (nor sign-in and Redis behind them)
        interceptors=(
            await container.interceptors.async_()
            if endpoint.services
            else [container.undecodable_interceptor()]
        ),
        options=server_options(container.settings()),
    )
    names = [await service.register(server, container) for service in endpoint.services]
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
    names += [HEALTH_NAME, REFLECTION_NAME]
    add_reflection(server, names, _source_files())
    port = server.add_insecure_port(f"{host}:{endpoint.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {host}:{endpoint.port} for {endpoint.name}")
    return server, port


class Process:
    """The servers of one process over its container (``container``: the process's class
    from ``servers/container.py``); started and stopped in order."""

    def __init__(
        self,
        settings: Settings,
        endpoints: Sequence[Endpoint],
        background: Sequence[Background] = (),
        container: type[Core] = Container,
    ) -> None:
        self.settings = settings
        self.endpoints = list(endpoints)
        self.background = list(background)
        self._running: list[Background] = []
        self.container: Any = container(settings=settings)
        self.servers: list[grpc.aio.Server] = []
        self.ports: dict[str, int] = {}
        self.reporter: HealthReporter | None = None
        self._children: list[HealthProcess] = []
        self.metrics = MetricsServer(settings.server.bind_host, settings.server.metrics_port)
        self.needs: Needs = needs_of(
            [s for e in self.endpoints for s in e.services],
            [*(e.needs for e in self.endpoints), *(b.needs for b in self.background)],
        )

    async def _reporter(self) -> HealthReporter:
        """Start this process's own dependencies and check only those: a service is SERVING
        while what it needs answers, ``""`` while what the whole process needs answers."""
        c = self.container
        resources = {POSTGRES: c.db_pool, REDIS: c.redis}
        probes = {POSTGRES: c.postgres_probe, REDIS: c.redis_probe}
        for name in self.needs.probed:
            await resources[name].async_()
        checked = [await probes[name].async_() for name in self.needs.probed]
        needs = self.needs
        replica = await self._replica()
        if replica is not None:
            checked.append(replica)
            needs = with_replica(
                needs,
                [s.name for e in self.endpoints if e.name == "query" for s in e.services],
                self.settings.database.read_fallback == "not_serving",
            )
        check = CheckDependencies(
            checked, timeout_s=self.settings.health.check_timeout.total_seconds()
        )
        return HealthReporter(
            check,
            services=needs.services,
            interval_s=self.settings.health.check_interval.total_seconds(),
            overall=needs.overall,
            max_age_s=self.settings.health.max_age.total_seconds(),
        )

    async def _replica(self) -> ReplicaRouting | None:
        """The read replica's routing, for a process that serves the query endpoint with
        ``database_read_url`` set (its probe: reachable and within the lag bound)."""
        serves_queries = any(e.name == "query" and e.services for e in self.endpoints)
        if not serves_queries or not self.settings.database.read_url.get_secret_value():
            return None
        pool = await self.container.read_pool.async_()
        return pool if isinstance(pool, ReplicaRouting) else None

    async def start(self) -> dict[str, int]:
        """Resources, first health check, then every server listening. Returns bound ports."""
        try:
            self.metrics.start()
            if self.metrics.port:
                self.ports["metrics"] = self.metrics.port
                log.info(
                    "listening",
                    extra={
                        "server": "metrics",
                        "host": self.settings.server.bind_host,
                        "port": self.metrics.port,
                    },
                )
            self.reporter = await self._reporter()
            await self.reporter.start()
            for endpoint in self.endpoints:
                if not endpoint.services and self.settings.health.own_process:
                    port = await self._health_process(endpoint)
                else:
                    server, port = await build_server(
                        endpoint, self.container, self.reporter, self.settings.server.bind_host
                    )
                    await server.start()
                    self.servers.append(server)
                self.ports[endpoint.name] = port
                log.info(
                    "listening",
                    extra={
                        "server": endpoint.name,
                        "host": self.settings.server.bind_host,
                        "port": port,
                    },
                )
            for task in self.background:
                await task.start(self.container)
                self._running.append(task)
        except BaseException:
            await self.stop(0)
            raise
        return self.ports

    async def _health_process(self, endpoint: Endpoint) -> int:
        """A health-only endpoint served by a child process (servers/health_process.py),
        fed every snapshot the reporter publishes."""
        assert self.reporter is not None
        servicer = self.reporter.servicer
        names = ["", LIVENESS, *self.needs.services]
        child = HealthProcess(names, self.settings.health.max_age.total_seconds())
        child.shared.write(servicer.snapshot)
        servicer.listeners.append(child.shared.write)
        self._children.append(child)
        return await child.start(self.settings.server.bind_host, endpoint.port)

    @property
    def takes_calls(self) -> bool:
        """Whether callers reach this process through a Service (an API, or the standalone
        health server); the fetcher and the worker serve only their own probes: no drain."""
        return any(e.services or e.needs for e in self.endpoints)

    async def drain(self, drain_s: float, cut_short: asyncio.Event | None = None) -> None:
        """Health NOT_SERVING everywhere while every server keeps serving for ``drain_s``
        (or until ``cut_short`` is set): callers see the status (readiness probes, client
        health checks) and move to other replicas before this one refuses calls."""
        if self.reporter is not None:
            await self.reporter.stop()
        if drain_s <= 0:
            return
        log.info("draining", extra={"drain_s": drain_s})
        waiting = asyncio.Event() if cut_short is None else cut_short
        try:
            await asyncio.wait_for(waiting.wait(), drain_s)
            log.info("drain cut short")
        except TimeoutError:
            pass

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, in-flight calls drain for ``grace_s``, resources closed."""
        if self.reporter is not None:
            await self.reporter.stop()
        for task in reversed(self._running):
            await task.stop()
        self._running.clear()
        await asyncio.gather(*(s.stop(grace_s) for s in self.servers))
        self.servers.clear()
        for child in self._children:
            await child.stop()
        self._children.clear()
        self.metrics.stop()
        closing = self.container.shutdown_resources()  # only those this process started
        if closing is not None:
            await closing


async def serve(
    settings: Settings,
    endpoints: Sequence[Endpoint],
    background: Sequence[Background] = (),
    container: type[Core] = Container,
) -> None:
    process = Process(settings, endpoints, background, container)
    await process.start()
    # What start-up made (modules, caches, pools) lives as long as the process: kept out of
    # the collector's full passes, which otherwise scan it all and pause the loop for 10s of ms.
    gc.freeze()
    stop, again = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        (again if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled)
    try:
        await stop.wait()
        drain_s = settings.server.shutdown_drain.total_seconds() if process.takes_calls else 0
        grace_s = settings.server.shutdown_grace.total_seconds()
        log.info("shutting down", extra={"drain_s": drain_s, "grace_s": grace_s})
        await process.drain(drain_s, again)
    finally:
        await process.stop(settings.server.shutdown_grace.total_seconds())
        log.info("stopped")


def main_for(
    description: str,
    endpoints: Callable[[Settings], Sequence[Endpoint]],
    argv: Sequence[str] | None = None,
    background: Callable[[Settings], Sequence[Background]] = lambda s: (),
    process: str = "all_in_one",
    container: type[Core] = Container,
) -> int:
    """Console-script entry: load and check the settings ``process`` uses (its components
    in ``PROCESS_PARTS``, no others), configure logs, serve until a signal."""
    try:
        settings = load(argv, description=description, process=process)
        uses_secrets = "security" in PROCESS_PARTS[process]
        if uses_secrets:
            check_secrets(settings.security)  # missing or known secrets in production stop us
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(settings.logging.level, settings.logging.format)
    component = description.split(":")[0]
    log.info("starting", extra={"component": component, "settings": settings.redacted()})
    traced = tracing.install(settings, component)
    if uses_secrets and not settings.security.kek_ring.get_secret_value():
        log.warning(
            "no KEK ring set: private keys are sealed with the public development KEK "
            "(set TRACKER_KEK_RING)"
        )
    if uses_secrets and not settings.security.jwt_signing_key.get_secret_value():
        log.warning(
            "no JWT signing key set: using the public development key; tokens are not "
            "secure (set TRACKER_JWT_SIGNING_KEY)"
        )
    try:
        asyncio.run(serve(settings, endpoints(settings), background(settings), container))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        log.error("cannot start", extra={"error": str(exc)})
        return 2
    except RuntimeError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    finally:
        if traced is not None:
            traced.shutdown()
    return 0
