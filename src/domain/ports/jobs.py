"""Ports of the bulk-jobs capability: jobs, their batches, items and failures."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from domain.jobs import BatchStatus, ClaimedBatch, Job, JobFailure, JobItem, JobStage, JobStatus
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.ports.keys import TagKeyRepository
from domain.ports.setup import ClientRepository, ProductionRunRepository, TrackerRepository


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Jobs of these clients (None: every client), newest first."""

    client_ids: frozenset[uuid.UUID] | None = None


class JobRepository(Protocol):
    async def add(
        self,
        job: Job,
        batches: Sequence[tuple[int, list[JobItem]]],
        rejected: Sequence[JobFailure],
    ) -> None:
        """Store a new job (RUNNING, claimable from its ``create_time``), its batches
        (PENDING) with their items, and the rows rejected while reading its file."""
        ...

    async def get(self, job_id: uuid.UUID, *, lock: bool = False) -> Job:
        """A job with its progress summed from its batches; NotFound("job", id). ``lock``:
        hold it against batches being applied until the transaction ends."""
        ...

    async def list_jobs(self, filter: JobFilter, page: PageRequest) -> Page[Job]: ...

    async def set_status(
        self, job_id: uuid.UUID, status: JobStatus, stage: JobStage, now: datetime
    ) -> None: ...

    async def cancel_open_batches(self, job_id: uuid.UUID, now: datetime) -> int:
        """Every PENDING or RUNNING batch of the job becomes CANCELLED; how many."""
        ...

    async def requeue_failures(self, job_id: uuid.UUID, batch_size: int, now: datetime) -> int:
        """The job's retryable failures not yet re-run, as new PENDING batches (in line
        order) with their items; the failures are marked re-run. How many items."""
        ...

    async def failures(self, job_id: uuid.UUID, page: PageRequest) -> Page[JobFailure]:
        """Failures not re-run since, by line."""
        ...

    async def claim(self, owner: uuid.UUID, lease: timedelta, now: datetime) -> ClaimedBatch | None:
        """The next claimable batch (PENDING, or RUNNING with its lease run out) of a
        RUNNING job whose throttle lets it, taken with SKIP LOCKED: RUNNING under ``owner``
        until ``now + lease``; the job's next batch waits for the throttle."""
        ...

    async def hold(self, job_id: uuid.UUID, seq: int, owner: uuid.UUID) -> Job | None:
        """Lock the batch for applying it: the job, if the batch is still RUNNING under
        ``owner`` (else None: the lease was lost, and someone else has it or did it)."""
        ...

    async def complete(
        self,
        job_id: uuid.UUID,
        seq: int,
        succeeded: int,
        failures: Sequence[JobFailure],
        now: datetime,
    ) -> None:
        """Mark a held batch DONE with its counts, and keep its failures."""
        ...

    async def release(
        self, job_id: uuid.UUID, seq: int, status: BatchStatus, now: datetime
    ) -> None:
        """Give a held batch back unapplied: PENDING (job paused) or CANCELLED."""
        ...

    async def finish(self, now: datetime) -> list[uuid.UUID]:
        """RUNNING jobs with no open batch left become SUCCEEDED (stage DONE); their ids."""
        ...

    async def run_tracker_ids(self, run_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
        """The trackers of a run (at most ``limit``), by id."""
        ...

    async def reevaluate(self, tracker_ids: list[uuid.UUID], since: datetime) -> set[uuid.UUID]:
        """Queue these trackers for processing, their status replayed from ``since``; the
        ids of those that exist."""
        ...


class JobsUnitOfWork(Transaction, Protocol):
    """A transaction over jobs and what their batches change."""

    clients: ClientRepository
    production_runs: ProductionRunRepository
    trackers: TrackerRepository
    tag_keys: TagKeyRepository
    jobs: JobRepository
