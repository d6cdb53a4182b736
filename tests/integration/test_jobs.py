"""Bulk jobs over gRPC on a real database, applied by the worker's own turn (``RunJobBatch``
from the container): a manufacturing file with bad rows, retry of failures only, pause,
resume, cancel, the progress stream, the throttle, and leases lost to another worker."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta

import grpc
import pytest
from findmy import KeyPair

from adapters.clock import SystemClock
from tests.integration.conftest import Stack
from tests.integration.test_keys import export, run_of_new_client
from tracker.v1 import job_query_service_pb2 as jq
from tracker.v1 import job_query_service_pb2_grpc as jq_grpc
from tracker.v1 import job_service_pb2 as js
from tracker.v1 import job_service_pb2_grpc as js_grpc
from tracker.v1 import jobs_pb2 as pb
from tracker.v1 import key_query_service_pb2 as kq
from tracker.v1 import key_service_pb2 as k
from tracker.v1 import key_service_pb2_grpc as k_grpc
from tracker.v1 import setup_query_service_pb2 as q
from usecases.jobs import RunJobBatch

pytestmark = pytest.mark.integration


def job_stubs(stack: Stack) -> tuple[js_grpc.JobServiceStub, jq_grpc.JobQueryServiceStub]:
    assert stack.collector_channel is not None
    assert stack.query_channel is not None
    return (
        js_grpc.JobServiceStub(stack.collector_channel),
        jq_grpc.JobQueryServiceStub(stack.query_channel),
    )


async def macs_of_new_batch(stack: Stack, count: int) -> list[str]:
    assert stack.collector_channel is not None
    keys = k_grpc.KeyServiceStub(stack.collector_channel)
    batch = (await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=count))).key_batch
    text = await export(stack, batch.id, kq.KEY_EXPORT_FORMAT_CSV)
    return [line.split(",")[0] for line in text.splitlines()[1:]]


async def allocate(stack: Stack, client_id: str, macs: list[str]) -> None:
    assert stack.collector_channel is not None
    keys = k_grpc.KeyServiceStub(stack.collector_channel)
    for i in range(0, len(macs), 10_000):
        await keys.AllocateTags(
            k.AllocateTagsRequest(client_id=client_id, mac_addresses=macs[i : i + 10_000])
        )


async def worker(stack: Stack, lease_s: float = 30.0) -> RunJobBatch:
    assert stack.container is not None
    return RunJobBatch(
        await stack.container.uow_factory.async_(), SystemClock(), timedelta(seconds=lease_s)
    )


async def drain(run: RunJobBatch, limit: int = 10_000) -> int:
    """Turns until nothing is due; how many batches were applied."""
    applied = 0
    for _ in range(limit):
        result = await run()
        if result.job_id is None:
            return applied
        applied += result.applied
    raise AssertionError("the job never ran dry")


async def get(stack: Stack, job_id: str) -> pb.Job:
    _, query = job_stubs(stack)
    return (await query.GetJob(jq.GetJobRequest(job_id=job_id))).job


async def failures(stack: Stack, job_id: str) -> list[pb.JobFailure]:
    _, query = job_stubs(stack)
    out, token = [], ""
    while True:
        page = await query.ListJobFailures(
            jq.ListJobFailuresRequest(job_id=job_id, page_size=7, page_token=token)
        )
        out += page.failures
        token = page.next_page_token
        if not token:
            return out


async def trackers_of(stack: Stack, run_id: str) -> list[str]:
    out, token = [], ""
    while True:
        page = await stack.query.ListTrackers(
            q.ListTrackersRequest(production_run_id=run_id, page_size=1000, page_token=token)
        )
        out += [t.mac_address for t in page.trackers]
        token = page.next_page_token
        if not token:
            return sorted(out)


def csv_of(rows: list[str], header: str = "mac_address,note") -> bytes:
    return ("\n".join([header, *(f"{r},x" for r in rows)]) + "\n").encode()


async def test_import_from_a_manufacturing_file_keeps_failures_and_retries_only_them(
    stack: Stack,
) -> None:
    jobs, _ = job_stubs(stack)
    client, run = await run_of_new_client(stack, "acme")
    macs = await macs_of_new_batch(stack, 1200)
    allocated, later = macs[:1000], macs[1000:1100]
    await allocate(stack, client.id, allocated)
    rows = [*allocated, *later, "not-a-mac", allocated[5].lower()]
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(rows),
                batch_size=150,
                items_per_second=1e6,
            )
        )
    ).job
    assert (job.status, job.total_count, job.batch_count) == (pb.JOB_STATUS_RUNNING, 1102, 8)
    assert job.failed_count == 2  # refused while reading: a bad row and a repeat
    assert await drain(await worker(stack)) == 8

    done = await get(stack, job.id)
    assert done.status == pb.JOB_STATUS_SUCCEEDED
    assert done.stage == pb.JOB_STAGE_DONE
    assert (done.succeeded_count, done.failed_count, done.pending_count) == (1000, 102, 0)
    failed = await failures(stack, job.id)
    assert [f.line for f in failed] == sorted(f.line for f in failed)
    by_reason = {f.label: (f.reason, f.retryable) for f in failed}
    assert by_reason["not-a-mac"][1] is False
    assert "repeats line 7" in by_reason[allocated[5]][0]
    assert all(by_reason[m][1] for m in later)
    assert await trackers_of(stack, run.id) == sorted(allocated)

    # the missing tags arrive; a re-run takes the 100 retryable failures and nothing else
    await allocate(stack, client.id, later)
    retried = (await jobs.RetryJob(js.RetryJobRequest(job_id=job.id))).job
    assert (retried.status, retried.stage, retried.pending_count) == (
        pb.JOB_STATUS_RUNNING,
        pb.JOB_STAGE_RETRYING,
        100,
    )
    assert await drain(await worker(stack)) == 1
    final = await get(stack, job.id)
    assert (final.status, final.succeeded_count, final.failed_count, final.retry_count) == (
        pb.JOB_STATUS_SUCCEEDED,
        1100,
        2,
        1,
    )
    assert await trackers_of(stack, run.id) == sorted(allocated + later)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.RetryJob(js.RetryJobRequest(job_id=job.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_pause_stops_batches_resume_goes_on_cancel_drops_the_rest(stack: Stack) -> None:
    jobs, _ = job_stubs(stack)
    client, run = await run_of_new_client(stack, "acme")
    macs = await macs_of_new_batch(stack, 500)
    await allocate(stack, client.id, macs)
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(macs),
                batch_size=100,
                items_per_second=1e6,
            )
        )
    ).job
    run_batch = await worker(stack)
    assert (await run_batch()).applied
    paused = (await jobs.PauseJob(js.PauseJobRequest(job_id=job.id))).job
    assert paused.status == pb.JOB_STATUS_PAUSED
    assert (await run_batch()).job_id is None  # nothing is taken while paused
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.PauseJob(js.PauseJobRequest(job_id=job.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await jobs.ResumeJob(js.ResumeJobRequest(job_id=job.id))
    assert (await run_batch()).applied
    # a batch claimed before CancelJob is given back, not applied
    async with (await stack.container.uow_factory.async_())() as uow:  # type: ignore[union-attr]
        claimed = await uow.jobs.claim(run_batch.owner, timedelta(seconds=30), SystemClock().now())
        await uow.commit()
    assert claimed is not None
    cancelled = (await jobs.CancelJob(js.CancelJobRequest(job_id=job.id))).job
    assert (cancelled.status, cancelled.succeeded_count, cancelled.cancelled_count) == (
        pb.JOB_STATUS_CANCELLED,
        200,
        300,
    )
    assert (await run_batch()).job_id is None
    assert len(await trackers_of(stack, run.id)) == 200
    for call in (
        jobs.ResumeJob(js.ResumeJobRequest(job_id=job.id)),
        jobs.RetryJob(js.RetryJobRequest(job_id=job.id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_batch_whose_lease_was_taken_over_is_applied_once(stack: Stack) -> None:
    jobs, _ = job_stubs(stack)
    client, run = await run_of_new_client(stack, "acme")
    macs = await macs_of_new_batch(stack, 50)
    await allocate(stack, client.id, macs)
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(macs),
                batch_size=50,
                items_per_second=1e6,
            )
        )
    ).job
    uows = await stack.container.uow_factory.async_()  # type: ignore[union-attr]
    slow, fast = uuid.uuid4(), uuid.uuid4()
    now = SystemClock().now()
    async with uows() as uow:  # the slow worker claims, then stalls past its lease
        assert await uow.jobs.claim(slow, timedelta(seconds=1), now) is not None
        await uow.commit()
    async with uows() as uow:
        later = now + timedelta(seconds=2)
        assert await uow.jobs.claim(fast, timedelta(seconds=30), later) is not None
        await uow.commit()
    async with uows() as uow:  # the slow one wakes up: the batch is no longer its own
        assert await uow.jobs.hold(uuid.UUID(job.id), 1, slow) is None
    assert await drain(RunJobBatch(uows, SystemClock(), timedelta(seconds=30), fast)) == 0
    # ``fast`` claimed it but RunJobBatch takes a new claim: the batch waits for its lease
    async with uows() as uow:
        held = await uow.jobs.hold(uuid.UUID(job.id), 1, fast)
        assert held is not None
    final = await get(stack, job.id)
    assert final.running_batch_count == 1
    assert final.succeeded_count == 0


async def test_the_throttle_spaces_batches_of_one_job(stack: Stack) -> None:
    jobs, _ = job_stubs(stack)
    client, run = await run_of_new_client(stack, "acme")
    macs = await macs_of_new_batch(stack, 40)
    await allocate(stack, client.id, macs)
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(macs),
                batch_size=10,
                items_per_second=1,  # a batch of 10 every 10 s
            )
        )
    ).job
    assert job.items_per_second == 1
    run_batch = await worker(stack)
    assert (await run_batch()).applied
    assert (await run_batch()).job_id is None  # the next batch is not due for 10 s
    uows = await stack.container.uow_factory.async_()  # type: ignore[union-attr]
    async with uows() as uow:  # 10 s later it is
        due = SystemClock().now() + timedelta(seconds=10.5)
        assert await uow.jobs.claim(uuid.uuid4(), timedelta(seconds=30), due) is not None


async def test_watch_streams_progress_until_the_job_succeeds(stack: Stack) -> None:
    jobs, query = job_stubs(stack)
    client, run = await run_of_new_client(stack, "acme")
    macs = await macs_of_new_batch(stack, 300)
    await allocate(stack, client.id, macs)
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(macs),
                batch_size=100,
                items_per_second=1e6,
            )
        )
    ).job
    seen: list[int] = []

    async def watch() -> None:
        async for change in query.WatchJob(jq.WatchJobRequest(job_id=job.id)):
            seen.append(change.job.succeeded_count)
            if change.job.status == pb.JOB_STATUS_SUCCEEDED:
                seen.append(-1)

    watching = asyncio.create_task(watch())
    run_batch = await worker(stack)
    for _ in range(3):
        await asyncio.sleep(0.7)
        assert (await run_batch()).applied
    await asyncio.wait_for(watching, 10)
    assert seen[0] == 0
    assert seen[-2:] == [300, -1]
    assert seen[:-1] == sorted(seen[:-1])


async def test_external_keys_are_sealed_on_arrival_and_never_shown(stack: Stack) -> None:
    jobs, _ = job_stubs(stack)
    _, run = await run_of_new_client(stack, "acme")
    pairs = [KeyPair.new() for _ in range(30)]
    rows = [base64.b64encode(p.private_key_bytes).decode() for p in pairs[:20]]
    rows += [p.private_key_bytes.hex() for p in pairs[20:]]
    rows += ["c2hvcnQ=", rows[0]]
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_EXTERNAL_TRACKERS,
                production_run_id=run.id,
                file=csv_of(rows, "private_key,note"),
                items_per_second=1e6,
            )
        )
    ).job
    assert await drain(await worker(stack)) == 1
    final = await get(stack, job.id)
    assert (final.succeeded_count, final.failed_count) == (30, 2)
    shown = str(await failures(stack, job.id)) + str(final)
    for p in pairs:
        assert base64.b64encode(p.private_key_bytes).decode() not in shown
        assert p.private_key_bytes.hex() not in shown
    assert len(await trackers_of(stack, run.id)) == 30


async def test_allocation_and_reevaluation_jobs(stack: Stack) -> None:
    jobs, query = job_stubs(stack)
    client, run = await run_of_new_client(stack, "acme")
    other, _ = await run_of_new_client(stack, "other")
    macs = await macs_of_new_batch(stack, 60)
    await allocate(stack, other.id, macs[:10])
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_ALLOCATE_TAGS,
                client_id=client.id,
                file=csv_of(macs),
                items_per_second=1e6,
            )
        )
    ).job
    await drain(await worker(stack))
    final = await get(stack, job.id)
    assert (final.succeeded_count, final.failed_count) == (50, 10)
    assert {f.reason for f in await failures(stack, job.id)} == {"allocated to another client"}

    imported = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(macs[10:]),
                items_per_second=1e6,
            )
        )
    ).job
    await drain(await worker(stack))
    assert (await get(stack, imported.id)).succeeded_count == 50
    again = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_REEVALUATE_RUN,
                production_run_id=run.id,
                batch_size=20,
                items_per_second=1e6,
            )
        )
    ).job
    assert (again.total_count, again.batch_count) == (50, 3)
    await drain(await worker(stack))
    assert (await get(stack, again.id)).succeeded_count == 50
    uows = await stack.container.uow_factory.async_()  # type: ignore[union-attr]
    async with uows() as uow:
        queued = await uow.jobs._conn.fetchval(  # type: ignore[attr-defined]
            "SELECT count(DISTINCT tracker_id) FROM processing_inbox"
        )
    assert queued == 50
    listed = await query.ListJobs(jq.ListJobsRequest(client_id=client.id, page_size=2))
    assert [j.id for j in listed.jobs] == [again.id, imported.id]
    assert listed.next_page_token
    rest = await query.ListJobs(
        jq.ListJobsRequest(client_id=client.id, page_size=2, page_token=listed.next_page_token)
    )
    assert [j.id for j in rest.jobs] == [job.id]
    assert not rest.next_page_token


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (js.StartJobRequest(production_run_id=str(uuid.uuid4())), "kind"),
        (
            js.StartJobRequest(kind=pb.JOB_KIND_IMPORT_TRACKERS, production_run_id="x"),
            "production_run_id",
        ),
        (js.StartJobRequest(kind=pb.JOB_KIND_ALLOCATE_TAGS), "client_id"),
    ],
)
async def test_bad_requests_name_the_field(
    stack: Stack, request_: js.StartJobRequest, field: str
) -> None:
    jobs, _ = job_stubs(stack)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.StartJob(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(err.value.trailing_metadata()) + err.value.details()


async def test_a_bad_file_or_throttle_is_invalid_argument(stack: Stack) -> None:
    jobs, _ = job_stubs(stack)
    _, run = await run_of_new_client(stack, "acme")
    for file, ips, size, field in [
        (b"", 0, 0, "file"),
        (b"\xff\xfe", 0, 0, "file"),
        (b"mac_address\n", 0, 0, "file"),
        (csv_of(["AA:BB:CC:DD:EE:FF"]), -1, 0, "items_per_second"),
        (csv_of(["AA:BB:CC:DD:EE:FF"]), 0, 5001, "batch_size"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await jobs.StartJob(
                js.StartJobRequest(
                    kind=pb.JOB_KIND_IMPORT_TRACKERS,
                    production_run_id=run.id,
                    file=file,
                    items_per_second=ips,
                    batch_size=size,
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in err.value.details() + str(err.value.trailing_metadata()), field
