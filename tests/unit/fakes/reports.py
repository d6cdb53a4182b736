"""Fake of the reports port (``domain.ports.reports``)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from domain.reports import Report, ReportRows
from tests.unit.fakes.base import (
    ReportIdentity,
)

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork


class FakeReportRepository:
    """Reports by identity (adapter: ``reports``, primary key (tracker_id, report_time,
    latitude_e7, longitude_e7), ``INSERT ... ON CONFLICT DO NOTHING``)."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[ReportIdentity, Report]:
        return self._uow.tables.reports

    async def add_many(self, reports: list[Report]) -> int:
        return len(await self.add_new(reports))

    async def add_new(self, reports: list[Report]) -> list[uuid.UUID]:
        new = []
        for report in reports:
            if report.identity not in self._rows:
                self._rows[report.identity] = report
                new.append(report.tracker_id)
        return new

    async def add_rows(self, rows: ReportRows) -> int:
        return await self.add_many(rows.reports())

    async def count(self, tracker_id: uuid.UUID) -> int:
        """How many reports of the tracker are stored (as seen by this unit of work)."""
        return sum(1 for r in self._rows.values() if r.tracker_id == tracker_id)
