"""The fetcher's runtime (servers/fetcher_runtime.py) around the FetchWorker use case, on the
in-memory fakes and a fake clock: it registers, rebuilds the queue, serves every tracker
through the account loop, rebuilds again when the use case asks, and leaves the queue on
stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import timedelta

from servers.fetcher_runtime import FetcherRuntime
from tests.unit.test_fetch_worker import World, make_world
from usecases.fetching import FetchWorker


def runtime_of(w: World) -> FetcherRuntime:
    async def sleep(seconds: float) -> None:  # time passes on the fake clock only
        w.clock.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)

    return FetcherRuntime(w.worker, w.queue, w.gate, w.clock, sleep=sleep)


async def until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def test_the_runtime_syncs_serves_every_tracker_and_leaves_on_stop() -> None:
    w = make_world(20, silent=0.0, per_request=8)
    runtime = runtime_of(w)
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: w.queue.synced is not None)
        assert w.worker.config.worker_id in w.queue.workers  # registered before any turn
        await until(lambda: len({i for r in w.source.requests for i in r}) == 20)
        served = {i for r in w.source.requests for i in r}
        assert served == {t.id for t in w.trackers}
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 5)
    assert task.done()
    assert task.exception() is None
    assert not w.queue.leases  # every claim handed back
    assert w.worker.config.worker_id not in w.queue.workers


async def test_a_sync_the_use_case_asks_for_is_run_by_the_runtime() -> None:
    w = make_world(5, silent=0.0)
    runtime = runtime_of(w)
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: w.queue.synced is not None)
        first = w.queue.synced
        w.clock.advance(timedelta(seconds=1))
        w.worker.want_sync("queue lost")  # as a turn does when the queue's marker is gone
        await until(lambda: w.queue.synced != first)
        assert w.worker.sync_reason == "queue lost"
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 5)


async def test_each_fetch_turn_is_one_span_of_the_tracer() -> None:
    """Issue 15: a turn (claim, request, store, requeue) is one span, so the reports it
    stores link the worker's batch to it (docs/observability.md)."""
    w = make_world(4, silent=0.0)
    names: list[str] = []
    served: list[int] = []

    class RecordingTracer:
        @contextlib.contextmanager
        def span(self, name: str) -> Iterator[None]:
            names.append(name)
            before = len(w.source.requests)
            yield None
            served.append(len(w.source.requests) - before)

    w.worker = replace_tracer(w.worker, RecordingTracer())
    runtime = runtime_of(w)
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: any(served))
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 5)
    assert set(names) == {"fetch turn"}
    first = next(i for i, n in enumerate(served) if n)
    assert served[first] == 1  # the turn's request was made inside its span


def replace_tracer(worker: FetchWorker, tracer: object) -> FetchWorker:
    worker.tracer = tracer  # type: ignore[assignment]
    return worker
