"""Processing new reports: a worker claims trackers with new reports in batches, gives each
new report its nearest city, re-rolls the hourly and daily buckets they touch and
re-evaluates the trackers' statuses, all in one transaction per batch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from domain.ports import (
    Evaluation,
    Geocoder,
    ProcessingQueue,
    ProcessingUnitOfWorkFactory,
)
from domain.status import ReportKey, replay, resume_point


@dataclass(frozen=True, slots=True)
class BatchSummary:
    claimed: int
    trackers: int
    geocoded: int
    buckets: int
    changes: int
    oldest_enqueue_time: datetime | None


class ProcessNewReports:
    """One batch. Several workers may run it at once: claims are leased per tracker, and a
    tracker is locked while it is processed, so no work is done twice and none is lost."""

    def __init__(
        self,
        queue: ProcessingQueue,
        uow: ProcessingUnitOfWorkFactory,
        geocoder: Geocoder,
        batch_size: int = 1000,
        lease_s: float = 120.0,
    ) -> None:
        self._queue, self._uow, self._geocoder = queue, uow, geocoder
        self._batch_size, self._lease_s = batch_size, lease_s

    async def __call__(self) -> BatchSummary:
        token = uuid.uuid4()
        claims = await self._queue.claim(token, self._batch_size, self._lease_s)
        if not claims:
            return BatchSummary(0, 0, 0, 0, 0, None)
        async with self._uow() as uow:
            mine = await uow.lock(token, claims)
            todo = await uow.ungeocoded(mine)
            found = await self._geocoder.nearest([p for _, _, p in todo])
            await uow.set_nearest_cities(
                [(t, k, n.city.geonameid) for (t, k, _), n in zip(todo, found, strict=True) if n]
            )
            buckets = await uow.reroll(mine)
            since = {c.tracker_id: c.since for c in mine}
            inputs = await uow.status_inputs(mine)
            resumes = {
                i.tracker_id: resume_point(
                    since[i.tracker_id], i.checkpoint, i.last_change_before_since
                )
                for i in inputs
            }
            starts: dict[uuid.UUID, ReportKey | None] = {t: r.after for t, r in resumes.items()}
            readings = await uow.readings(starts)
            evaluations = []
            for i in inputs:
                rs = readings.get(i.tracker_id, [])
                state, changes = replay(resumes[i.tracker_id].state, rs, i.rule)
                evaluations.append(
                    Evaluation(
                        i.tracker_id, resumes[i.tracker_id], state, changes, rs[-1] if rs else None
                    )
                )
            await uow.save_statuses(evaluations)
            await uow.complete(token, done=mine, claimed=claims)
            await uow.commit()
        return BatchSummary(
            claimed=len(claims),
            trackers=len(mine),
            geocoded=sum(1 for n in found if n),
            buckets=buckets,
            changes=sum(len(e.changes) for e in evaluations),
            oldest_enqueue_time=min(c.enqueue_time for c in claims),
        )
