"""Servicer of the fleet's health: a tracker's cadence and silence, the silent trackers."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc
from google.protobuf import duration_pb2

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument
from domain.fleet import FleetGroup, GroupBy, total
from domain.outages import Dimension, Outage
from domain.pagination import PageTokens
from domain.ports.common import Clock
from domain.silence import HealthState, TrackerHealth
from tracker.v1 import fleet_query_service_pb2 as fq
from tracker.v1 import fleet_query_service_pb2_grpc as fq_grpc
from usecases.outages import OutageQueries
from usecases.silence import FleetStatisticsQuery, SilenceQueries, SilentQuery

Ctx = grpc.aio.ServicerContext

_STATES = {
    HealthState.REPORTING: fq.HEALTH_STATE_REPORTING,
    HealthState.SILENT: fq.HEALTH_STATE_SILENT,
    HealthState.NO_REPORTS: fq.HEALTH_STATE_NO_REPORTS,
    HealthState.INACTIVE: fq.HEALTH_STATE_INACTIVE,
}


_DIMENSIONS = {
    Dimension.CLIENT: fq.COHORT_DIMENSION_CLIENT,
    Dimension.BRAND: fq.COHORT_DIMENSION_BRAND,
    Dimension.PRODUCTION_RUN: fq.COHORT_DIMENSION_PRODUCTION_RUN,
    Dimension.CITY: fq.COHORT_DIMENSION_CITY,
    Dimension.FIRST_REPORT_AGE: fq.COHORT_DIMENSION_FIRST_REPORT_AGE,
    Dimension.APPLE_ACCOUNT: fq.COHORT_DIMENSION_APPLE_ACCOUNT,
}


def outage_pb(o: Outage) -> fq.OutageEvent:
    out = fq.OutageEvent(
        id=o.id,
        client_id=str(o.cohort.client_id),
        dimension=_DIMENSIONS[o.cohort.dimension],
        cohort_key=o.cohort.key,
        tracker_count=o.trackers,
        silent_count=o.silent,
        silent_share=o.share,
        baseline_share=o.baseline,
        start_time=cv.ts(o.start_time),
    )
    if o.end_time is not None:
        out.end_time.CopyFrom(cv.ts(o.end_time))
    return out


_GROUPINGS = {
    fq.FLEET_GROUPING_UNSPECIFIED: GroupBy.CLIENT,
    fq.FLEET_GROUPING_CLIENT: GroupBy.CLIENT,
    fq.FLEET_GROUPING_BRAND: GroupBy.BRAND,
    fq.FLEET_GROUPING_PRODUCTION_RUN: GroupBy.PRODUCTION_RUN,
}


def group_pb(g: FleetGroup) -> fq.FleetGroupStatistics:
    return fq.FleetGroupStatistics(
        key=g.key,
        tracker_count=g.trackers,
        in_storage_count=g.in_storage,
        in_transit_count=g.in_transit,
        delivered_count=g.delivered,
        no_status_count=g.no_status,
        silent_count=g.silent,
        fetched_last_hour_count=g.fetched_last_hour,
        reports_last_hour=g.reports_last_hour,
    )


def _duration(value: timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def health_pb(h: TrackerHealth, now: datetime) -> fq.TrackerHealth:
    out = fq.TrackerHealth(
        tracker_id=str(h.tracker_id),
        client_id=str(h.client_id),
        production_run_id=str(h.production_run_id),
        brand_id=str(h.brand_id),
        state=_STATES[h.state],
        expected_interval=_duration(h.expected_cadence),
        learned_from_gap_count=h.learned_from_gaps,
    )
    if h.first_report_time is not None:
        out.first_report_time.CopyFrom(cv.ts(h.first_report_time))
    if h.last_report_time is not None:
        out.last_report_time.CopyFrom(cv.ts(h.last_report_time))
    if h.silent_since is not None:
        out.silent_since.CopyFrom(cv.ts(h.silent_since))
        out.silent_duration.CopyFrom(_duration(h.silent_for(now)))
    return out


class FleetQueryServicer(fq_grpc.FleetQueryServiceServicer):
    def __init__(
        self,
        queries: SilenceQueries,
        outages: OutageQueries,
        statistics: FleetStatisticsQuery,
        tokens: PageTokens,
        clock: Clock,
    ) -> None:
        self._q, self._outages, self._tokens = queries, outages, tokens
        self._statistics = statistics
        self._clock = clock

    async def GetTrackerHealth(
        self, request: fq.GetTrackerHealthRequest, context: Ctx
    ) -> fq.GetTrackerHealthResponse:
        health = await self._q.health(caller(), cv.parse_id(request.tracker_id, "tracker_id"))
        return fq.GetTrackerHealthResponse(health=health_pb(health, self._clock.now()))

    async def ListSilentTrackers(
        self, request: fq.ListSilentTrackersRequest, context: Ctx
    ) -> fq.ListSilentTrackersResponse:
        query = SilentQuery(
            client_id=cv.optional_id(request.client_id, "client_id"),
            brand_id=cv.optional_id(request.brand_id, "brand_id"),
            production_run_id=cv.optional_id(request.production_run_id, "production_run_id"),
        )
        scope = (
            f"silent:{query.client_id or ''}:{query.brand_id or ''}:{query.production_run_id or ''}"
        )
        page = await self._q.silent(
            caller(), query, self._tokens.request(request.page_size, request.page_token, scope)
        )
        now = self._clock.now()
        return fq.ListSilentTrackersResponse(
            trackers=[health_pb(h, now) for h in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )

    async def ListOutageEvents(
        self, request: fq.ListOutageEventsRequest, context: Ctx
    ) -> fq.ListOutageEventsResponse:
        client_id = cv.optional_id(request.client_id, "client_id")
        scope = f"outages:{client_id or ''}:{int(request.open_only)}"
        page = await self._outages.list(
            caller(),
            client_id,
            request.open_only,
            self._tokens.request(request.page_size, request.page_token, scope),
        )
        return fq.ListOutageEventsResponse(
            events=[outage_pb(o) for o in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )

    async def GetFleetStatistics(
        self, request: fq.GetFleetStatisticsRequest, context: Ctx
    ) -> fq.GetFleetStatisticsResponse:
        group_by = _GROUPINGS.get(request.group_by)
        if group_by is None:
            raise InvalidArgument("group_by", "must be one of the FleetGrouping values")
        groups = await self._statistics(
            caller(), cv.optional_id(request.client_id, "client_id"), group_by
        )
        return fq.GetFleetStatisticsResponse(
            groups=[group_pb(g) for g in groups], total=group_pb(total(groups))
        )
