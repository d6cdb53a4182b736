"""The bulk-jobs port's contract (jobs, batches with leases, failures, re-runs), on the fake
and PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import NotFound
from domain.jobs import (
    Job,
    JobFailure,
    JobItem,
    JobKind,
    JobStage,
    JobStatus,
    batches,
)
from domain.pagination import PageRequest
from domain.ports.jobs import JobFilter
from tests.contract.builders import a_brand, a_client, a_run, a_tracker, raw_key
from tests.contract.conftest import Uows

T0 = datetime(2026, 6, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def a_job(client_id: uuid.UUID, n_items: int, *, at: datetime = T0, rate: float = 1e6) -> Job:
    return Job(
        id=uuid.uuid4(),
        kind=JobKind.IMPORT_TRACKERS,
        client_id=client_id,
        target_id=uuid.uuid4(),
        status=JobStatus.RUNNING,
        stage=JobStage.PROCESSING,
        items_per_second=rate,
        batch_size=10,
        total_items=n_items,
        create_time=at,
        update_time=at,
    )


def items(n: int, first_line: int = 1) -> list[JobItem]:
    return [JobItem(first_line + i, f"item-{first_line + i}") for i in range(n)]


async def started(uows: Uows, n: int = 25, **kw: object) -> Job:
    """A stored job of a new client: ``n`` items in batches of 10, plus one rejected row."""
    async with uows() as uow:
        await uow.clients.add(client := a_client(f"c{uuid.uuid4().hex[:6]}"))
        job = a_job(client.id, n + 1, **kw)  # type: ignore[arg-type]
        rejected = [JobFailure(n + 1, "nope", "not a MAC address", False, 0)]
        await uow.jobs.add(job, batches(items(n), 10), rejected)
        await uow.commit()
    return job


async def test_a_job_reads_back_with_progress_summed_from_its_batches(uows: Uows) -> None:
    job = await started(uows)
    async with uows() as uow:
        got = await uow.jobs.get(job.id)
        with pytest.raises(NotFound) as err:
            await uow.jobs.get(uuid.uuid4())
    assert err.value.kind == "job"
    assert (got.status, got.total_items, got.batches_total, got.pending_items) == (
        JobStatus.RUNNING,
        26,
        3,
        25,
    )
    assert (got.succeeded_items, got.failed_items, got.cancelled_items) == (0, 1, 0)
    assert got.create_time == T0


async def test_a_claim_takes_the_lease_and_only_its_owner_may_apply_the_batch(uows: Uows) -> None:
    job = await started(uows)
    me, other = uuid.uuid4(), uuid.uuid4()
    async with uows() as uow:
        claimed = await uow.jobs.claim(me, LEASE, T0)
        await uow.commit()
    assert claimed is not None
    assert (claimed.job.id, claimed.seq, [i.line for i in claimed.items]) == (
        job.id,
        1,
        list(range(1, 11)),
    )
    async with uows() as uow:
        assert await uow.jobs.hold(job.id, 1, other) is None
        held = await uow.jobs.hold(job.id, 1, me)
        assert held is not None
        assert held.batches_running == 1
        fails = [JobFailure(3, "item-3", "no tag", True, 1)]
        await uow.jobs.complete(job.id, 1, 9, fails, T0)
        await uow.commit()
    async with uows() as uow:
        got = await uow.jobs.get(job.id)
        assert await uow.jobs.hold(job.id, 1, me) is None  # done: nobody holds it any more
    assert (got.succeeded_items, got.failed_items, got.pending_items, got.batches_done) == (
        9,
        2,
        15,
        1,
    )


async def test_an_uncommitted_claim_leaves_the_batch_to_the_next_worker(uows: Uows) -> None:
    job = await started(uows)
    async with uows() as uow:
        assert await uow.jobs.claim(uuid.uuid4(), LEASE, T0) is not None
    async with uows() as uow:
        claimed = await uow.jobs.claim(uuid.uuid4(), LEASE, T0)
    assert claimed is not None
    assert (claimed.job.id, claimed.seq) == (job.id, 1)


async def test_a_lease_run_out_is_taken_over_and_the_first_owner_loses_it(uows: Uows) -> None:
    job = await started(uows, 5)
    first, second = uuid.uuid4(), uuid.uuid4()
    async with uows() as uow:
        assert await uow.jobs.claim(first, LEASE, T0) is not None
        await uow.commit()
    async with uows() as uow:  # within the lease: nothing else to take
        assert await uow.jobs.claim(second, LEASE, T0 + timedelta(seconds=10)) is None
    async with uows() as uow:
        taken = await uow.jobs.claim(second, LEASE, T0 + LEASE + timedelta(seconds=1))
        await uow.commit()
    assert taken is not None
    assert taken.seq == 1
    async with uows() as uow:
        assert await uow.jobs.hold(job.id, 1, first) is None
        assert await uow.jobs.hold(job.id, 1, second) is not None


async def test_the_throttle_spaces_the_claims_of_one_job(uows: Uows) -> None:
    job = await started(uows, 30, rate=5.0)  # batches of 10 at 5 items/s: one per 2 s
    async with uows() as uow:
        assert await uow.jobs.claim(uuid.uuid4(), LEASE, T0) is not None
        await uow.commit()
    async with uows() as uow:
        assert await uow.jobs.claim(uuid.uuid4(), LEASE, T0 + timedelta(seconds=1.9)) is None
    async with uows() as uow:
        due = await uow.jobs.claim(uuid.uuid4(), LEASE, T0 + timedelta(seconds=2))
    assert due is not None
    assert (due.job.id, due.seq) == (job.id, 2)


async def test_paused_and_cancelled_jobs_are_not_claimed(uows: Uows) -> None:
    job = await started(uows)
    async with uows() as uow:
        await uow.jobs.get(job.id, lock=True)
        await uow.jobs.set_status(job.id, JobStatus.PAUSED, JobStage.PROCESSING, T0)
        await uow.commit()
    async with uows() as uow:
        assert await uow.jobs.claim(uuid.uuid4(), LEASE, T0) is None
        await uow.jobs.set_status(job.id, JobStatus.RUNNING, JobStage.PROCESSING, T0)
        await uow.commit()
    async with uows() as uow:
        claimed = await uow.jobs.claim(owner := uuid.uuid4(), LEASE, T0)
        await uow.commit()
    assert claimed is not None
    async with uows() as uow:
        assert await uow.jobs.cancel_open_batches(job.id, T0) == 3
        await uow.jobs.set_status(job.id, JobStatus.CANCELLED, JobStage.DONE, T0)
        await uow.commit()
    async with uows() as uow:
        assert await uow.jobs.claim(uuid.uuid4(), LEASE, T0 + timedelta(hours=1)) is None
        assert await uow.jobs.hold(job.id, claimed.seq, owner) is None
        got = await uow.jobs.get(job.id)
    assert (got.status, got.cancelled_items, got.pending_items) == (JobStatus.CANCELLED, 25, 0)


async def test_a_job_finishes_when_no_batch_is_open_and_reruns_only_retryable_failures(
    uows: Uows,
) -> None:
    job = await started(uows, 12)
    owner = uuid.uuid4()
    for n in range(2):
        async with uows() as uow:
            claimed = await uow.jobs.claim(owner, LEASE, T0 + timedelta(seconds=n))
            await uow.commit()
        assert claimed is not None
        async with uows() as uow:
            assert await uow.jobs.finish(T0) == []  # a batch is still open
            await uow.jobs.hold(job.id, claimed.seq, owner)
            fails = [
                JobFailure(i.line, i.label, "no tag yet", True, claimed.seq)
                for i in claimed.items[:2]
            ]
            await uow.jobs.complete(job.id, claimed.seq, len(claimed.items) - 2, fails, T0)
            await uow.commit()
    async with uows() as uow:
        assert await uow.jobs.finish(T0) == [job.id]
        await uow.commit()
    async with uows() as uow:
        done = await uow.jobs.get(job.id)
        page = await uow.jobs.failures(job.id, PageRequest(size=3))
        rest = await uow.jobs.failures(job.id, PageRequest(size=3, after=page.next_after))
    assert (done.status, done.stage, done.succeeded_items, done.failed_items) == (
        JobStatus.SUCCEEDED,
        JobStage.DONE,
        8,
        5,
    )
    assert [f.line for f in page.items + rest.items] == [1, 2, 11, 12, 13]
    assert rest.next_after is None

    async with uows() as uow:
        assert await uow.jobs.requeue_failures(job.id, 10, T0) == 4  # line 13 is not retryable
        await uow.jobs.set_status(job.id, JobStatus.RUNNING, JobStage.RETRYING, T0)
        await uow.commit()
    async with uows() as uow:
        again = await uow.jobs.get(job.id)
        claimed = await uow.jobs.claim(owner, LEASE, T0 + timedelta(seconds=5))
        left = await uow.jobs.failures(job.id, PageRequest())
        assert await uow.jobs.requeue_failures(job.id, 10, T0) == 0
    assert (again.failed_items, again.pending_items, again.retries, again.batches_total) == (
        1,
        4,
        1,
        3,
    )
    assert claimed is not None
    assert (claimed.seq, [(i.line, i.label) for i in claimed.items]) == (
        3,
        [(1, "item-1"), (2, "item-2"), (11, "item-11"), (12, "item-12")],
    )
    assert [f.line for f in left.items] == [13]


async def test_items_keep_their_sealed_secret_through_a_rerun(uows: Uows) -> None:
    async with uows() as uow:
        await uow.clients.add(client := a_client())
        job = a_job(client.id, 1)
        await uow.jobs.add(job, [(1, [JobItem(1, "pub", "kek-1", b"\x01sealed")])], [])
        await uow.commit()
    async with uows() as uow:
        claimed = await uow.jobs.claim(owner := uuid.uuid4(), LEASE, T0)
        assert claimed is not None
        await uow.jobs.hold(job.id, 1, owner)
        await uow.jobs.complete(job.id, 1, 0, [JobFailure(1, "pub", "busy", True, 1)], T0)
        await uow.jobs.finish(T0)
        await uow.jobs.requeue_failures(job.id, 10, T0)
        await uow.jobs.set_status(job.id, JobStatus.RUNNING, JobStage.RETRYING, T0)
        await uow.commit()
    async with uows() as uow:
        again = await uow.jobs.claim(owner, LEASE, T0)
    assert again is not None
    assert again.items == [JobItem(1, "pub", "kek-1", b"\x01sealed")]


async def test_lists_are_newest_first_per_client_and_paged(uows: Uows) -> None:
    a = [await started(uows, 1, at=T0 + timedelta(minutes=i)) for i in range(3)]
    async with uows() as uow:
        mine = a[0].client_id
        first = await uow.jobs.list_jobs(JobFilter(), PageRequest(size=2))
        second = await uow.jobs.list_jobs(JobFilter(), PageRequest(size=2, after=first.next_after))
        only = await uow.jobs.list_jobs(JobFilter(frozenset({mine})), PageRequest())
    assert [j.id for j in first.items + second.items] == [a[2].id, a[1].id, a[0].id]
    assert second.next_after is None
    assert [j.id for j in only.items] == [a[0].id]


async def test_reevaluation_queues_the_trackers_that_exist(uows: Uows) -> None:
    async with uows() as uow:
        await uow.clients.add(client := a_client())
        await uow.brands.add(brand := a_brand(client))
        await uow.production_runs.add(run := a_run(brand))
        trackers = [a_tracker(run, raw_key(i)) for i in range(3)]
        await uow.trackers.add_many(trackers)
        await uow.commit()
    async with uows() as uow:
        ids = await uow.jobs.run_tracker_ids(run.id, 10)
        assert ids == sorted(t.id for t in trackers)
        assert await uow.jobs.run_tracker_ids(run.id, 2) == ids[:2]
        gone = uuid.uuid4()
        assert await uow.jobs.reevaluate([*ids, gone], run.start_time) == set(ids)
