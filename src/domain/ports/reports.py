"""Ports of the reports capability: storing reports as they come in."""

from __future__ import annotations

import uuid
from typing import Protocol

from domain.ports.common import Transaction
from domain.ports.setup import TrackerRepository
from domain.reports import Report, ReportRows


class ReportRepository(Protocol):
    async def add_many(self, reports: list[Report]) -> int:
        """Store reports idempotently; returns how many were not stored before."""
        ...

    async def add_new(self, reports: list[Report]) -> list[uuid.UUID]:
        """The same, returning the tracker of each report that was not stored before (what
        the fetcher calls news)."""
        ...

    async def add_rows(self, rows: ReportRows) -> int:
        """The same for reports in columns (the bulk path: no entity per report)."""
        ...


class ReportsUnitOfWork(Transaction, Protocol):
    """A transaction storing reports of known trackers."""

    trackers: TrackerRepository
    reports: ReportRepository
