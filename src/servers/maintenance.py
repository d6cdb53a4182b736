"""Maintenance beside the servers, at start and then every ``report_partitions_interval_s``:
the monthly partitions of ``reports`` are made ahead, so no request ever makes one; rows past
their retention (``retention_*_days``) are deleted in chunks. Run by the collector and the
all-in-one process; replicas race harmlessly (partitions IF NOT EXISTS, deletes SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import logging

from adapters.prometheus import RETENTION_DELETED
from domain.errors import DependencyUnavailable
from servers.config import Settings
from servers.container import CollectorContainer
from servers.services import POSTGRES
from usecases.maintenance import MaintainReportPartitions, PruneExpired

log = logging.getLogger("tracker.maintenance")

RETRY_S = 30.0


class PartitionMaintenance:
    """Background task: one turn at start, then one per interval; a failed turn (database
    down, lock timeout on a busy table) is retried sooner and never stops the process."""

    needs = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self, container: CollectorContainer) -> None:
        turn = await container.maintain_report_partitions.async_()
        prune = await container.prune_expired.async_()
        self._task = asyncio.create_task(self._loop(turn, prune), name="partition-maintenance")

    async def _loop(self, turn: MaintainReportPartitions, prune: PruneExpired) -> None:
        interval = self._settings.collector.partitions_interval.total_seconds()
        while True:
            try:
                made = await turn()
                if made:
                    log.info("report partitions made", extra={"partitions": made})
                deleted = await prune()
                for kind, n in deleted.items():
                    RETENTION_DELETED.labels(kind.value).inc(n)
                if any(deleted.values()):
                    log.info(
                        "rows past their retention deleted",
                        extra={"deleted": {k.value: n for k, n in deleted.items()}},
                    )
                wait = interval
            except DependencyUnavailable as exc:
                log.warning(
                    "partition maintenance: database unavailable", extra={"error": str(exc)}
                )
                wait = min(interval, RETRY_S)
            except Exception:
                log.exception("partition maintenance failed")
                wait = min(interval, RETRY_S)
            await asyncio.sleep(wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
