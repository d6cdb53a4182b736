"""The webhook deliverer of the worker: claim due deliveries, POST them signed, record the
outcome; repeat. Any number of workers may run it (claims are leased, SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import logging
import time

from adapters import prometheus as m
from domain.errors import DependencyUnavailable
from servers.config import Settings
from servers.container import WorkerContainer
from servers.services import POSTGRES
from usecases.events import DeliverWebhooks

log = logging.getLogger("tracker.webhooks")

MAX_BACKOFF_S = 30.0


class WebhookLoop:
    needs: tuple[str, ...] = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._container: WorkerContainer | None = None

    async def start(self, container: WorkerContainer) -> None:
        deliver = await container.deliver_webhooks.async_()
        self._container = container
        self._task = asyncio.create_task(self._loop(deliver), name="webhooks")

    async def _loop(self, deliver: DeliverWebhooks) -> None:
        idle = self._settings.events.webhook_idle.total_seconds()
        pause = idle
        while True:
            started = time.perf_counter()
            try:
                turn = await deliver()
            except DependencyUnavailable:
                m.WEBHOOK_ERRORS.labels("unavailable").inc()
                pause = min(MAX_BACKOFF_S, pause * 2)
                await asyncio.sleep(pause)
                continue
            except Exception:
                m.WEBHOOK_ERRORS.labels("error").inc()
                log.exception("webhooks: delivery turn failed")
                pause = min(MAX_BACKOFF_S, pause * 2)
                await asyncio.sleep(pause)
                continue
            pause = idle
            if turn.claimed:
                m.WEBHOOK_TURN_SECONDS.observe(time.perf_counter() - started)
            for outcome in ("delivered", "failed", "dead", "unopenable"):
                count = getattr(turn, outcome)
                if count:
                    m.WEBHOOK_DELIVERIES.labels(outcome).inc(count)
            if turn.dead or turn.unopenable:
                log.warning(
                    "webhooks: deliveries given up",
                    extra={"dead": turn.dead, "unopenable": turn.unopenable},
                )
            if turn.claimed < self._settings.events.webhook_batch:
                await asyncio.sleep(idle)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._container is not None:
            sender = self._container.webhook_sender()
            await sender.close()
