"""Bulk jobs in PostgreSQL: batches claimed with a lease under SKIP LOCKED, items written
with COPY, progress summed from the batches.

Locks, always in this order: the job row, then batch rows. Applying a batch holds the job
``FOR KEY SHARE`` (batches of one job run side by side) and its batch ``FOR UPDATE``; pause,
resume, cancel and retry hold the job ``FOR UPDATE``, so they wait for batches being applied
and a batch applied after them sees their status. Claiming takes the job ``FOR NO KEY
UPDATE SKIP LOCKED`` (the throttle: one claim of a job at a time), which batches being
applied do not block.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from domain.errors import NotFound
from domain.jobs import (
    BatchStatus,
    ClaimedBatch,
    Job,
    JobFailure,
    JobItem,
    JobKind,
    JobStage,
    JobStatus,
    batches,
)
from domain.pagination import Page, PageRequest, cursor_id, cursor_int32, cursor_parts, cursor_time
from domain.ports.jobs import JobFilter

_JOB = """
SELECT j.*, coalesce(b.succeeded, 0) AS succeeded_items,
       coalesce(b.cancelled_items, 0) AS cancelled_items,
       coalesce(b.pending_items, 0) AS pending_items, coalesce(b.total, 0) AS batches_total,
       coalesce(b.done, 0) AS batches_done, coalesce(b.running, 0) AS batches_running,
       (SELECT count(*) FROM job_failures f WHERE f.job_id = j.id AND NOT f.retried)
           AS failed_items
FROM jobs j
LEFT JOIN LATERAL (
    SELECT sum(succeeded) AS succeeded,
           sum(items) FILTER (WHERE status = 'CANCELLED') AS cancelled_items,
           sum(items) FILTER (WHERE status IN ('PENDING', 'RUNNING')) AS pending_items,
           count(*) AS total, count(*) FILTER (WHERE status = 'DONE') AS done,
           count(*) FILTER (WHERE status = 'RUNNING') AS running
    FROM job_batches WHERE job_id = j.id) b ON true
"""

_CLAIM = """
WITH c AS (
    SELECT b.job_id, b.seq, b.items, j.items_per_second
    FROM job_batches b JOIN jobs j ON j.id = b.job_id
    WHERE j.status = 'RUNNING' AND j.next_batch_time <= $2
      AND (b.status = 'PENDING' OR (b.status = 'RUNNING' AND b.lease_until < $2))
    ORDER BY j.next_batch_time, j.id, b.seq
    LIMIT 1
    FOR NO KEY UPDATE OF j SKIP LOCKED
    FOR UPDATE OF b SKIP LOCKED),
claimed AS (
    UPDATE job_batches b SET status = 'RUNNING', lease_owner = $1, lease_until = $2 + $3,
           attempts = b.attempts + 1, update_time = $2
    FROM c WHERE b.job_id = c.job_id AND b.seq = c.seq
    RETURNING b.job_id, b.seq, c.items, c.items_per_second)
UPDATE jobs j SET next_batch_time = $2 + make_interval(secs => c.items / c.items_per_second)
FROM claimed c WHERE j.id = c.job_id
RETURNING c.job_id, c.seq
"""


def _job(r: asyncpg.Record) -> Job:
    return Job(
        id=r["id"],
        kind=JobKind(r["kind"]),
        client_id=r["client_id"],
        target_id=r["target_id"],
        status=JobStatus(r["status"]),
        stage=JobStage(r["stage"]),
        items_per_second=r["items_per_second"],
        batch_size=r["batch_size"],
        total_items=r["total_items"],
        succeeded_items=int(r["succeeded_items"]),
        failed_items=int(r["failed_items"]),
        cancelled_items=int(r["cancelled_items"]),
        pending_items=int(r["pending_items"]),
        batches_total=int(r["batches_total"]),
        batches_done=int(r["batches_done"]),
        batches_running=int(r["batches_running"]),
        retries=r["retries"],
        create_time=r["create_time"],
        update_time=r["update_time"],
        creator=r["creator"],
    )


def _failure(r: asyncpg.Record) -> JobFailure:
    return JobFailure(r["line"], r["label"], r["reason"], r["retryable"], r["seq"])


class PostgresJobRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self,
        job: Job,
        batches: Sequence[tuple[int, list[JobItem]]],
        rejected: Sequence[JobFailure],
    ) -> None:
        await self._conn.execute(
            "INSERT INTO jobs (id, kind, client_id, target_id, status, stage, items_per_second,"
            " batch_size, total_items, retries, creator, next_batch_time, create_time,"
            " update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13)",
            job.id,
            job.kind.value,
            job.client_id,
            job.target_id,
            job.status.value,
            job.stage.value,
            job.items_per_second,
            job.batch_size,
            job.total_items,
            job.retries,
            job.creator,
            job.create_time,
            job.update_time,
        )
        await self._add_batches(job.id, batches, job.create_time)
        await self._add_failures(job.id, rejected)

    async def _add_batches(
        self, job_id: uuid.UUID, rows: Sequence[tuple[int, list[JobItem]]], now: datetime
    ) -> None:
        if not rows:
            return
        await self._conn.copy_records_to_table(
            "job_batches",
            records=[(job_id, seq, "PENDING", len(items), now) for seq, items in rows],
            columns=["job_id", "seq", "status", "items", "update_time"],
        )
        await self._conn.copy_records_to_table(
            "job_items",
            records=[
                (job_id, seq, i.line, i.label, i.secret_kek_id, i.secret)
                for seq, items in rows
                for i in items
            ],
            columns=["job_id", "seq", "line", "label", "secret_kek_id", "secret"],
        )

    async def _add_failures(self, job_id: uuid.UUID, failures: Sequence[JobFailure]) -> None:
        if failures:
            await self._conn.copy_records_to_table(
                "job_failures",
                records=[
                    (job_id, f.batch, f.line, f.label, f.reason, f.retryable) for f in failures
                ],
                columns=["job_id", "seq", "line", "label", "reason", "retryable"],
            )

    async def get(self, job_id: uuid.UUID, *, lock: bool = False) -> Job:
        if (
            lock
            and await self._conn.fetchval("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            is None
        ):
            raise NotFound("job", str(job_id))
        row = await self._conn.fetchrow(_JOB + " WHERE j.id = $1", job_id)
        if row is None:
            raise NotFound("job", str(job_id))
        return _job(row)

    async def list_jobs(self, filter: JobFilter, page: PageRequest) -> Page[Job]:
        where: list[str] = ["true"]
        args: list[object] = []
        if filter.client_ids is not None:
            args.append(list(filter.client_ids))
            where.append(f"j.client_id = ANY(${len(args)}::uuid[])")
        if page.after is not None:
            t, i = cursor_parts(page.after, 2)
            args += [cursor_time(t), cursor_id(i)]
            where.append(f"(j.create_time, j.id) < (${len(args) - 1}, ${len(args)})")
        args.append(page.size + 1)
        rows = await self._conn.fetch(
            _JOB + f" WHERE {' AND '.join(where)} ORDER BY j.create_time DESC, j.id DESC"
            f" LIMIT ${len(args)}",
            *args,
        )
        jobs = [_job(r) for r in rows[: page.size]]
        after = None
        if len(rows) > page.size:
            last = jobs[-1]
            after = f"{last.create_time.isoformat()}|{last.id}"
        return Page(jobs, after)

    async def set_status(
        self, job_id: uuid.UUID, status: JobStatus, stage: JobStage, now: datetime
    ) -> None:
        await self._conn.execute(
            "UPDATE jobs SET status = $2, stage = $3, update_time = $4,"
            " next_batch_time = least(next_batch_time, $4) WHERE id = $1",
            job_id,
            status.value,
            stage.value,
            now,
        )

    async def cancel_open_batches(self, job_id: uuid.UUID, now: datetime) -> int:
        result = await self._conn.execute(
            "UPDATE job_batches SET status = 'CANCELLED', lease_owner = NULL, lease_until = NULL,"
            " update_time = $2 WHERE job_id = $1 AND status IN ('PENDING', 'RUNNING')",
            job_id,
            now,
        )
        return int(result.split()[-1])

    async def requeue_failures(self, job_id: uuid.UUID, batch_size: int, now: datetime) -> int:
        rows = await self._conn.fetch(
            "SELECT f.line, f.label, coalesce(i.secret_kek_id, '') AS secret_kek_id,"
            " coalesce(i.secret, ''::bytea) AS secret FROM job_failures f"
            " LEFT JOIN job_items i ON i.job_id = f.job_id AND i.seq = f.seq AND i.line = f.line"
            " WHERE f.job_id = $1 AND f.retryable AND NOT f.retried ORDER BY f.line",
            job_id,
        )
        if not rows:
            return 0
        first = await self._conn.fetchval(
            "SELECT coalesce(max(seq), 0) + 1 FROM job_batches WHERE job_id = $1", job_id
        )
        items = [
            JobItem(r["line"], r["label"], r["secret_kek_id"], bytes(r["secret"])) for r in rows
        ]
        await self._add_batches(job_id, batches(items, batch_size, first), now)
        await self._conn.execute(
            "UPDATE job_failures SET retried = true WHERE job_id = $1 AND retryable"
            " AND NOT retried AND seq < $2",
            job_id,
            first,
        )
        await self._conn.execute(
            "UPDATE jobs SET retries = retries + 1, update_time = $2 WHERE id = $1", job_id, now
        )
        return len(items)

    async def failures(self, job_id: uuid.UUID, page: PageRequest) -> Page[JobFailure]:
        args: list[object] = [job_id]
        where = "job_id = $1 AND NOT retried"
        if page.after is not None:
            line, seq = cursor_parts(page.after, 2)
            args += [cursor_int32(line), cursor_int32(seq)]
            where += " AND (line, seq) > ($2, $3)"
        args.append(page.size + 1)
        rows = await self._conn.fetch(
            f"SELECT * FROM job_failures WHERE {where} ORDER BY line, seq LIMIT ${len(args)}",
            *args,
        )
        out = [_failure(r) for r in rows[: page.size]]
        after = f"{out[-1].line}|{out[-1].batch}" if len(rows) > page.size else None
        return Page(out, after)

    async def claim(self, owner: uuid.UUID, lease: timedelta, now: datetime) -> ClaimedBatch | None:
        row = await self._conn.fetchrow(_CLAIM, owner, now, lease)
        if row is None:
            return None
        job = await self.get(row["job_id"])
        items = await self._conn.fetch(
            "SELECT line, label, secret_kek_id, secret FROM job_items"
            " WHERE job_id = $1 AND seq = $2 ORDER BY line",
            row["job_id"],
            row["seq"],
        )
        return ClaimedBatch(
            job,
            row["seq"],
            owner,
            [JobItem(r["line"], r["label"], r["secret_kek_id"], bytes(r["secret"])) for r in items],
        )

    async def hold(self, job_id: uuid.UUID, seq: int, owner: uuid.UUID) -> Job | None:
        if (
            await self._conn.fetchval("SELECT 1 FROM jobs WHERE id = $1 FOR KEY SHARE", job_id)
            is None
        ):
            return None
        row = await self._conn.fetchrow(
            "SELECT status, lease_owner FROM job_batches WHERE job_id = $1 AND seq = $2 FOR UPDATE",
            job_id,
            seq,
        )
        if row is None or row["status"] != "RUNNING" or row["lease_owner"] != owner:
            return None
        return await self.get(job_id)

    async def complete(
        self,
        job_id: uuid.UUID,
        seq: int,
        succeeded: int,
        failures: Sequence[JobFailure],
        now: datetime,
    ) -> None:
        await self._conn.execute(
            "UPDATE job_batches SET status = 'DONE', succeeded = $3, failed = $4,"
            " lease_owner = NULL, lease_until = NULL, update_time = $5"
            " WHERE job_id = $1 AND seq = $2",
            job_id,
            seq,
            succeeded,
            len(failures),
            now,
        )
        await self._add_failures(job_id, failures)

    async def release(
        self, job_id: uuid.UUID, seq: int, status: BatchStatus, now: datetime
    ) -> None:
        await self._conn.execute(
            "UPDATE job_batches SET status = $3, lease_owner = NULL, lease_until = NULL,"
            " update_time = $4 WHERE job_id = $1 AND seq = $2",
            job_id,
            seq,
            status.value,
            now,
        )

    async def finish(self, now: datetime) -> list[uuid.UUID]:
        rows = await self._conn.fetch(
            "UPDATE jobs j SET status = 'SUCCEEDED', stage = 'DONE', update_time = $1"
            " WHERE status = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM job_batches b"
            " WHERE b.job_id = j.id AND b.status IN ('PENDING', 'RUNNING')) RETURNING id",
            now,
        )
        return [r["id"] for r in rows]

    async def run_tracker_ids(self, run_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
        rows = await self._conn.fetch(
            "SELECT id FROM trackers WHERE production_run_id = $1 ORDER BY id LIMIT $2",
            run_id,
            limit,
        )
        return [r["id"] for r in rows]

    async def reevaluate(self, tracker_ids: list[uuid.UUID], since: datetime) -> set[uuid.UUID]:
        rows = await self._conn.fetch(
            "INSERT INTO processing_inbox (tracker_id, since, hours)"
            " SELECT id, $2, '{}' FROM trackers WHERE id = ANY($1::uuid[]) ORDER BY id"
            " RETURNING tracker_id",
            tracker_ids,
            since,
        )
        return {r["tracker_id"] for r in rows}
