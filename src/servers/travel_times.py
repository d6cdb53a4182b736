"""Background part of the worker (and of the all-in-one process): travel-time turns, forever.
Several loops (in one process or many) share the destinations through leases in PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from servers.config import Settings
from servers.container import Container
from servers.services import POSTGRES
from usecases.travel_times import ComputeTravelTimes

log = logging.getLogger("tracker.travel_times")

MAX_BACKOFF_S = 30.0
IDLE_S = 1.0


class TravelTimeLoop:
    """Claim due destinations, compute their bins, repeat; idle a second when none is due;
    back off with jitter (and carry on) after a failed turn."""

    needs = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, container: Container) -> None:
        uow = await container.uow_factory.async_()
        settings = container.travel_time_settings()
        base = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for n in range(self._settings.detectors.workers):
            turn = ComputeTravelTimes(uow, container.clock(), f"{base}-{n}", settings)
            self._tasks.append(asyncio.create_task(self._loop(turn), name=f"travel-times-{n}"))

    async def _loop(self, turn: ComputeTravelTimes) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(initial=IDLE_S, max=MAX_BACKOFF_S, jitter=IDLE_S),
            before_sleep=lambda state: log.warning(
                "travel-time turn failed",
                exc_info=state.outcome.exception() if state.outcome else None,
            ),
            sleep=asyncio.sleep,
            reraise=True,
        )
        while True:
            result = await retrying(turn)
            if result.destinations:
                log.info(
                    "travel-time turn",
                    extra={
                        "destinations": result.destinations,
                        "bins": result.bins,
                        "lost": result.lost,
                    },
                )
            else:
                await asyncio.sleep(IDLE_S)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
