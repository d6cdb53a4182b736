"""FetchQueryService: the fetcher's bookkeeping for administrators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.scheduling import QueueEntry
from tracker.v1 import fetch_query_service_pb2 as fq
from tracker.v1 import fetch_query_service_pb2_grpc as fq_grpc
from usecases.fetching import FetchStateQueries

Ctx = grpc.aio.ServicerContext


def _times(**values: datetime | None) -> dict[str, Any]:
    return {name: cv.ts(v) for name, v in values.items() if v is not None}


def fetch_state_pb(e: QueueEntry) -> fq.FetchState:
    place = e.place
    if place is not None and place.claimed_by is not None:
        where = fq.FETCH_QUEUE_STATE_CLAIMED
    elif place is not None and place.queued:
        where = fq.FETCH_QUEUE_STATE_WAITING
    else:
        where = fq.FETCH_QUEUE_STATE_NOT_QUEUED
    s = e.state
    return fq.FetchState(
        tracker_id=str(e.tracker_id),
        queue_state=where,
        backoff_factor=s.factor,
        success_count=s.successes,
        failure_count=s.failures,
        consecutive_failures=s.consecutive_failures,
        last_result=s.last_result.value if s.last_result else "",
        claimed_by=place.claimed_by or "" if place else "",
        **_times(
            next_due_time=e.due,
            last_success_time=s.last_success,
            last_attempt_time=s.last_attempt,
            lease_expire_time=place.lease_until if place else None,
        ),
    )


class FetchQueryServicer(fq_grpc.FetchQueryServiceServicer):
    def __init__(self, queries: FetchStateQueries) -> None:
        self._q = queries

    async def GetFetchState(
        self, request: fq.GetFetchStateRequest, context: Ctx
    ) -> fq.GetFetchStateResponse:
        entry = await self._q.tracker(caller(), cv.parse_id(request.tracker_id, "tracker_id"))
        return fq.GetFetchStateResponse(fetch_state=fetch_state_pb(entry))

    async def GetFetchQueue(
        self, request: fq.GetFetchQueueRequest, context: Ctx
    ) -> fq.GetFetchQueueResponse:
        stats = await self._q.queue(caller())
        cap = stats.capacity
        return fq.GetFetchQueueResponse(
            queued_count=stats.queued,
            due_count=stats.due_now,
            claimed_count=stats.claimed,
            fetcher_count=stats.workers,
            capacity=None
            if cap is None
            else fq.FetchCapacity(
                tracker_count=cap.trackers,
                account_count=cap.accounts,
                needed_requests_per_interval=cap.needed_per_interval,
                allowed_requests_per_interval=min(cap.allowed_per_interval, 1e300),
                accounts_needed=cap.accounts_needed,
                sufficient=cap.sufficient,
            ),
            **_times(oldest_due_time=stats.oldest_due),
        )
