"""Ports of the status capability: what the query server reads of processing, and the
per-run status rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.history import CurrentStatus, Granularity, LocationPoint, TrackerStatusChange
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.ports.setup import ProductionRunRepository
from domain.status import (
    StatusRule,
)


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Status or location history: one tracker (or every visible one), a time range."""

    tracker_id: uuid.UUID | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


class StatusRepository(Protocol):
    """What the query server reads of processing, and the per-run status rules."""

    async def tracker_clients(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """The client of each tracker that exists."""
        ...

    async def current(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CurrentStatus]:
        """Current status of each existing tracker (with its client, for access checks)."""
        ...

    async def status_history(
        self, filter: HistoryFilter, page: PageRequest
    ) -> Page[TrackerStatusChange]: ...

    async def location_history(
        self,
        filter: HistoryFilter,
        granularity: Granularity,
        min_confidence: int,
        page: PageRequest,
    ) -> Page[LocationPoint]: ...

    async def status_rule(self, production_run_id: uuid.UUID) -> StatusRule: ...

    async def set_status_rule(self, production_run_id: uuid.UUID, rule: StatusRule) -> None: ...

    async def reevaluate_run(self, production_run_id: uuid.UUID) -> int:
        """Queue every tracker of the run for a full re-evaluation; returns how many."""
        ...


class StatusUnitOfWork(Transaction, Protocol):
    """A transaction reading the runs status rules belong to."""

    production_runs: ProductionRunRepository
