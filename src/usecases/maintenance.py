"""Maintenance turns run by a process beside its servers: the monthly partitions of
``reports`` are made ahead, so no request ever creates one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from domain.instants import REPORT_TIME_FLOOR, TIME_CEILING
from domain.ports.common import Clock
from domain.reports import partition_months


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
