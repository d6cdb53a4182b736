"""The health port served by a process of its own (``TRACKER_HEALTH_PROCESS``).

A health answer in the main process needs that process's GIL: while a CPU-bound thread
holds it (a worker batch replaying statuses, decoding a large result set) and the node's
CPUs are busy, the holder is often descheduled with the GIL in hand, and a Check waits for
it to run again (hundreds of ms beside four busy processes, bench/health_under_load.py).
This child answers from the statuses the parent's checks publish into shared memory, with
the same freshness bound, and runs no other Python: nothing it does waits on the parent.
It exits when the parent stops it or dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from multiprocessing.connection import Connection
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapters.grpc.health import (
    SERVICE_UNKNOWN,
    WATCH_POLL_S,
    Snapshot,
    SnapshotHealthServicer,
)

HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_CTX = multiprocessing.get_context("spawn")


class SharedSnapshot:
    """A ``Snapshot`` in shared memory: a status per service name (-1: not reported) and
    the check's monotonic time (NaN: never expires). Written by the parent, read by the
    child without a lock: each field is one machine word; a read that straddles a write
    mixes two consecutive checks' statuses for an instant, never invents one."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._statuses: Any = _CTX.RawArray("i", [-1] * len(self.names))
        self._checked_at: Any = _CTX.RawValue("d", math.nan)

    def write(self, snapshot: Snapshot) -> None:
        for i, name in enumerate(self.names):
            self._statuses[i] = snapshot.statuses.get(name, -1)
        self._checked_at.value = math.nan if snapshot.checked_at is None else snapshot.checked_at

    def read(self) -> Snapshot:
        checked_at = self._checked_at.value
        statuses = {n: s for n, s in zip(self.names, self._statuses, strict=True) if s >= 0}
        return Snapshot(statuses, None if math.isnan(checked_at) else checked_at)


class SyncHealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for a synchronous server, over a ``SnapshotHealthServicer``'s rule."""

    def __init__(self, rule: SnapshotHealthServicer) -> None:
        self._rule = rule

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._rule.status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        last: int | None = None
        while context.is_active():
            status = self._rule.status(request.service)
            status = SERVICE_UNKNOWN if status is None else status
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            time.sleep(WATCH_POLL_S)


def _serve(
    host: str, port: int, shared: SharedSnapshot, max_age_s: float, conn: Connection
) -> None:
    """The child: serve until the parent says stop or goes away (its end of ``conn``
    closes with it)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"),
        options=[("grpc.so_reuseport", 0)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(
        SyncHealthServicer(SnapshotHealthServicer(max_age_s, source=shared.read)), server
    )
    reflection.enable_server_reflection([HEALTH_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    conn.send(bound)
    parent = os.getppid()
    try:
        while os.getppid() == parent and not conn.poll(0.5):
            pass
    except (EOFError, OSError):
        pass
    server.stop(0)


class HealthProcess:
    """The parent's handle on the child: start it on ``host:port`` (0: any free port),
    publish into it, stop it."""

    def __init__(self, names: Sequence[str], max_age_s: float) -> None:
        self.shared = SharedSnapshot(names)
        self._max_age_s = max_age_s
        self._conn: Connection | None = None
        self._process: Any = None

    async def start(self, host: str, port: int) -> int:
        ours, theirs = _CTX.Pipe()
        self._conn = ours
        self._process = _CTX.Process(
            target=_serve,
            args=(host, port, self.shared, self._max_age_s, theirs),
            name="tracker-health",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        bound = await asyncio.to_thread(self._bound)
        if bound == 0:
            await self.stop()
            raise RuntimeError(f"cannot listen on {host}:{port} for health")
        return bound

    def _bound(self) -> int:
        assert self._conn is not None
        if not self._conn.poll(60):
            raise RuntimeError("the health process did not start within 60 s")
        try:
            return int(self._conn.recv())
        except EOFError:
            raise RuntimeError("the health process exited while starting") from None

    async def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):  # it has gone already
                self._conn.send("stop")
            self._conn.close()
            self._conn = None
        if self._process is not None:
            await asyncio.to_thread(self._process.join, 10)
            if self._process.is_alive():
                self._process.kill()
            self._process = None
