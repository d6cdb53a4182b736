"""Reading what processing made (current statuses, status and location history, always
limited to the caller's clients) and a run's status rule: ``StatusQueries``, read only; and
changing a run's status rule: ``StatusRuleUpdates``, the one use case here that writes."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.access import Principal, require_manage, require_read
from domain.errors import InvalidArgument, NotFound
from domain.history import (
    CurrentStatus,
    Granularity,
    LocationPoint,
    TrackerStatusChange,
    check_time_range,
)
from domain.limits import MAX_BATCH_STATUSES
from domain.pagination import Page, PageRequest
from domain.ports.common import UnitOfWorkFactory
from domain.ports.status import HistoryFilter, StatusRepository, StatusUnitOfWork
from domain.status import CONFIDENCE_LEVELS, DEFAULT_MIN_CONFIDENCE, StatusRule


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    tracker_id: uuid.UUID | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


class StatusQueries:
    """What processing made, read only: statuses, histories, and a run's status rule."""

    def __init__(self, repo: StatusRepository, uow: UnitOfWorkFactory[StatusUnitOfWork]) -> None:
        self._repo, self._uow = repo, uow

    async def _readable_tracker(self, caller: Principal, tracker_id: uuid.UUID) -> None:
        clients = await self._repo.tracker_clients([tracker_id])
        if tracker_id not in clients:
            raise NotFound("tracker", str(tracker_id))
        require_read(caller, clients[tracker_id], "tracker", tracker_id)

    async def get_status(self, caller: Principal, tracker_id: uuid.UUID) -> CurrentStatus:
        found = await self._repo.current([tracker_id])
        status = found.get(tracker_id)
        if status is None:
            raise NotFound("tracker", str(tracker_id))
        require_read(caller, status.client_id, "tracker", tracker_id)
        return status

    async def batch_get_statuses(
        self, caller: Principal, tracker_ids: Sequence[uuid.UUID]
    ) -> list[CurrentStatus]:
        """All or nothing (AIP-231): one missing or hidden tracker is NOT_FOUND."""
        if not tracker_ids:
            raise InvalidArgument("tracker_ids", "at least one")
        if len(tracker_ids) > MAX_BATCH_STATUSES:
            raise InvalidArgument("tracker_ids", f"at most {MAX_BATCH_STATUSES}")
        found = await self._repo.current(list(dict.fromkeys(tracker_ids)))
        out = []
        for tid in tracker_ids:
            status = found.get(tid)
            if status is None:
                raise NotFound("tracker", str(tid))
            require_read(caller, status.client_id, "tracker", tid)
            out.append(status)
        return out

    async def _filter(self, caller: Principal, q: HistoryQuery) -> HistoryFilter:
        check_time_range(q.start_time, q.end_time)
        if q.tracker_id is not None:
            await self._readable_tracker(caller, q.tracker_id)
        return HistoryFilter(q.tracker_id, q.start_time, q.end_time, caller.readable_clients())

    async def list_status_history(
        self, caller: Principal, q: HistoryQuery, page: PageRequest
    ) -> Page[TrackerStatusChange]:
        return await self._repo.status_history(await self._filter(caller, q), page)

    async def list_location_history(
        self,
        caller: Principal,
        q: HistoryQuery,
        granularity: Granularity,
        min_confidence: int,
        page: PageRequest,
    ) -> Page[LocationPoint]:
        if min_confidence == 0:
            min_confidence = DEFAULT_MIN_CONFIDENCE
        if min_confidence not in CONFIDENCE_LEVELS:
            raise InvalidArgument(
                "min_confidence", f"must be 1, 2 or 3 (0: the default, {DEFAULT_MIN_CONFIDENCE})"
            )
        f = await self._filter(caller, q)
        return await self._repo.location_history(f, granularity, min_confidence, page)

    async def get_status_rule(self, caller: Principal, run_id: uuid.UUID) -> StatusRule:
        async with self._uow() as uow:
            run = await uow.production_runs.get(run_id)
        require_read(caller, run.client_id, run.KIND, run_id)
        return await self._repo.status_rule(run_id)


class StatusRuleUpdates:
    """Sets a production run's status rule (and asks for its history to be rebuilt)."""

    def __init__(self, repo: StatusRepository, uow: UnitOfWorkFactory[StatusUnitOfWork]) -> None:
        self._repo, self._uow = repo, uow

    async def set_status_rule(
        self, caller: Principal, run_id: uuid.UUID, rule: StatusRule, reevaluate: bool = False
    ) -> StatusRule:
        """Applies to reports processed from now on; with ``reevaluate`` the worker also
        rebuilds the run's trackers' status histories under it (and the current geofences)."""
        await self._managed_run(caller, run_id)
        await self._repo.set_status_rule(run_id, rule)
        if reevaluate:
            await self._repo.reevaluate_run(run_id)
        return rule

    async def update_status_rule(
        self,
        caller: Principal,
        run_id: uuid.UUID,
        changes: Mapping[str, Any],
        reevaluate: bool = False,
    ) -> StatusRule:
        """Changes only the named fields of the run's rule in force (an update mask); the
        result must be a valid rule as a whole."""
        await self._managed_run(caller, run_id)
        rule = dataclasses.replace(await self._repo.status_rule(run_id), **changes)
        await self._repo.set_status_rule(run_id, rule)
        if reevaluate:
            await self._repo.reevaluate_run(run_id)
        return rule

    async def _managed_run(self, caller: Principal, run_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            run = await uow.production_runs.get(run_id)
        require_manage(caller, run.client_id, run.KIND, run_id)
