"""Fake of the bulk-jobs port (``domain.ports.jobs``): jobs, batches, items and failures in
``FakeTables``; progress summed from the batches as the adapter does. One unit of work at a
time sees the tables, so claims need no locks here (the contract suite runs the same
scenarios over PostgreSQL, where SKIP LOCKED and the job lock do that work)."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.errors import NotFound
from domain.jobs import (
    BatchStatus,
    ClaimedBatch,
    Job,
    JobFailure,
    JobItem,
    JobStage,
    JobStatus,
    batches,
    throttle_pause,
)
from domain.pagination import Page, PageRequest, cursor_id, cursor_int32, cursor_parts, cursor_time
from domain.ports.jobs import JobFilter

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork

_OPEN = (BatchStatus.PENDING, BatchStatus.RUNNING)
_inbox_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class StoredJob:
    job: Job  # the row's own fields; counts are summed on read
    next_batch_time: datetime


@dataclass(frozen=True, slots=True)
class StoredBatch:
    status: BatchStatus
    items: int
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    lease_owner: uuid.UUID | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredFailure:
    failure: JobFailure
    retried: bool = False


class FakeJobRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _t(self):  # type: ignore[no-untyped-def]
        return self._uow.tables

    async def add(
        self,
        job: Job,
        batches: Sequence[tuple[int, list[JobItem]]],
        rejected: Sequence[JobFailure],
    ) -> None:
        self._t.jobs[job.id] = StoredJob(job, job.create_time)
        self._add_batches(job.id, batches)
        for f in rejected:
            self._t.job_failures[(job.id, f.line, f.batch)] = StoredFailure(f)

    def _add_batches(self, job_id: uuid.UUID, rows: Sequence[tuple[int, list[JobItem]]]) -> None:
        for seq, items in rows:
            self._t.job_batches[(job_id, seq)] = StoredBatch(BatchStatus.PENDING, len(items))
            for i in items:
                self._t.job_items[(job_id, seq, i.line)] = i

    def _batches_of(self, job_id: uuid.UUID) -> list[tuple[int, StoredBatch]]:
        return sorted((k[1], b) for k, b in self._t.job_batches.items() if k[0] == job_id)

    def _read(self, job_id: uuid.UUID) -> Job:
        stored = self._t.jobs.get(job_id)
        if stored is None:
            raise NotFound("job", str(job_id))
        bs = [b for _, b in self._batches_of(job_id)]
        failed = sum(1 for k, f in self._t.job_failures.items() if k[0] == job_id and not f.retried)
        return dataclasses.replace(
            stored.job,
            succeeded_items=sum(b.succeeded for b in bs),
            failed_items=failed,
            cancelled_items=sum(b.items for b in bs if b.status is BatchStatus.CANCELLED),
            pending_items=sum(b.items for b in bs if b.status in _OPEN),
            batches_total=len(bs),
            batches_done=sum(1 for b in bs if b.status is BatchStatus.DONE),
            batches_running=sum(1 for b in bs if b.status is BatchStatus.RUNNING),
        )

    async def get(self, job_id: uuid.UUID, *, lock: bool = False) -> Job:
        return self._read(job_id)

    async def list_jobs(self, filter: JobFilter, page: PageRequest) -> Page[Job]:
        jobs = [
            s.job
            for s in self._t.jobs.values()
            if filter.client_ids is None or s.job.client_id in filter.client_ids
        ]
        jobs.sort(key=lambda j: (j.create_time, j.id), reverse=True)
        if page.after is not None:
            t, i = cursor_parts(page.after, 2)
            after = (cursor_time(t), cursor_id(i))
            jobs = [j for j in jobs if (j.create_time, j.id) < after]
        out = [self._read(j.id) for j in jobs[: page.size]]
        more = len(jobs) > page.size
        return Page(out, f"{out[-1].create_time.isoformat()}|{out[-1].id}" if more else None)

    def _set(self, job_id: uuid.UUID, **changes: object) -> None:
        stored = self._t.jobs[job_id]
        next_time = changes.pop("next_batch_time", stored.next_batch_time)
        self._t.jobs[job_id] = StoredJob(dataclasses.replace(stored.job, **changes), next_time)  # type: ignore[arg-type]

    async def set_status(
        self, job_id: uuid.UUID, status: JobStatus, stage: JobStage, now: datetime
    ) -> None:
        stored = self._t.jobs[job_id]
        self._set(
            job_id,
            status=status,
            stage=stage,
            update_time=now,
            next_batch_time=min(stored.next_batch_time, now),
        )

    async def cancel_open_batches(self, job_id: uuid.UUID, now: datetime) -> int:
        n = 0
        for seq, b in self._batches_of(job_id):
            if b.status in _OPEN:
                self._t.job_batches[(job_id, seq)] = dataclasses.replace(
                    b, status=BatchStatus.CANCELLED, lease_owner=None, lease_until=None
                )
                n += 1
        return n

    async def requeue_failures(self, job_id: uuid.UUID, batch_size: int, now: datetime) -> int:
        open_ = sorted(
            (k, f)
            for k, f in self._t.job_failures.items()
            if k[0] == job_id and f.failure.retryable and not f.retried
        )
        if not open_:
            return 0
        first = max((seq for seq, _ in self._batches_of(job_id)), default=0) + 1
        items = []
        for (_, line, seq), f in open_:
            kept = self._t.job_items.get((job_id, seq, line))
            items.append(kept if kept is not None else JobItem(line, f.failure.label))
            self._t.job_failures[(job_id, line, seq)] = dataclasses.replace(f, retried=True)
        self._add_batches(job_id, batches(items, batch_size, first))
        stored = self._t.jobs[job_id]
        self._set(job_id, retries=stored.job.retries + 1, update_time=now)
        return len(items)

    async def failures(self, job_id: uuid.UUID, page: PageRequest) -> Page[JobFailure]:
        rows = sorted(
            (f.failure.line, f.failure.batch, f.failure)
            for k, f in self._t.job_failures.items()
            if k[0] == job_id and not f.retried
        )
        if page.after is not None:
            line, seq = cursor_parts(page.after, 2)
            after = (cursor_int32(line), cursor_int32(seq))
            rows = [r for r in rows if (r[0], r[1]) > after]
        out = [r[2] for r in rows[: page.size]]
        more = len(rows) > page.size
        return Page(out, f"{out[-1].line}|{out[-1].batch}" if more else None)

    async def claim(self, owner: uuid.UUID, lease: timedelta, now: datetime) -> ClaimedBatch | None:
        due = sorted(
            (s.next_batch_time, s.job.id)
            for s in self._t.jobs.values()
            if s.job.status is JobStatus.RUNNING and s.next_batch_time <= now
        )
        for _, job_id in due:
            for seq, b in self._batches_of(job_id):
                takeable = b.status is BatchStatus.PENDING or (
                    b.status is BatchStatus.RUNNING
                    and b.lease_until is not None
                    and b.lease_until < now
                )
                if not takeable:
                    continue
                self._t.job_batches[(job_id, seq)] = dataclasses.replace(
                    b,
                    status=BatchStatus.RUNNING,
                    lease_owner=owner,
                    lease_until=now + lease,
                    attempts=b.attempts + 1,
                )
                stored = self._t.jobs[job_id]
                pause = throttle_pause(b.items, stored.job.items_per_second)
                self._set(job_id, next_batch_time=now + pause)
                items = sorted(
                    (i for k, i in self._t.job_items.items() if k[:2] == (job_id, seq)),
                    key=lambda i: i.line,
                )
                return ClaimedBatch(self._read(job_id), seq, owner, items)
        return None

    async def hold(self, job_id: uuid.UUID, seq: int, owner: uuid.UUID) -> Job | None:
        if job_id not in self._t.jobs:
            return None
        b = self._t.job_batches.get((job_id, seq))
        if b is None or b.status is not BatchStatus.RUNNING or b.lease_owner != owner:
            return None
        return self._read(job_id)

    async def complete(
        self,
        job_id: uuid.UUID,
        seq: int,
        succeeded: int,
        failures: Sequence[JobFailure],
        now: datetime,
    ) -> None:
        b = self._t.job_batches[(job_id, seq)]
        self._t.job_batches[(job_id, seq)] = dataclasses.replace(
            b,
            status=BatchStatus.DONE,
            succeeded=succeeded,
            failed=len(failures),
            lease_owner=None,
            lease_until=None,
        )
        for f in failures:
            self._t.job_failures[(job_id, f.line, f.batch)] = StoredFailure(f)

    async def release(
        self, job_id: uuid.UUID, seq: int, status: BatchStatus, now: datetime
    ) -> None:
        b = self._t.job_batches[(job_id, seq)]
        self._t.job_batches[(job_id, seq)] = dataclasses.replace(
            b, status=status, lease_owner=None, lease_until=None
        )

    async def finish(self, now: datetime) -> list[uuid.UUID]:
        done = []
        for job_id, s in list(self._t.jobs.items()):
            if s.job.status is JobStatus.RUNNING and not any(
                b.status in _OPEN for _, b in self._batches_of(job_id)
            ):
                self._set(job_id, status=JobStatus.SUCCEEDED, stage=JobStage.DONE, update_time=now)
                done.append(job_id)
        return done

    async def run_tracker_ids(self, run_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
        return sorted(t.id for t in self._t.trackers.values() if t.production_run_id == run_id)[
            :limit
        ]

    async def reevaluate(self, tracker_ids: list[uuid.UUID], since: datetime) -> set[uuid.UUID]:
        found = {t for t in tracker_ids if t in self._t.trackers}
        for t in sorted(found):
            self._t.processing_inbox[next(_inbox_ids)] = (t, since)
        return found
