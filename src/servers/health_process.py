"""The health port served by a process of its own (``TRACKER_HEALTH_PROCESS``).

A health answer in the main process needs that process's GIL: while a CPU-bound thread
holds it (a worker batch replaying statuses, decoding a large result set) and the node's
CPUs are busy, the holder is often descheduled with the GIL in hand, and a Check waits for
it to run again (hundreds of ms beside four busy processes, bench/health_under_load.py).
This child answers from the statuses the parent's checks publish into shared memory, with
the same freshness bound, and runs no other Python: nothing it does waits on the parent.
It exits when the parent stops it or dies (its standard input, a pipe from the parent,
closes).
"""

from __future__ import annotations

import asyncio
import math
import mmap
import os
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent import futures

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


class SharedSnapshot:
    """A ``Snapshot`` in memory shared with the child (an anonymous memfd the child maps):
    a status per service name (-1: not reported), then the check's monotonic time (NaN:
    never expires). Written by the parent, read by the child without a lock: each field is
    one aligned word; a read that straddles a write mixes two consecutive checks' statuses
    for an instant, never invents one."""

    def __init__(self, names: Sequence[str], fd: int | None = None) -> None:
        self.names = list(names)
        self._format = f"={len(self.names)}i"
        self._offset = 8 * ((struct.calcsize(self._format) + 7) // 8)
        size = self._offset + 8
        self.fd = os.memfd_create("tracker-health", 0) if fd is None else fd
        if fd is None:
            os.ftruncate(self.fd, size)
        self._map = mmap.mmap(self.fd, size)
        if fd is None:
            self.write(Snapshot())

    def write(self, snapshot: Snapshot) -> None:
        if self._map.closed:  # the child has been stopped
            return
        values = [snapshot.statuses.get(name, -1) for name in self.names]
        struct.pack_into(self._format, self._map, 0, *values)
        at = math.nan if snapshot.checked_at is None else snapshot.checked_at
        struct.pack_into("=d", self._map, self._offset, at)

    def read(self) -> Snapshot:
        (checked_at,) = struct.unpack_from("=d", self._map, self._offset)
        values = struct.unpack_from(self._format, self._map, 0)
        statuses = {n: s for n, s in zip(self.names, values, strict=True) if s >= 0}
        return Snapshot(statuses, None if math.isnan(checked_at) else checked_at)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


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

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return self._rule.list_response()

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


def serve(host: str, port: int, shared: SharedSnapshot, max_age_s: float) -> None:
    """The child: serve, print the bound port, and stop when standard input closes (the
    parent stopped it, or died)."""
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
    print(bound, flush=True)
    sys.stdin.read()  # until EOF
    server.stop(0)


def main() -> None:
    """``python -m servers.health_process HOST PORT FD MAX_AGE_S NAME...``"""
    host, port, fd, max_age_s, *names = sys.argv[1:]
    serve(host, int(port), SharedSnapshot(names, int(fd)), float(max_age_s))


class HealthProcess:
    """The parent's handle on the child: start it on ``host:port`` (0: any free port),
    publish into ``shared``, stop it. The child is a fresh interpreter importing only
    this module's needs (grpc, the health rule), not the parent's application."""

    def __init__(self, names: Sequence[str], max_age_s: float) -> None:
        self.shared = SharedSnapshot(names)
        self._max_age_s = max_age_s
        self._child: asyncio.subprocess.Process | None = None

    async def start(self, host: str, port: int) -> int:
        fd = self.shared.fd
        args = (host, str(port), str(fd), str(self._max_age_s), *self.shared.names)
        self._child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "servers.health_process",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
        )
        assert self._child.stdout is not None
        line = (await self._child.stdout.readline()).strip()
        if not line.isdigit() or int(line) == 0:
            await self.stop()
            raise RuntimeError(f"cannot serve health on {host}:{port} from a child process")
        return int(line)

    async def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            if child.stdin is not None:
                child.stdin.close()  # its cue to stop
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()
        self.shared.close()


if __name__ == "__main__":
    main()
