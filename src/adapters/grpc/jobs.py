"""Servicers of bulk jobs: start and control on the collector, progress on the query server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument
from domain.jobs import Job, JobFailure, JobKind, JobStage, JobStatus
from domain.pagination import PageTokens
from tracker.v1 import job_query_service_pb2 as jq
from tracker.v1 import job_query_service_pb2_grpc as jq_grpc
from tracker.v1 import job_service_pb2 as js
from tracker.v1 import job_service_pb2_grpc as js_grpc
from tracker.v1 import jobs_pb2 as pb
from usecases.jobs import JobUseCases, StartJobRequest

Ctx = grpc.aio.ServicerContext

_KINDS = {
    pb.JOB_KIND_IMPORT_TRACKERS: JobKind.IMPORT_TRACKERS,
    pb.JOB_KIND_IMPORT_EXTERNAL_TRACKERS: JobKind.IMPORT_EXTERNAL_TRACKERS,
    pb.JOB_KIND_ALLOCATE_TAGS: JobKind.ALLOCATE_TAGS,
    pb.JOB_KIND_REEVALUATE_RUN: JobKind.REEVALUATE_RUN,
}
_KIND_PB = {v: k for k, v in _KINDS.items()}
_STATUS_PB = {
    JobStatus.RUNNING: pb.JOB_STATUS_RUNNING,
    JobStatus.PAUSED: pb.JOB_STATUS_PAUSED,
    JobStatus.SUCCEEDED: pb.JOB_STATUS_SUCCEEDED,
    JobStatus.CANCELLED: pb.JOB_STATUS_CANCELLED,
}
_STAGE_PB = {
    JobStage.PROCESSING: pb.JOB_STAGE_PROCESSING,
    JobStage.RETRYING: pb.JOB_STAGE_RETRYING,
    JobStage.DONE: pb.JOB_STAGE_DONE,
}


def job_pb(job: Job) -> pb.Job:
    return pb.Job(
        id=str(job.id),
        kind=_KIND_PB[job.kind],
        client_id=str(job.client_id),
        target_id=str(job.target_id),
        status=_STATUS_PB[job.status],
        stage=_STAGE_PB[job.stage],
        items_per_second=job.items_per_second,
        batch_size=job.batch_size,
        total_count=job.total_items,
        succeeded_count=job.succeeded_items,
        failed_count=job.failed_items,
        cancelled_count=job.cancelled_items,
        pending_count=job.pending_items,
        batch_count=job.batches_total,
        done_batch_count=job.batches_done,
        running_batch_count=job.batches_running,
        retry_count=job.retries,
        create_time=cv.ts(job.create_time),
        update_time=cv.ts(job.update_time),
        creator=job.creator,
    )


def failure_pb(f: JobFailure) -> pb.JobFailure:
    return pb.JobFailure(
        line=f.line, label=f.label, reason=f.reason, retryable=f.retryable, batch=f.batch
    )


def start_request(request: js.StartJobRequest) -> StartJobRequest:
    kind = _KINDS.get(request.kind)
    if kind is None:
        raise InvalidArgument("kind", "must be one of the JobKind values")
    if kind is JobKind.ALLOCATE_TAGS:
        target = cv.parse_id(request.client_id, "client_id")
    else:
        target = cv.parse_id(request.production_run_id, "production_run_id")
    return StartJobRequest(
        kind=kind,
        target_id=target,
        file=request.file,
        items_per_second=request.items_per_second or None,
        batch_size=request.batch_size or None,
    )


class JobServicer(js_grpc.JobServiceServicer):
    def __init__(self, uc: JobUseCases) -> None:
        self._uc = uc

    async def StartJob(self, request: js.StartJobRequest, context: Ctx) -> js.StartJobResponse:
        job = await self._uc.start_job(caller(), start_request(request))
        return js.StartJobResponse(job=job_pb(job))

    async def PauseJob(self, request: js.PauseJobRequest, context: Ctx) -> js.PauseJobResponse:
        job = await self._uc.pause_job(caller(), cv.parse_id(request.job_id, "job_id"))
        return js.PauseJobResponse(job=job_pb(job))

    async def ResumeJob(self, request: js.ResumeJobRequest, context: Ctx) -> js.ResumeJobResponse:
        job = await self._uc.resume_job(caller(), cv.parse_id(request.job_id, "job_id"))
        return js.ResumeJobResponse(job=job_pb(job))

    async def CancelJob(self, request: js.CancelJobRequest, context: Ctx) -> js.CancelJobResponse:
        job = await self._uc.cancel_job(caller(), cv.parse_id(request.job_id, "job_id"))
        return js.CancelJobResponse(job=job_pb(job))

    async def RetryJob(self, request: js.RetryJobRequest, context: Ctx) -> js.RetryJobResponse:
        job = await self._uc.retry_job(caller(), cv.parse_id(request.job_id, "job_id"))
        return js.RetryJobResponse(job=job_pb(job))


class JobQueryServicer(jq_grpc.JobQueryServiceServicer):
    def __init__(self, uc: JobUseCases, tokens: PageTokens, watch_interval_s: float) -> None:
        self._uc, self._tokens = uc, tokens
        self._interval = timedelta(seconds=watch_interval_s)

    async def GetJob(self, request: jq.GetJobRequest, context: Ctx) -> jq.GetJobResponse:
        job = await self._uc.queries.get(caller(), cv.parse_id(request.job_id, "job_id"))
        return jq.GetJobResponse(job=job_pb(job))

    async def ListJobs(self, request: jq.ListJobsRequest, context: Ctx) -> jq.ListJobsResponse:
        client_id = cv.optional_id(request.client_id, "client_id")
        scope = f"jobs:{client_id or ''}"
        page = await self._uc.queries.list(
            caller(), client_id, self._tokens.request(request.page_size, request.page_token, scope)
        )
        return jq.ListJobsResponse(
            jobs=[job_pb(j) for j in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )

    async def ListJobFailures(
        self, request: jq.ListJobFailuresRequest, context: Ctx
    ) -> jq.ListJobFailuresResponse:
        # the token first: a forged or foreign one is named as such whatever else is wrong
        scope = f"job-failures:{request.job_id}"
        page_request = self._tokens.request(request.page_size, request.page_token, scope)
        job_id = cv.parse_id(request.job_id, "job_id")
        page = await self._uc.queries.failures(caller(), job_id, page_request)
        return jq.ListJobFailuresResponse(
            failures=[failure_pb(f) for f in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )

    async def WatchJob(
        self, request: jq.WatchJobRequest, context: Ctx
    ) -> AsyncIterator[jq.WatchJobResponse]:
        changes = await self._uc.queries.watch(
            caller(), cv.parse_id(request.job_id, "job_id"), self._interval
        )
        async for job in changes:
            yield jq.WatchJobResponse(job=job_pb(job))
