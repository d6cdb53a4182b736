"""Ports of outage detection: cohort shares of silent trackers, their history, and events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from domain.outages import Cohort, CohortShare, Outage, OutageRule
from domain.pagination import Page, PageRequest


@dataclass(frozen=True, slots=True)
class OutageFilter:
    client_ids: frozenset[uuid.UUID] | None = None
    client_id: uuid.UUID | None = None
    open_only: bool = False


class OutageRepository(Protocol):
    async def shares(self, now: datetime, rule: OutageRule) -> list[CohortShare]:
        """Per cohort: trackers of running production runs that have reported, and how many
        of them are silent at ``now`` (from the learned cadences)."""
        ...

    async def baseline(self, now: datetime, window: timedelta) -> dict[Cohort, float]:
        """Each cohort's mean silent share over the snapshots of ``[now - window, now)``."""
        ...

    async def open_outages(self) -> dict[Cohort, Outage]: ...

    async def save(
        self,
        now: datetime,
        shares: Sequence[CohortShare],
        opened: Sequence[Outage],
        ended: Sequence[int],
    ) -> list[Outage]:
        """In one transaction: the snapshot of ``shares``, the new outages (returned with
        their ids) and the end of the ``ended`` ones."""
        ...

    async def list_outages(self, filter: OutageFilter, page: PageRequest) -> Page[Outage]:
        """Newest first."""
        ...
