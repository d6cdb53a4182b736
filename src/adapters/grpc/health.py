"""grpc.health.v1 statuses driven by live dependency checks.

``""`` is SERVING while the dependencies the whole process needs answer (``overall``; every
checked dependency unless told); each service is SERVING while the
dependencies it needs answer; ``liveness`` is SERVING while the process runs (for liveness
probes, which must not restart a pod because its database is down).

The checks run in the background, every ``interval_s``, never on a request's path: a Check
answers from the last published snapshot (a dictionary read, no await, no lock), so it
costs the same whatever the dependencies or the process's other work do. The snapshot has
a freshness bound (``max_age_s``): past it, every service but ``liveness`` answers
NOT_SERVING, so a process whose checks stopped (a wedged loop, a probe that hangs past
its timeout) leaves its Services instead of reporting an old SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.prometheus import DEPENDENCY_UP
from usecases.health import CheckDependencies, DependencyStatus

log = logging.getLogger(__name__)

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
WATCH_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every service's status as of one check (``checked_at``: monotonic seconds; None:
    never expires, as after shutdown)."""

    statuses: Mapping[str, int] = field(default_factory=dict)
    checked_at: float | None = None


class SnapshotHealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 answered from a published ``Snapshot``. It keeps no state bound to
    an event loop, so servers on any loop (or thread) can share it."""

    def __init__(
        self,
        max_age_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        source: Callable[[], Snapshot] | None = None,
    ) -> None:
        """``source``: where the snapshot is read (default: what ``publish`` was given; a
        health process reads shared memory)."""
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._snapshot = Snapshot()
        self._source = source or (lambda: self._snapshot)
        self.listeners: list[Callable[[Snapshot], None]] = []

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot  # one reference swap: readers see the old or the new
        for listener in self.listeners:
            listener(snapshot)

    def status(self, service: str) -> int | None:
        """The status to answer for ``service`` now; None for a service never reported."""
        snap = self._source()
        status = snap.statuses.get(service)
        if status is None or service == LIVENESS:
            return status
        if snap.checked_at is not None and self._monotonic() - snap.checked_at > self._max_age_s:
            return NOT_SERVING  # the checks stopped: do not vouch for what they last saw
        return status

    def statuses(self) -> dict[str, int]:
        """Every reported service's status now (``List``), under the same freshness rule."""
        out = {}
        for name in self._source().statuses:
            status = self.status(name)
            out[name] = SERVICE_UNKNOWN if status is None else status
        return out

    def list_response(self) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self.statuses().items()
            }
        )

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every service with its status (grpcio's own servicer leaves List unimplemented)."""
        return self.list_response()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change (SERVICE_UNKNOWN for a service not reported),
        read from the snapshot every ``WATCH_POLL_S``."""
        last: int | None = None
        while True:
            status = self.status(request.service)
            status = SERVICE_UNKNOWN if status is None else status
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_POLL_S)


class HealthReporter:
    def __init__(
        self,
        check: CheckDependencies,
        services: Mapping[str, Sequence[str]],
        interval_s: float,
        overall: Collection[str] | None = None,
        max_age_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``services`` maps each gRPC service name to the dependency names it needs;
        ``overall``: the dependencies ``""`` needs (None: every checked dependency);
        ``max_age_s``: the snapshot's freshness bound (default: three intervals)."""
        self._overall = None if overall is None else frozenset(overall)
        self._monotonic = monotonic
        self.servicer = SnapshotHealthServicer(
            3 * interval_s if max_age_s is None else max_age_s, monotonic
        )
        self._check = check
        self._services = dict(services)
        self._interval_s = interval_s
        self._last: dict[str, DependencyStatus] = {}
        self._stopping = asyncio.Event()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def _all(self, status: int) -> dict[str, int]:
        return {"": status, **dict.fromkeys(self._services, status)}

    async def start(self) -> None:
        """Publish NOT_SERVING everywhere, then a first check; then re-check periodically."""
        self.servicer.publish(
            Snapshot({LIVENESS: SERVING, **self._all(NOT_SERVING)}, self._monotonic())
        )
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def check_once(self) -> dict[str, DependencyStatus]:
        statuses = await self._check()
        checked_at = self._monotonic()
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
        published = {
            LIVENESS: SERVING,
            "": SERVING if healthy >= overall else NOT_SERVING,
            **{
                service: SERVING if set(needs) <= healthy else NOT_SERVING
                for service, needs in self._services.items()
            },
        }
        if not self._stopped:  # a check that ends after stop() must not undo it
            self.servicer.publish(Snapshot(published, checked_at))
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
        """Everything NOT_SERVING from now on (graceful shutdown), ``liveness`` too."""
        self._stopped = True
        self.servicer.publish(Snapshot({LIVENESS: NOT_SERVING, **self._all(NOT_SERVING)}))
        self._stopping.set()
        if self._task is not None:
            await self._task
