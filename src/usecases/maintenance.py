"""Maintenance turns run by a process beside its servers: the monthly partitions of
``reports`` are made ahead, so no request ever creates one; rows past their retention
(``domain.retention``) are deleted in chunks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from domain.instants import REPORT_TIME_FLOOR, TIME_CEILING
from domain.ports.common import Clock
from domain.reports import partition_months
from domain.retention import Prunable, RetentionPolicy


class ReportPartitions(Protocol):
    async def ensure(self, months: Sequence[datetime]) -> list[str]:
        """Make the partitions of ``months`` that are missing; return their names."""
        ...

    async def drop_empty_outside(self, floor: datetime, ceiling: datetime) -> list[str]:
        """Drop empty partitions wholly outside [floor, ceiling); return their names."""
        ...


class MaintainReportPartitions:
    """One turn: the partitions of the months around now (see ``partition_months``) are
    made; empty ones no acceptable report can use are dropped."""

    def __init__(
        self, partitions: ReportPartitions, clock: Clock, back_months: int, ahead_months: int
    ) -> None:
        partition_months(clock.now(), back_months, ahead_months)  # reject bad settings early
        self._partitions, self._clock = partitions, clock
        self._back, self._ahead = back_months, ahead_months

    async def __call__(self) -> list[str]:
        months = partition_months(self._clock.now(), self._back, self._ahead)
        made = await self._partitions.ensure(months)
        await self._partitions.drop_empty_outside(REPORT_TIME_FLOOR, TIME_CEILING)
        return made


class RetentionStore(Protocol):
    async def prune(self, kind: Prunable, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` rows of ``kind`` older than ``before`` (one short
        transaction); return how many went."""
        ...


class PruneExpired:
    """One turn: per kind, chunks of ``chunk`` rows deleted until a chunk comes back short
    or ``max_chunks`` were deleted (the rest waits for the next turn, so a first turn on a
    large backlog never holds the database for long)."""

    def __init__(
        self,
        store: RetentionStore,
        clock: Clock,
        policy: RetentionPolicy,
        chunk: int = 5000,
        max_chunks: int = 200,
    ) -> None:
        if chunk < 1 or max_chunks < 1:
            raise ValueError("chunk and max_chunks must be positive")
        self._store, self._clock, self._policy = store, clock, policy
        self._chunk, self._max_chunks = chunk, max_chunks

    async def __call__(self) -> dict[Prunable, int]:
        deleted: dict[Prunable, int] = {}
        for kind, before in self._policy.cutoffs(self._clock.now()).items():
            total = 0
            for _ in range(self._max_chunks):
                n = await self._store.prune(kind, before, self._chunk)
                total += n
                if n < self._chunk:
                    break
            deleted[kind] = total
        return deleted
