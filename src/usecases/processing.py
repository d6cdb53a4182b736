"""Processing new reports: a worker claims trackers with new reports in batches, gives each
new report its nearest city, re-rolls the hourly and daily buckets they touch and
re-evaluates the trackers' statuses, all in one transaction per batch.

Failure isolation (issue 10): a batch that fails is split in halves, each retried in its own
transaction, down to the single tracker that fails on its own; that one is quarantined with
its reason and retried with backoff, and the rest of the batch is processed. A batch that
cannot go on at all (the database is unreachable, the worker is stopped) hands its claims back
at once instead of leaving them leased (issue 13)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.access import Principal, require_admin
from domain.errors import DependencyUnavailable, NotFound
from domain.pagination import Page, PageRequest
from domain.ports.processing import (
    Claim,
    Geocoder,
    ProcessingQueue,
    ProcessingUnitOfWork,
    ProcessingUnitOfWorkFactory,
)
from domain.processing import ProcessingBacklog, QuarantinedTracker, RetryPolicy, failure_reason
from domain.status import resume_point
from domain.status_batch import replay_columns

log = logging.getLogger("tracker.processing")

# How long a hand-back may take before the lease is left to expire instead.
HAND_BACK_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class BatchSummary:
    claimed: int
    trackers: int
    geocoded: int
    buckets: int
    changes: int
    oldest_enqueue_time: datetime | None
    quarantined: int = 0  # trackers that failed on their own in this batch
    released: int = 0  # trackers that left quarantine (processed fine on a retry)
    splits: int = 0  # failed transactions that were split to isolate a failure

    def __add__(self, other: BatchSummary) -> BatchSummary:
        times = [t for t in (self.oldest_enqueue_time, other.oldest_enqueue_time) if t]
        return BatchSummary(
            self.claimed + other.claimed,
            self.trackers + other.trackers,
            self.geocoded + other.geocoded,
            self.buckets + other.buckets,
            self.changes + other.changes,
            min(times, default=None),
            self.quarantined + other.quarantined,
            self.released + other.released,
            self.splits + other.splits,
        )


_NOTHING = BatchSummary(0, 0, 0, 0, 0, None)


class WorkerMetrics(Protocol):
    """What the worker reports about its work (Prometheus in production)."""

    def batch(self, summary: BatchSummary, seconds: float) -> None:
        """One batch processed (``claimed`` > 0) in ``seconds``."""
        ...

    def backlog(self, backlog: ProcessingBacklog) -> None:
        """The processing queue as last read (the lag is measured from now)."""
        ...

    def error(self, kind: str) -> None:
        """A failed batch: ``unavailable`` (the database) or ``error`` (a defect)."""
        ...


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
        retry: RetryPolicy | None = None,
    ) -> None:
        self._queue, self._uow, self._geocoder = queue, uow, geocoder
        self._batch_size, self._lease_s = batch_size, lease_s
        self._retry = retry or RetryPolicy()

    async def __call__(self) -> BatchSummary:
        token = uuid.uuid4()
        claims = await self._queue.claim(token, self._batch_size, self._lease_s)
        if not claims:
            return _NOTHING
        try:
            # Quarantined trackers on their retry go one by one: they failed before, and
            # must not make the fresh batch split again.
            fresh = [c for c in claims if not c.attempts]
            total = await self._isolated(token, fresh) if fresh else _NOTHING
            for c in claims:
                if c.attempts:
                    total += await self._isolated(token, [c])
        except BaseException:
            await self._hand_back(token)
            raise
        return BatchSummary(
            len(claims),
            total.trackers,
            total.geocoded,
            total.buckets,
            total.changes,
            min(c.enqueue_time for c in claims),
            total.quarantined,
            total.released,
            total.splits,
        )

    async def _hand_back(self, token: uuid.UUID) -> None:
        """Best effort: if even this fails, the lease runs out as before."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._queue.release(token), HAND_BACK_TIMEOUT_S)

    async def _isolated(self, token: uuid.UUID, claims: Sequence[Claim]) -> BatchSummary:
        try:
            return await self._batch(token, claims)
        except DependencyUnavailable:
            raise
        except Exception as exc:
            if len(claims) == 1:
                claim = claims[0]
                reason = failure_reason(exc)
                log.warning(
                    "tracker quarantined",
                    exc_info=True,
                    extra={
                        "tracker_id": str(claim.tracker_id),
                        "attempts": claim.attempts + 1,
                        "reason": reason,
                    },
                )
                await self._queue.quarantine(
                    token, claim.tracker_id, reason, self._retry.delay_s(claim.attempts + 1)
                )
                return BatchSummary(0, 0, 0, 0, 0, None, quarantined=1)
            log.info(
                "batch failed, splitting it to isolate the failure",
                extra={"trackers": len(claims), "error": failure_reason(exc)},
            )
            mid = len(claims) // 2
            first = await self._isolated(token, claims[:mid])
            second = await self._isolated(token, claims[mid:])
            return first + second + BatchSummary(0, 0, 0, 0, 0, None, splits=1)

    async def _batch(self, token: uuid.UUID, claims: Sequence[Claim]) -> BatchSummary:
        """One transaction over ``claims``: cities, roll-ups, statuses, dequeue."""
        async with self._uow() as uow:
            mine = await uow.lock(token, claims)
            todo = await uow.ungeocoded(mine)
            found = await self._geocoder.nearest([p for _, _, p in todo])
            await uow.set_nearest_cities(
                [(t, k, n.city.geonameid) for (t, k, _), n in zip(todo, found, strict=True) if n]
            )
            buckets = await uow.reroll(mine)
            changes = await evaluate_statuses(uow, mine)
            await uow.complete(token, done=mine, claimed=claims)
            await uow.commit()
        return BatchSummary(
            claimed=len(claims),
            trackers=len(mine),
            geocoded=sum(1 for n in found if n),
            buckets=buckets,
            changes=changes,
            oldest_enqueue_time=None,
            released=sum(1 for c in mine if c.attempts),
        )


async def evaluate_statuses(
    uow: ProcessingUnitOfWork,
    claims: Sequence[Claim],
    mark: Callable[[str], None] | None = None,
    stats: dict[str, int] | None = None,
) -> int:
    """The status step of a batch of locked claims, column-wise end to end: the starts as
    columns (the few that need ``domain.status.resume_point`` as objects), the readings,
    the bulk replay and the save; returns the number of status changes. ``mark`` (if
    given) is called after each phase with its name (benchmarks time them)."""
    done = mark or (lambda _: None)
    state = await uow.status_state(claims)
    general = state.unresolved()
    if general:
        by_id = {c.tracker_id: c for c in claims}
        place = {state.trackers[i]: i for i in general}
        for i in await uow.status_inputs([by_id[state.trackers[i]] for i in general]):
            r = resume_point(by_id[i.tracker_id].since, i.checkpoint, i.last_change_before_since)
            state.set_general(place[i.tracker_id], r.after, r.replaces_history, r.state, i.rule)
    done("inputs")
    columns = await uow.readings_after(state)
    done("readings")
    result = replay_columns(state, columns, stats)
    done("replay")
    await uow.save_results(state, columns, result)
    done("save")
    return result.change_count


class ProcessingQueries:
    """The administrator's view of processing: the backlog and the quarantine."""

    def __init__(self, queue: ProcessingQueue) -> None:
        self._queue = queue

    async def backlog(self, caller: Principal) -> ProcessingBacklog:
        require_admin(caller, "reading the processing queue")
        return await self._queue.backlog()

    async def quarantined(self, caller: Principal, page: PageRequest) -> Page[QuarantinedTracker]:
        require_admin(caller, "reading the processing quarantine")
        return await self._queue.quarantined(page)

    async def retry_now(self, caller: Principal, tracker_id: uuid.UUID) -> None:
        require_admin(caller, "retrying a quarantined tracker")
        if not await self._queue.retry_now(tracker_id):
            raise NotFound("quarantined tracker", str(tracker_id))
