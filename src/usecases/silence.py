"""Silent trackers: the worker's turn that learns cadences chunk by chunk, and the reads of a
tracker's health and of the silent trackers the caller may see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from domain.access import Principal, require_read
from domain.fleet import FleetGroup, GroupBy
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock
from domain.ports.silence import CadenceRepository, FleetStatistics, SilentFilter
from domain.silence import SilenceRule, TrackerHealth


class LearnCadences:
    """One turn: the next ``chunk`` trackers (by id, wrapping around) get their cadence and
    last report learned; a whole pass over 250,000 trackers takes 250,000 / chunk turns."""

    def __init__(
        self, repo: CadenceRepository, clock: Clock, rule: SilenceRule, chunk: int
    ) -> None:
        self._repo, self._clock, self._rule, self._chunk = repo, clock, rule, chunk
        self._after: uuid.UUID | None = None

    async def __call__(self) -> bool:
        """True when this turn finished a pass over every tracker."""
        self._after = await self._repo.refresh(
            self._after, self._chunk, self._rule, self._clock.now()
        )
        return self._after is None


@dataclass(frozen=True, slots=True)
class SilentQuery:
    client_id: uuid.UUID | None = None
    brand_id: uuid.UUID | None = None
    production_run_id: uuid.UUID | None = None


class SilenceQueries:
    """A tracker's health, and the silent trackers of the caller's clients (another client's
    tracker is NotFound, like one that does not exist)."""

    def __init__(self, repo: CadenceRepository, clock: Clock, rule: SilenceRule) -> None:
        self._repo, self._clock, self._rule = repo, clock, rule

    async def health(self, caller: Principal, tracker_id: uuid.UUID) -> TrackerHealth:
        health = await self._repo.health(tracker_id, self._rule, self._clock.now())
        require_read(caller, health.client_id, "tracker", tracker_id)
        return health

    async def silent(
        self, caller: Principal, query: SilentQuery, page: PageRequest
    ) -> Page[TrackerHealth]:
        readable = caller.readable_clients()
        if query.client_id is not None and readable is not None and query.client_id not in readable:
            return Page([], None)
        found = SilentFilter(readable, query.client_id, query.brand_id, query.production_run_id)
        return await self._repo.silent(found, page, self._clock.now())


class FleetStatisticsQuery:
    """The fleet's statistics over the caller's clients (one client's only if asked)."""

    def __init__(self, stats: FleetStatistics, clock: Clock) -> None:
        self._stats, self._clock = stats, clock

    async def __call__(
        self, caller: Principal, client_id: uuid.UUID | None, group_by: GroupBy
    ) -> list[FleetGroup]:
        readable = caller.readable_clients()
        if client_id is not None:
            if readable is not None and client_id not in readable:
                return []
            readable = frozenset({client_id})
        return await self._stats.statistics(readable, group_by, self._clock.now())
