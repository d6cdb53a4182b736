"""Servicers of the worker's operator API: its backlog and quarantine (query server), and a
retry of a quarantined tracker now (collector). ADMIN only."""

from __future__ import annotations

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.pagination import PageTokens
from domain.processing import QuarantinedTracker
from tracker.v1 import processing_query_service_pb2 as pq
from tracker.v1 import processing_query_service_pb2_grpc as pq_grpc
from tracker.v1 import processing_service_pb2 as ps
from tracker.v1 import processing_service_pb2_grpc as ps_grpc
from usecases.processing import ProcessingQueries

Ctx = grpc.aio.ServicerContext

_LISTING = "/tracker.v1.ProcessingQueryService/ListQuarantinedTrackers"


def quarantined_pb(x: QuarantinedTracker) -> pq.QuarantinedTracker:
    return pq.QuarantinedTracker(
        tracker_id=str(x.tracker_id),
        client_id=str(x.client_id) if x.client_id else "",
        attempt_count=x.attempts,
        last_error=x.last_error,
        first_failure_time=cv.ts(x.first_failure_time),
        last_failure_time=cv.ts(x.last_failure_time),
        next_retry_time=cv.ts(x.retry_time),
        enqueue_time=cv.ts(x.enqueue_time),
    )


class ProcessingQueryServicer(pq_grpc.ProcessingQueryServiceServicer):
    def __init__(self, queries: ProcessingQueries, tokens: PageTokens) -> None:
        self._q, self._tokens = queries, tokens

    async def GetProcessingQueue(
        self, request: pq.GetProcessingQueueRequest, context: Ctx
    ) -> pq.GetProcessingQueueResponse:
        backlog = await self._q.backlog(caller())
        out = pq.GetProcessingQueueResponse(
            waiting_count=backlog.waiting, quarantined_count=backlog.quarantined
        )
        if backlog.oldest_arrival is not None:
            out.oldest_arrival_time.CopyFrom(cv.ts(backlog.oldest_arrival))
        return out

    async def ListQuarantinedTrackers(
        self, request: pq.ListQuarantinedTrackersRequest, context: Ctx
    ) -> pq.ListQuarantinedTrackersResponse:
        page = await self._q.quarantined(
            caller(), self._tokens.request(request.page_size, request.page_token, _LISTING)
        )
        return pq.ListQuarantinedTrackersResponse(
            quarantined_trackers=[quarantined_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, _LISTING),
        )


class ProcessingServicer(ps_grpc.ProcessingServiceServicer):
    def __init__(self, queries: ProcessingQueries) -> None:
        self._q = queries

    async def RetryQuarantinedTracker(
        self, request: ps.RetryQuarantinedTrackerRequest, context: Ctx
    ) -> ps.RetryQuarantinedTrackerResponse:
        await self._q.retry_now(caller(), cv.parse_id(request.tracker_id, "tracker_id"))
        return ps.RetryQuarantinedTrackerResponse()
