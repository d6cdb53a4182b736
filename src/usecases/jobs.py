"""Bulk jobs: start one from a file (or a run), control it, read its progress and failures,
and, in the worker, apply one claimed batch. A batch's effects and its DONE commit together."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.access import Principal, require_admin, require_manage, require_read
from domain.errors import FailedPrecondition, InvalidArgument, NotFound
from domain.jobs import (
    VALIDATION_BATCH,
    BatchStatus,
    ClaimedBatch,
    ItemOutcome,
    Job,
    JobFailure,
    JobItem,
    JobKind,
    JobSpec,
    JobStage,
    JobStatus,
    ParsedFile,
    batches,
    private_key_bytes,
    read_file,
)
from domain.keys import check_private_key
from domain.limits import MAX_JOB_ITEMS
from domain.model import AdvertisementKey, ProductionRun, SealedSecret, Tracker
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.jobs import JobFilter, JobsUnitOfWork
from domain.ports.keys import KeyPairFactory, SecretSealer

KIND = "job"


def _require_manage_job(caller: Principal, job: Job) -> None:
    require_read(caller, job.client_id, KIND, job.id)
    if job.kind is JobKind.ALLOCATE_TAGS:
        require_admin(caller, "managing a tag allocation job")
    require_manage(caller, job.client_id, KIND, job.id)


@dataclass(frozen=True, slots=True)
class StartJobRequest:
    kind: JobKind
    target_id: uuid.UUID
    """The production run (imports, re-evaluation) or the client (allocation)."""
    file: bytes = b""
    items_per_second: float | None = None
    batch_size: int | None = None


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """Throttle and batch size of a job whose caller does not set them (settings)."""

    items_per_second: float
    batch_size: int


class StartJob:
    """Check the caller and the target, read the file into items (private keys sealed at
    once; rows that do not parse kept as failures), cut them into batches and store it all
    in one transaction: the job exists with all its batches, or not at all."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[JobsUnitOfWork],
        factory: KeyPairFactory,
        sealer: SecretSealer,
        clock: Clock,
        defaults: JobDefaults,
    ) -> None:
        self._uow, self._factory, self._sealer = uow, factory, sealer
        self._clock, self._defaults = clock, defaults

    async def __call__(self, caller: Principal, request: StartJobRequest) -> Job:
        kind = request.kind
        async with self._uow() as uow:
            if kind is JobKind.ALLOCATE_TAGS:
                require_admin(caller, "allocating tags")
                client_id = (await uow.clients.get(request.target_id)).id
            else:
                run = await uow.production_runs.get(request.target_id)
                require_manage(caller, run.client_id, run.KIND, run.id)
                client_id = run.client_id
        spec = JobSpec(
            kind=kind,
            client_id=client_id,
            target_id=request.target_id,
            items_per_second=request.items_per_second or self._defaults.items_per_second,
            batch_size=request.batch_size or self._defaults.batch_size,
        )
        if kind.needs_file:
            parsed = await asyncio.to_thread(self._read, kind, request.file)
        elif request.file:
            raise InvalidArgument("file", f"{kind.value} takes no file")
        else:
            parsed = ParsedFile([], [])
        now = self._clock.now()
        async with self._uow() as uow:
            if kind is JobKind.REEVALUATE_RUN:
                ids = await uow.jobs.run_tracker_ids(spec.target_id, MAX_JOB_ITEMS + 1)
                if len(ids) > MAX_JOB_ITEMS:
                    raise FailedPrecondition(
                        f"the run has more than {MAX_JOB_ITEMS} trackers",
                        subject="production_run_id",
                    )
                parsed = ParsedFile([JobItem(n, str(t)) for n, t in enumerate(ids, 1)], [])
            job = Job(
                id=uuid.uuid4(),
                kind=kind,
                client_id=spec.client_id,
                target_id=spec.target_id,
                status=JobStatus.RUNNING,
                stage=JobStage.PROCESSING,
                items_per_second=spec.items_per_second,
                batch_size=spec.batch_size,
                total_items=len(parsed.items) + len(parsed.rejected),
                create_time=now,
                update_time=now,
                creator=str(caller.user_id),
            )
            await uow.jobs.add(job, batches(parsed.items, spec.batch_size), parsed.rejected)
            await uow.commit()
            return await self._reread(job.id)

    async def _reread(self, job_id: uuid.UUID) -> Job:
        async with self._uow() as uow:
            return await uow.jobs.get(job_id)

    def _read(self, kind: JobKind, data: bytes) -> ParsedFile:
        if kind is not JobKind.IMPORT_EXTERNAL_TRACKERS:
            return read_file(data, kind.column)
        raw = read_file(data, kind.column, parse=None)
        # a rejected row's text may be a private key: it is never kept or shown
        rejected = [dataclasses.replace(f, label="") for f in raw.rejected]
        items: list[JobItem] = []
        seen: dict[str, int] = {}
        for item in raw.items:
            try:
                private = private_key_bytes(item.label)
                check_private_key(private)
                public = self._factory.public_of(private)
            except InvalidArgument as err:
                # the text of a would-be private key is never kept or shown
                rejected.append(JobFailure(item.line, "", err.violations[0].reason, False, 0))
                continue
            label = base64.b64encode(public.value).decode()
            if label in seen:
                rejected.append(
                    JobFailure(item.line, label, f"repeats line {seen[label]}", False, 0)
                )
                continue
            seen[label] = item.line
            sealed = self._sealer.seal(private, public.hashed)
            items.append(JobItem(item.line, label, sealed.kek_id, sealed.ciphertext))
        return ParsedFile(items, rejected)


class ControlJob:
    """Pause, resume or cancel a job. The job row is held while it changes, so a batch being
    applied finishes first, and any batch applied after sees the new status: once PauseJob
    or CancelJob returns, no further item is applied until ResumeJob."""

    def __init__(self, uow: UnitOfWorkFactory[JobsUnitOfWork], clock: Clock, action: str) -> None:
        self._uow, self._clock, self._action = uow, clock, action

    async def __call__(self, caller: Principal, job_id: uuid.UUID) -> Job:
        now = self._clock.now()
        async with self._uow() as uow:
            job = await uow.jobs.get(job_id, lock=True)
            _require_manage_job(caller, job)
            job.check_can(self._action)
            if self._action == "pause":
                await uow.jobs.set_status(job_id, JobStatus.PAUSED, job.stage, now)
            elif self._action == "resume":
                await uow.jobs.set_status(job_id, JobStatus.RUNNING, job.stage, now)
            else:
                await uow.jobs.cancel_open_batches(job_id, now)
                await uow.jobs.set_status(job_id, JobStatus.CANCELLED, JobStage.DONE, now)
            await uow.commit()
        async with self._uow() as uow:
            return await uow.jobs.get(job_id)


class RetryJob:
    """Run a finished job again over its retryable failures only (tags not allocated yet,
    runs that did not exist yet...); rows of the file that could not be read stay failed."""

    def __init__(self, uow: UnitOfWorkFactory[JobsUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, job_id: uuid.UUID) -> Job:
        now = self._clock.now()
        async with self._uow() as uow:
            job = await uow.jobs.get(job_id, lock=True)
            _require_manage_job(caller, job)
            job.check_can("retry")
            if not await uow.jobs.requeue_failures(job_id, job.batch_size, now):
                raise FailedPrecondition(
                    f"job {job_id} has no retryable failures", subject=str(job_id)
                )
            await uow.jobs.set_status(job_id, JobStatus.RUNNING, JobStage.RETRYING, now)
            await uow.commit()
        async with self._uow() as uow:
            return await uow.jobs.get(job_id)


class JobQueries:
    """Jobs and their failures as the caller may see them (a job of another client is
    NotFound, like one that does not exist)."""

    def __init__(self, uow: UnitOfWorkFactory[JobsUnitOfWork]) -> None:
        self._uow = uow

    async def get(self, caller: Principal, job_id: uuid.UUID) -> Job:
        async with self._uow() as uow:
            job = await uow.jobs.get(job_id)
        require_read(caller, job.client_id, KIND, job_id)
        return job

    async def list(
        self, caller: Principal, client_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Job]:
        clients = caller.readable_clients()
        if client_id is not None:
            if clients is not None and client_id not in clients:
                return Page([], None)
            clients = frozenset({client_id})
        async with self._uow() as uow:
            return await uow.jobs.list_jobs(JobFilter(clients), page)

    async def failures(
        self, caller: Principal, job_id: uuid.UUID, page: PageRequest
    ) -> Page[JobFailure]:
        async with self._uow() as uow:
            job = await uow.jobs.get(job_id)
            require_read(caller, job.client_id, KIND, job_id)
            return await uow.jobs.failures(job_id, page)

    async def watch(
        self, caller: Principal, job_id: uuid.UUID, interval: timedelta
    ) -> AsyncIterator[Job]:
        """The job now, then each time its progress changes, until it is SUCCEEDED or
        CANCELLED (checked first, so a caller who may not see it gets NotFound at once)."""
        job = await self.get(caller, job_id)
        return self._changes(job, interval)

    async def _changes(self, job: Job, interval: timedelta) -> AsyncIterator[Job]:
        yield job
        last = job
        while not last.status.final:
            await asyncio.sleep(interval.total_seconds())
            async with self._uow() as uow:
                job = await uow.jobs.get(job.id)
            if _progress(job) != _progress(last):
                yield job
            last = job


def _progress(job: Job) -> tuple[object, ...]:
    return (
        job.status,
        job.stage,
        job.succeeded_items,
        job.failed_items,
        job.cancelled_items,
        job.pending_items,
        job.batches_running,
    )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One turn of the worker: which batch, and what became of it."""

    job_id: uuid.UUID | None = None
    seq: int = 0
    succeeded: int = 0
    failed: int = 0
    applied: bool = False
    """False: nothing claimable, or the batch was given back (job paused or cancelled, or
    the lease lost to another worker)."""
    finished: tuple[uuid.UUID, ...] = ()


class RunJobBatch:
    """The worker's turn: claim one batch (with a lease), then in ONE transaction hold it,
    apply its items, keep the failures and mark it DONE. A worker that dies anywhere leaves
    either nothing of the batch (its lease runs out, another worker takes it) or all of it."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[JobsUnitOfWork],
        clock: Clock,
        lease: timedelta,
        owner: uuid.UUID | None = None,
    ) -> None:
        self._uow, self._clock, self._lease = uow, clock, lease
        self.owner = owner or uuid.uuid4()

    async def __call__(self) -> BatchResult:
        async with self._uow() as uow:
            claimed = await uow.jobs.claim(self.owner, self._lease, self._clock.now())
            await uow.commit()
        if claimed is None:
            return BatchResult(finished=tuple(await self._finish()))
        async with self._uow() as uow:
            job = await uow.jobs.hold(claimed.job.id, claimed.seq, self.owner)
            if job is None:
                return BatchResult(claimed.job.id, claimed.seq)
            now = self._clock.now()
            if job.status is not JobStatus.RUNNING:
                back = (
                    BatchStatus.PENDING if job.status is JobStatus.PAUSED else BatchStatus.CANCELLED
                )
                await uow.jobs.release(job.id, claimed.seq, back, now)
                await uow.commit()
                return BatchResult(job.id, claimed.seq)
            outcome = await _APPLY[job.kind](uow, job, claimed, now)
            await uow.jobs.complete(job.id, claimed.seq, outcome.succeeded, outcome.failures, now)
            await uow.commit()
        return BatchResult(
            job.id,
            claimed.seq,
            outcome.succeeded,
            len(outcome.failures),
            applied=True,
            finished=tuple(await self._finish()),
        )

    async def _finish(self) -> list[uuid.UUID]:
        async with self._uow() as uow:
            done = await uow.jobs.finish(self._clock.now())
            await uow.commit()
        return done


# -- what a batch of each kind does (inside the batch's transaction) ------------------------

Apply = Callable[[JobsUnitOfWork, Job, ClaimedBatch, datetime], Awaitable[ItemOutcome]]


def _fail(batch: ClaimedBatch, item: JobItem, reason: str, retryable: bool) -> JobFailure:
    return JobFailure(item.line, item.label, reason, retryable, batch.seq)


async def _run_or_none(uow: JobsUnitOfWork, run_id: uuid.UUID) -> ProductionRun | None:
    try:
        return await uow.production_runs.get(run_id)
    except NotFound:
        return None


def _gone(batch: ClaimedBatch, what: str) -> ItemOutcome:
    return ItemOutcome(
        0, [_fail(batch, i, f"the {what} no longer exists", False) for i in batch.items]
    )


async def _import_trackers(
    uow: JobsUnitOfWork, job: Job, batch: ClaimedBatch, now: datetime
) -> ItemOutcome:
    run = await _run_or_none(uow, job.target_id)
    if run is None:
        return _gone(batch, "production run")
    keys = await uow.tag_keys.by_macs([i.label for i in batch.items])
    existing = await uow.trackers.by_hashed_keys(
        [k.hashed_advertisement_key for k in keys.values()]
    )
    new: list[Tracker] = []
    failures: list[JobFailure] = []
    for item in batch.items:
        key = keys.get(item.label)
        if key is None or key.client_id != run.client_id:
            failures.append(
                _fail(batch, item, "no tag with this MAC is allocated to the run's client", True)
            )
        elif key.hashed_advertisement_key in existing:
            failures.append(_fail(batch, item, "already a tracker", False))
        else:
            new.append(
                Tracker.in_run(
                    run, key.advertisement_key, now, sealed_private_key=key.sealed_private_key
                )
            )
    if new:
        await uow.trackers.add_many(new)
    return ItemOutcome(len(new), failures)


async def _import_external(
    uow: JobsUnitOfWork, job: Job, batch: ClaimedBatch, now: datetime
) -> ItemOutcome:
    run = await _run_or_none(uow, job.target_id)
    if run is None:
        return _gone(batch, "production run")
    publics = {i.line: AdvertisementKey(base64.b64decode(i.label)) for i in batch.items}
    existing = await uow.trackers.by_hashed_keys([p.hashed for p in publics.values()])
    new: list[Tracker] = []
    failures: list[JobFailure] = []
    for item in batch.items:
        public = publics[item.line]
        if public.hashed in existing:
            failures.append(_fail(batch, item, "already a tracker", False))
            continue
        sealed = SealedSecret(item.secret_kek_id, item.secret)
        new.append(Tracker.in_run(run, public, now, sealed_private_key=sealed))
    if new:
        await uow.trackers.add_many(new)
    return ItemOutcome(len(new), failures)


async def _allocate_tags(
    uow: JobsUnitOfWork, job: Job, batch: ClaimedBatch, now: datetime
) -> ItemOutcome:
    try:
        await uow.clients.get(job.target_id)
    except NotFound:
        return _gone(batch, "client")
    keys = await uow.tag_keys.by_macs([i.label for i in batch.items])
    chosen: list[uuid.UUID] = []
    failures: list[JobFailure] = []
    for item in batch.items:
        key = keys.get(item.label)
        if key is None:
            failures.append(_fail(batch, item, "no tag with this MAC", True))
        elif key.client_id not in (None, job.target_id):
            failures.append(_fail(batch, item, "allocated to another client", False))
        else:
            chosen.append(key.id)
    if chosen:
        await uow.tag_keys.allocate(chosen, job.target_id)
    return ItemOutcome(len(chosen), failures)


async def _reevaluate(
    uow: JobsUnitOfWork, job: Job, batch: ClaimedBatch, now: datetime
) -> ItemOutcome:
    run = await _run_or_none(uow, job.target_id)
    if run is None:
        return _gone(batch, "production run")
    ids = [uuid.UUID(i.label) for i in batch.items]
    queued = await uow.jobs.reevaluate(ids, run.start_time)
    failures = [
        _fail(batch, i, "the tracker no longer exists", False)
        for i, t in zip(batch.items, ids, strict=True)
        if t not in queued
    ]
    return ItemOutcome(len(queued), failures)


_APPLY: dict[JobKind, Apply] = {
    JobKind.IMPORT_TRACKERS: _import_trackers,
    JobKind.IMPORT_EXTERNAL_TRACKERS: _import_external,
    JobKind.ALLOCATE_TAGS: _allocate_tags,
    JobKind.REEVALUATE_RUN: _reevaluate,
}


@dataclass(frozen=True, slots=True)
class JobUseCases:
    start_job: StartJob
    pause_job: ControlJob
    resume_job: ControlJob
    cancel_job: ControlJob
    retry_job: RetryJob
    queries: JobQueries


__all__ = [
    "VALIDATION_BATCH",
    "BatchResult",
    "ControlJob",
    "JobDefaults",
    "JobQueries",
    "JobUseCases",
    "RetryJob",
    "RunJobBatch",
    "StartJob",
    "StartJobRequest",
]
