"""Ports of silent-tracker detection: learning cadences, reading a tracker's health and the
silent trackers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.fleet import FleetGroup, GroupBy
from domain.pagination import Page, PageRequest
from domain.silence import SilenceRule, TrackerHealth


@dataclass(frozen=True, slots=True)
class SilentFilter:
    """Silent trackers of these clients (None: every client), optionally of one client,
    brand or production run."""

    client_ids: frozenset[uuid.UUID] | None = None
    client_id: uuid.UUID | None = None
    brand_id: uuid.UUID | None = None
    production_run_id: uuid.UUID | None = None


class CadenceRepository(Protocol):
    async def refresh(
        self, after: uuid.UUID | None, limit: int, rule: SilenceRule, now: datetime
    ) -> uuid.UUID | None:
        """Learn the cadence and last report of the next ``limit`` trackers by id after
        ``after`` (None: from the first); the last id done, None once past the last."""
        ...

    async def health(
        self, tracker_id: uuid.UUID, rule: SilenceRule, now: datetime
    ) -> TrackerHealth:
        """A tracker's health from its learned cadence and its last report as stored now;
        NotFound("tracker", id)."""
        ...

    async def silent(
        self, filter: SilentFilter, page: PageRequest, now: datetime
    ) -> Page[TrackerHealth]:
        """Trackers of running production runs silent at ``now``, longest silent first (a
        tracker that reported since its cadence was learned is left out)."""
        ...


class FleetStatistics(Protocol):
    async def statistics(
        self, client_ids: frozenset[uuid.UUID] | None, group_by: GroupBy, now: datetime
    ) -> list[FleetGroup]:
        """Per group of the trackers of these clients (None: every client), by key."""
        ...
