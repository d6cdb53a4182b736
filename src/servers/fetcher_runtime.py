"""The fetcher's asyncio runtime: per account a loop of turns, a heartbeat and the queue's
rebuilds, around the ``FetchWorker`` use case (one turn, one sync: ``usecases/fetching.py``).
Moved here from the use case as it was; pauses and outages are waited out as before."""

from __future__ import annotations

import asyncio
import logging

from domain.errors import DependencyUnavailable, DomainError
from domain.ports.common import Clock
from domain.ports.fetching import AccountGate, FetchMetrics, FetchQueue
from usecases.fetching import Account, FetchWorker, HeldAccount, NullFetchMetrics, Sleep

log = logging.getLogger("tracker.fetcher")


class FetcherRuntime:
    """Runs a ``FetchWorker`` until ``stop``: a loop per account (take the account's gate,
    one turn, pace), a heartbeat with the queue's gauges, and the rebuild of the queue from
    PostgreSQL on request, on a timer and as soon as Redis answers again after an outage."""

    def __init__(
        self,
        worker: FetchWorker,
        queue: FetchQueue,
        gate: AccountGate,
        clock: Clock,
        metrics: FetchMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._worker, self._queue, self._gate, self._clock = worker, queue, gate, clock
        self._metrics = metrics or NullFetchMetrics()
        self._sleep = sleep
        self._stopping = asyncio.Event()
        self._sync_wanted = asyncio.Event()
        worker.on_sync_wanted(self._sync_wanted.set)

    @property
    def worker(self) -> FetchWorker:
        return self._worker

    async def run(self) -> None:
        """Until ``stop``: rebuild the queue, then fetch with every account."""
        self._worker.want_sync("start")
        # Registered before holding any account: a holder must be known alive to keep it.
        await self._worker.register()
        tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="fetch-heartbeat"),
            asyncio.create_task(self._sync_loop(), name="fetch-sync"),
            *(
                asyncio.create_task(self._account_loop(a), name=f"fetch-{a.name}")
                for a in self._worker.accounts
            ),
        ]
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                back = await self._worker.leave()
                log.info("fetcher left the queue", extra={"returned_claims": back})
            except DomainError as exc:
                log.warning("could not return claims on stop", extra={"error": str(exc)})

    def stop(self) -> None:
        self._stopping.set()

    async def _account_loop(self, account: Account) -> None:
        cfg = self._worker.config
        failures = 0  # in a row; the pause after each comes from the worker's schedule
        while not self._stopping.is_set():
            try:
                pause = await self._gate.acquire(
                    account.name,
                    cfg.worker_id,
                    self._clock.now(),
                    cfg.gate_hold,
                    cfg.account_policy.pace,
                )
                if pause > 0:
                    await self._sleep(min(pause, cfg.idle_poll.total_seconds()))
                    continue
                turn = None
                held = HeldAccount(
                    self._gate, account.name, cfg.worker_id, cfg.gate_hold, self._clock.now()
                )
                async with held:
                    try:
                        # one span per turn (issue 15): the reports it stores link to it
                        with self._worker.tracer.span("fetch turn"):
                            turn = await self._worker.turn(account)
                    finally:
                        # A turn that sent no request leaves the account free at once; one
                        # cut short (a defect, or stopping) may have left a request that the
                        # source is still answering.
                        if turn is None:
                            held.free_at = max(
                                self._worker.next_allowed(account),
                                self._clock.now() + cfg.source_busy,
                            )
                        elif turn.requested:
                            held.free_at = self._worker.next_allowed(account)
                        else:
                            held.free_at = self._clock.now()
                failures = 0
                if not turn.served:
                    idle = cfg.idle_poll.total_seconds()
                    if turn.next_due is not None:
                        ahead = (turn.next_due - self._clock.now()).total_seconds()
                        idle = min(idle, max(ahead, 0.01))
                    await self._sleep(idle)
            except DependencyUnavailable as exc:
                failures += 1
                await self._worker.wait_out(exc, self._worker.pause(failures), account.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                self._metrics.error("internal")
                log.exception("fetch turn failed", extra={"account": account.name})
                await self._sleep(self._worker.pause(failures))

    async def _heartbeat_loop(self) -> None:
        cfg = self._worker.config
        while True:
            try:
                await self._worker.heartbeat()
                self._metrics.queue(await self._queue.stats(self._clock.now()))
            except DependencyUnavailable:
                self._worker.want_sync("redis reconnected")
            except Exception:
                log.exception("heartbeat failed")
            await self._sleep(cfg.heartbeat.total_seconds())

    async def _sync_loop(self) -> None:
        """Rebuilds on request, on a timer, and as soon as Redis answers again after an
        outage (it is probed every ``redis_probe``, not after a growing pause)."""
        cfg = self._worker.config
        failures = 0
        while True:
            try:
                await asyncio.wait_for(
                    self._sync_wanted.wait(), timeout=cfg.queue_check.total_seconds()
                )
                reason = self._worker.sync_reason
            except TimeoutError:
                reason = "periodic"
            self._sync_wanted.clear()
            try:
                # One rebuild check per period for the whole fleet (issue 11): skip it when
                # another fetcher checked lately.
                if reason != "periodic" or not await self._worker.synced_lately():
                    await self._worker.sync(reason)
                failures = 0
            except DependencyUnavailable as exc:
                log.warning("queue sync postponed", extra={"dependency": exc.dependency})
                self._worker.want_sync(reason)
                if exc.dependency == "redis":
                    await self._sleep(cfg.redis_probe.total_seconds())
                else:
                    failures += 1
                    await self._sleep(self._worker.pause(failures))
            except Exception:
                failures += 1
                log.exception("queue sync failed")
                await self._sleep(self._worker.pause(failures))
