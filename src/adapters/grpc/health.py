"""grpc.health.v1 statuses driven by live dependency checks.

``""`` is SERVING while the dependencies the whole process needs answer (``overall``; every
checked dependency unless told); each service is SERVING while the
dependencies it needs answer; ``liveness`` is SERVING while the process runs (for liveness
probes, which must not restart a pod because its database is down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

from adapters.prometheus import DEPENDENCY_UP
from usecases.health import CheckDependencies, DependencyStatus

log = logging.getLogger(__name__)

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health.aio.HealthServicer):
    """grpcio's servicer plus ``List`` (added to grpc.health.v1 in 2024; grpcio's
    implementation answers it with an exception, i.e. INTERNAL): every service's status."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


class HealthReporter:
    def __init__(
        self,
        check: CheckDependencies,
        services: Mapping[str, Sequence[str]],
        interval_s: float,
        overall: Collection[str] | None = None,
    ) -> None:
        """``services`` maps each gRPC service name to the dependency names it needs;
        ``overall``: the dependencies ``""`` needs (None: every checked dependency)."""
        self._overall = None if overall is None else frozenset(overall)
        self.servicer = HealthServicer()
        self._check = check
        self._services = dict(services)
        self._interval_s = interval_s
        self._last: dict[str, DependencyStatus] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Publish NOT_SERVING everywhere, then a first check; then re-check periodically."""
        await self.servicer.set(LIVENESS, SERVING)
        await self.servicer.set("", NOT_SERVING)
        for name in self._services:
            await self.servicer.set(name, NOT_SERVING)
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def check_once(self) -> dict[str, DependencyStatus]:
        statuses = await self._check()
        for name, st in statuses.items():
            before = self._last.get(name)
            if before is None or before.healthy != st.healthy:
                level = logging.INFO if st.healthy else logging.WARNING
                log.log(
                    level,
                    "dependency " + ("up" if st.healthy else "down"),
                    extra={"dependency": name, "detail": st.detail},
                )
        self._last = statuses
        for name, st in statuses.items():
            DEPENDENCY_UP.labels(name).set(1 if st.healthy else 0)
        healthy = {n for n, st in statuses.items() if st.healthy}
        overall = set(statuses) if self._overall is None else self._overall
        await self.servicer.set("", SERVING if healthy >= overall else NOT_SERVING)
        for service, needs in self._services.items():
            await self.servicer.set(service, SERVING if set(needs) <= healthy else NOT_SERVING)
        return statuses

    async def _run(self) -> None:
        """Re-check every interval until ``stop``; a failing check never ends the loop."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
                break
            except TimeoutError:
                pass
            try:
                await self.check_once()
            except Exception:
                log.exception("health check failed")

    async def stop(self) -> None:
        """Everything NOT_SERVING from now on (graceful shutdown)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self.servicer.enter_graceful_shutdown()
