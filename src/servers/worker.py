"""Composition root of the worker: processes new reports (nearest city, hourly/daily
roll-ups, status) in batches, and applies the batches of bulk jobs, forever. No gRPC API:
metrics, and health if a port is set. Run as many as you like; they share the work through
the processing queue and the job batches (both claimed with leases in PostgreSQL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from adapters import prometheus as m
from domain.errors import DependencyUnavailable
from domain.ports.processing import ProcessingQueue
from servers import endpoints
from servers.config import Settings
from servers.container import WorkerContainer
from servers.runtime import Background, main_for
from servers.services import POSTGRES
from servers.travel_times import TravelTimeLoop
from servers.webhooks import WebhookLoop
from usecases.jobs import BatchResult, RunJobBatch
from usecases.outages import DetectOutages
from usecases.processing import ProcessNewReports, WorkerMetrics
from usecases.silence import LearnCadences

log = logging.getLogger("tracker.worker")

MAX_BACKOFF_S = 30.0

tracer = trace.get_tracer("tracker.worker")


def failed(metrics: WorkerMetrics) -> Callable[[RetryCallState], None]:
    """Count and log one failed batch before the pause."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, DependencyUnavailable):
            metrics.error("unavailable")
            log.warning("worker: database unavailable", extra={"error": str(exc)})
        else:
            metrics.error("error")
            log.error("worker batch failed", exc_info=exc)

    return before_sleep


class WorkerLoop:
    """Background task: claim a batch, process it, repeat; sleep when idle; back off (and
    carry on) while PostgreSQL is unavailable.

    The batches run on an event loop of their own, in a thread, over a container of their
    own (its own PostgreSQL pool): however long a batch computes (thousands of trackers'
    statuses, decoding large result sets), the process's main loop goes on answering health
    checks and serving metrics. The backlog gauges run on the main loop."""

    needs = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None
        self._batches_loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None

    def batch_container(self) -> WorkerContainer:
        """The container the batches run on (made and closed on the batch thread)."""
        return WorkerContainer(settings=self._settings)

    async def start(self, container: WorkerContainer) -> None:
        metrics: WorkerMetrics = container.worker_metrics()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._batches(started, metrics)),
            name="worker-batches",
            daemon=True,
        )
        self._thread.start()
        await asyncio.wrap_future(started)  # its start-up errors are ours
        queue = await container.processing_queue.async_()
        self._tasks.append(asyncio.create_task(self._gauges(queue, metrics), name="worker-gauges"))

    async def _batches(
        self, started: concurrent.futures.Future[None], metrics: WorkerMetrics
    ) -> None:
        """The batch thread's loop: ``worker_concurrency`` batch loops until ``stop`` (the
        Prometheus metrics are thread-safe: both loops report through one ``metrics``)."""
        own = self.batch_container()
        tasks: list[asyncio.Task[None]] = []
        try:
            self._halt = asyncio.Event()
            self._batches_loop = asyncio.get_running_loop()
            process = await own.process_new_reports.async_()
            tasks = [
                asyncio.create_task(self._loop(process, metrics), name=f"worker-{n}")
                for n in range(max(1, self._settings.worker.concurrency))
            ]
        except BaseException as exc:
            started.set_exception(exc)
        else:
            started.set_result(None)
            await self._halt.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            closing = own.shutdown_resources()
            if closing is not None:
                await closing

    async def _gauges(self, queue: ProcessingQueue, metrics: WorkerMetrics) -> None:
        """The backlog gauges, from the queue itself, whatever the batch loops are doing."""
        while True:
            try:
                backlog = await queue.backlog()
            except DependencyUnavailable:
                pass  # the gauges keep their last reading; the batch loops count the outage
            except Exception:
                log.exception("worker: reading the processing backlog failed")
            else:
                metrics.backlog(backlog)
            await asyncio.sleep(self._settings.worker.metrics_interval.total_seconds())

    def _retrying(self, metrics: WorkerMetrics) -> AsyncRetrying:
        """A failed batch (PostgreSQL unavailable, or a defect) is counted, logged and tried
        again after an exponential pause with jitter (from ``worker_idle_s`` up to
        ``MAX_BACKOFF_S``), so replicas do not come back in step after an outage."""
        idle = self._settings.worker.idle.total_seconds()
        return AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=idle, max=MAX_BACKOFF_S, jitter=idle),
            before_sleep=failed(metrics),
            sleep=asyncio.sleep,
            reraise=True,
        )

    async def _loop(self, process: ProcessNewReports, metrics: WorkerMetrics) -> None:
        while True:
            started = time.perf_counter()
            # One span per batch; the queue adapter links it to the traces that stored the
            # claimed trackers' reports (IngestReports, a fetch). Idle polls are spans too.
            with tracer.start_as_current_span("worker batch") as span:
                batch = await self._retrying(metrics)(process)
                span.set_attribute("tracker.claimed", batch.claimed)
                span.set_attribute("tracker.trackers", batch.trackers)
            if not batch.claimed:
                await asyncio.sleep(self._settings.worker.idle.total_seconds())
                continue
            elapsed = time.perf_counter() - started
            metrics.batch(batch, elapsed)
            log.info(
                "worker batch",
                extra={
                    "trackers": batch.trackers,
                    "geocoded": batch.geocoded,
                    "buckets": batch.buckets,
                    "changes": batch.changes,
                    "quarantined": batch.quarantined,
                    "released": batch.released,
                    "seconds": round(elapsed, 3),
                },
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._batches_loop is not None and self._halt is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                self._batches_loop.call_soon_threadsafe(self._halt.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None


def _job_failed(state: RetryCallState) -> None:
    """Count and log one failed bulk-job batch before the pause (its lease runs out and it
    is taken again; nothing of it was committed)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    kind = "unavailable" if isinstance(exc, DependencyUnavailable) else "error"
    m.JOB_ERRORS.labels(kind).inc()
    log.warning("job batch failed", extra={"error": repr(exc)}, exc_info=kind == "error")


class JobLoop:
    """Background task: take a due bulk-job batch and apply it, repeat; sleep when none is
    due. A failed batch is left to its lease (another turn, or another worker, takes it)."""

    needs: tuple[str, ...] = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self, container: WorkerContainer) -> None:
        run = await container.run_job_batch.async_()
        self._task = asyncio.create_task(self._loop(run), name="job-worker")

    async def _loop(self, run: RunJobBatch) -> None:
        idle = self._settings.jobs.idle.total_seconds()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=idle, max=MAX_BACKOFF_S, jitter=idle),
            before_sleep=_job_failed,
            sleep=asyncio.sleep,
            reraise=True,
        )
        while True:
            result: BatchResult = await retrying(run)
            if result.job_id is None:
                await asyncio.sleep(idle)
                continue
            outcome = "applied" if result.applied else "given_back"
            m.JOB_BATCHES.labels(outcome).inc()
            m.JOB_ITEMS.labels("succeeded").inc(result.succeeded)
            m.JOB_ITEMS.labels("failed").inc(result.failed)
            log.info(
                "job batch",
                extra={
                    "job_id": str(result.job_id),
                    "batch": result.seq,
                    "outcome": outcome,
                    "succeeded": result.succeeded,
                    "failed": result.failed,
                },
            )
            for job_id in result.finished:
                log.info("job finished", extra={"job_id": str(job_id)})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class SilenceLoop:
    """Background task: learn the cadence and last report of the next chunk of trackers,
    pause, repeat (wrapping around), so silent trackers are found within a pass."""

    needs: tuple[str, ...] = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self, container: WorkerContainer) -> None:
        learn = await container.learn_cadences.async_()
        self._task = asyncio.create_task(self._loop(learn), name="silence")

    async def _loop(self, learn: LearnCadences) -> None:
        pause = self._settings.silence.interval.total_seconds()
        while True:
            try:
                started = time.perf_counter()
                if await learn():
                    m.SILENCE_PASS_SECONDS.set(time.perf_counter() - started)
                m.SILENCE_TURNS.inc()
            except DependencyUnavailable:
                m.SILENCE_ERRORS.labels("unavailable").inc()
            except Exception:
                m.SILENCE_ERRORS.labels("error").inc()
                log.exception("silence: learning cadences failed")
            await asyncio.sleep(pause)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class OutageLoop:
    """Background task: every ``outage_interval_s``, each cohort's silent share against its
    own baseline; outages opened and ended are logged and exported as metrics (one worker
    replica should run it: two would double the snapshots, not the events)."""

    needs: tuple[str, ...] = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self, container: WorkerContainer) -> None:
        detect = await container.detect_outages.async_()
        self._task = asyncio.create_task(self._loop(detect), name="outages")

    async def _loop(self, detect: DetectOutages) -> None:
        while True:
            try:
                turn = await detect()
            except DependencyUnavailable:
                m.OUTAGE_ERRORS.labels("unavailable").inc()
            except Exception:
                m.OUTAGE_ERRORS.labels("error").inc()
                log.exception("outages: detection failed")
            else:
                for o in turn.opened:
                    m.OUTAGE_EVENTS.labels(o.cohort.dimension.value).inc()
                    log.warning(
                        "outage",
                        extra={
                            "client_id": str(o.cohort.client_id),
                            "dimension": o.cohort.dimension.value,
                            "cohort": o.cohort.key,
                            "silent": o.silent,
                            "trackers": o.trackers,
                            "share": round(o.share, 3),
                            "baseline": round(o.baseline, 3),
                        },
                    )
                m.OUTAGE_OPEN.clear()
                for o in turn.open:
                    labels = (str(o.cohort.client_id), o.cohort.dimension.value, o.cohort.key)
                    m.OUTAGE_OPEN.labels(*labels).set(o.silent)
            await asyncio.sleep(self._settings.outages.interval.total_seconds())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def background(settings: Settings) -> list[Background]:
    return [
        WorkerLoop(settings),
        TravelTimeLoop(settings),
        JobLoop(settings),
        SilenceLoop(settings),
        OutageLoop(settings),
        WebhookLoop(settings),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-worker: geocoding, roll-ups and status of new reports",
        lambda s: endpoints.health(s),
        argv,
        background,
        process="worker",
        container=WorkerContainer,
    )


if __name__ == "__main__":
    raise SystemExit(main())
