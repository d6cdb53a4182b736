"""HealthReporter and its servicer: answers come from the last published snapshot (never
from a probe on the request's path), a dependency that fails turns its services NOT_SERVING
at the next check, and a snapshot older than the freshness bound is not trusted."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import grpc
import pytest
from grpc_health.v1 import health_pb2

from adapters.grpc.health import (
    LIVENESS,
    NOT_SERVING,
    SERVICE_UNKNOWN,
    SERVING,
    HealthReporter,
)
from tests.unit.fakes.common import FakeProbe
from usecases.health import CheckDependencies

API = "tracker.v1.SetupQueryService"
FETCH = "tracker.v1.FetchQueryService"


class Aborted(Exception):
    pass


class Context:
    """What the servicer uses of a grpc.aio context."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Probe(FakeProbe):
    """A probe the test turns up and down, or holds in the middle of a check."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = False
        self.hold: asyncio.Event | None = None

    async def check(self) -> None:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise ConnectionRefusedError(self.name)


async def started(probe: Probe, calls: int) -> None:
    async with asyncio.timeout(30):
        while probe.calls < calls:
            await asyncio.sleep(0)


def reporter(clock: Monotonic, *probes: Probe, timeout_s: float = 5.0) -> HealthReporter:
    return HealthReporter(
        CheckDependencies(probes, timeout_s=timeout_s),
        services={API: ["postgres"], FETCH: ["postgres", "redis"]},
        interval_s=3600,  # the test runs each check itself
        overall=["postgres"],
        max_age_s=10,
        monotonic=clock,
    )


async def check(health: HealthReporter, service: str = "") -> Any:
    reply = await health.servicer.Check(health_pb2.HealthCheckRequest(service=service), Context())
    return reply.status


async def test_a_dependency_down_turns_what_needs_it_not_serving_at_the_next_check() -> None:
    clock = Monotonic()
    pg, rd = Probe("postgres"), Probe("redis")
    health = reporter(clock, pg, rd)
    await health.start()
    try:
        assert [await check(health, s) for s in ("", API, FETCH, LIVENESS)] == [SERVING] * 4
        rd.down = True
        await health.check_once()
        assert [await check(health, s) for s in ("", API, FETCH)] == [
            SERVING,
            SERVING,
            NOT_SERVING,
        ]
        pg.down = True
        clock.now += 2
        await health.check_once()
        assert [await check(health, s) for s in ("", API, FETCH)] == [NOT_SERVING] * 3
        assert await check(health, LIVENESS) == SERVING
        pg.down = rd.down = False
        await health.check_once()
        assert [await check(health, s) for s in ("", API, FETCH)] == [SERVING] * 3
    finally:
        await health.stop()


async def test_a_snapshot_older_than_the_bound_answers_not_serving() -> None:
    """The checks stopped (a wedged loop, say): after ``max_age_s`` the last SERVING is no
    longer vouched for; liveness is not about dependencies and stays; the next check that
    completes restores the statuses."""
    clock = Monotonic()
    health = reporter(clock, Probe("postgres"), Probe("redis"))
    await health.start()
    try:
        clock.now += 10
        assert await check(health) == SERVING  # at the bound: still fresh
        clock.now += 0.5
        assert [await check(health, s) for s in ("", API, FETCH)] == [NOT_SERVING] * 3
        assert await check(health, LIVENESS) == SERVING
        await health.check_once()
        assert await check(health) == SERVING
    finally:
        await health.stop()


async def test_answers_never_wait_for_a_check_under_way() -> None:
    clock = Monotonic()
    pg = Probe("postgres")
    health = reporter(clock, pg, Probe("redis"))
    await health.start()
    try:
        pg.hold, pg.down = asyncio.Event(), True
        running = asyncio.create_task(health.check_once())
        await started(pg, 2)  # the check is waiting on the probe ...
        assert await check(health) == SERVING  # ... and the answer is the last snapshot's
        assert not running.done()
        pg.hold.set()
        await running
        assert await check(health) == NOT_SERVING
    finally:
        await health.stop()


async def test_stop_turns_everything_not_serving_for_good() -> None:
    clock = Monotonic()
    pg = Probe("postgres")
    health = reporter(clock, pg, Probe("redis"))
    await health.start()
    pg.hold = asyncio.Event()
    late = asyncio.create_task(health.check_once())
    await started(pg, 2)
    await health.stop()
    assert [await check(health, s) for s in ("", API, LIVENESS)] == [NOT_SERVING] * 3
    pg.hold.set()
    await late  # a check that ends after stop() leaves the statuses NOT_SERVING
    clock.now += 3600
    assert [await check(health, s) for s in ("", API, LIVENESS)] == [NOT_SERVING] * 3


async def test_unknown_service_is_not_found_and_watch_follows_the_snapshot() -> None:
    clock = Monotonic()
    pg = Probe("postgres")
    health = reporter(clock, pg, Probe("redis"))
    await health.start()
    try:
        with pytest.raises(Aborted) as err:
            await check(health, "tracker.v1.Nothing")
        assert err.value.args[0] == grpc.StatusCode.NOT_FOUND
        watch = health.servicer.Watch(health_pb2.HealthCheckRequest(service=API), Context())
        assert (await anext(watch)).status == SERVING
        pg.down = True
        await health.check_once()
        assert (await asyncio.wait_for(anext(watch), 30)).status == NOT_SERVING
        unknown = health.servicer.Watch(health_pb2.HealthCheckRequest(service="x"), Context())
        assert (await anext(unknown)).status == SERVICE_UNKNOWN
    finally:
        await health.stop()
