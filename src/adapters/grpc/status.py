"""Servicers of the status API: current status, status and location history (query
server), and per-run status rules (read on the query server, changed on the collector)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument, field_prefix
from domain.geo import NearestCity
from domain.history import CurrentStatus, Granularity, LocationPoint, TrackerStatusChange
from domain.model import GeoPoint
from domain.pagination import PageTokens
from domain.status import (
    MAX_DWELL_S,
    RuleKind,
    StatusRule,
    TrackerStatus,
)
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import status_pb2 as st
from tracker.v1 import status_query_service_pb2 as q
from tracker.v1 import status_query_service_pb2_grpc as q_grpc
from tracker.v1 import status_service_pb2 as s
from tracker.v1 import status_service_pb2_grpc as s_grpc
from usecases.status import HistoryQuery, StatusQueries, StatusRuleUpdates

Ctx = grpc.aio.ServicerContext

_STATUS = {
    None: st.TRACKER_STATUS_UNSPECIFIED,
    TrackerStatus.IN_STORAGE: st.TRACKER_STATUS_IN_STORAGE,
    TrackerStatus.IN_TRANSIT: st.TRACKER_STATUS_IN_TRANSIT,
    TrackerStatus.DELIVERED: st.TRACKER_STATUS_DELIVERED,
}
_GRANULARITY_FROM_PB = {
    st.GRANULARITY_UNSPECIFIED: Granularity.AUTO,
    st.GRANULARITY_RAW: Granularity.RAW,
    st.GRANULARITY_HOURLY: Granularity.HOURLY,
    st.GRANULARITY_DAILY: Granularity.DAILY,
    st.GRANULARITY_AUTO: Granularity.AUTO,
}
_GRANULARITY_TO_PB = {v: k for k, v in _GRANULARITY_FROM_PB.items() if k}
_KIND_TO_PB = {
    RuleKind.CONSECUTIVE: st.STATUS_RULE_KIND_CONSECUTIVE,
    RuleKind.EVIDENCE: st.STATUS_RULE_KIND_EVIDENCE,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}


def _point(p: GeoPoint) -> pb.GeoPoint:
    return pb.GeoPoint(latitude=p.latitude, longitude=p.longitude)


def _nearest(n: NearestCity | None) -> st.NearestCity | None:
    if n is None:
        return None
    c = n.city
    return st.NearestCity(
        city=st.City(
            geoname_id=c.geonameid,
            name=c.name,
            country_code=c.country_code,
            admin1_code=c.admin1_code,
            population=c.population,
            position=_point(c.position),
        ),
        distance_m=n.distance_m,
    )


def status_pb(x: CurrentStatus) -> st.TrackerStatusInfo:
    out = st.TrackerStatusInfo(
        tracker_id=str(x.tracker_id),
        status=_STATUS[x.status],
        location_id=str(x.location_id) if x.location_id else "",
    )
    if x.status_since:
        out.status_time.CopyFrom(cv.ts(x.status_since))
    if x.update_time:
        out.update_time.CopyFrom(cv.ts(x.update_time))
    if x.probability is not None:
        out.status_probability = x.probability
    if x.evidence_since:
        out.status_evidence_time.CopyFrom(cv.ts(x.evidence_since))
    if x.last_report:
        last = x.last_report
        out.last_report_time.CopyFrom(cv.ts(last.report_time))
        out.last_position.CopyFrom(_point(last.position))
        out.last_horizontal_accuracy_m = last.horizontal_accuracy_m
        if last.nearest_city:
            out.last_nearest_city.CopyFrom(_nearest(last.nearest_city))
    return out


def change_pb(x: TrackerStatusChange) -> st.StatusChange:
    c = x.change
    return st.StatusChange(
        tracker_id=str(x.tracker_id),
        status=_STATUS[c.status],
        previous_status=_STATUS[c.previous],
        report_time=cv.ts(c.key.report_time),
        position=_point(x.position),
        horizontal_accuracy_m=c.horizontal_accuracy_m,
        confidence=c.confidence,
        location_id=str(c.location_id) if c.location_id else "",
        nearest_city=_nearest(x.nearest_city),
        probability=c.probability or 0.0,
        evidence_time=cv.ts(c.evidence_since or c.key.report_time),
    )


def point_pb(x: LocationPoint) -> st.LocationPoint:
    return st.LocationPoint(
        tracker_id=str(x.tracker_id),
        granularity=_GRANULARITY_TO_PB[x.granularity],
        start_time=cv.ts(x.start_time),
        end_time=cv.ts(x.end_time),
        report_count=x.report_count,
        first_report_time=cv.ts(x.first_report_time),
        last_report_time=cv.ts(x.last_report_time),
        position=_point(x.position),
        horizontal_accuracy_m=x.horizontal_accuracy_m,
        nearest_city=_nearest(x.nearest_city),
        confidence=x.confidence,
        source=report_source(x),
    )


def report_source(x: LocationPoint) -> st.ReportSource.ValueType:
    """Where a raw report came from; roll-ups have none."""
    if x.granularity is not Granularity.RAW:
        return st.REPORT_SOURCE_UNSPECIFIED
    return {"findmy": st.REPORT_SOURCE_FIND_MY, "detector": st.REPORT_SOURCE_DETECTOR}.get(
        x.source, st.REPORT_SOURCE_PUSHED
    )


def rule_pb(run_id: str, r: StatusRule) -> st.StatusRule:
    """Both dwell fields filled: ``min_dwell`` and the deprecated ``min_dwell_s``."""
    return st.StatusRule(
        production_run_id=run_id,
        min_consecutive_reports=r.min_consecutive_reports,
        min_dwell_s=r.min_dwell_s,
        min_dwell=duration_pb2.Duration(seconds=r.min_dwell_s),
        require_accuracy_within_radius=r.require_accuracy_within_radius,
        min_confidence=r.min_confidence,
        kind=_KIND_TO_PB[r.kind],
        min_probability=r.min_probability,
        outlier_share=r.outlier_share,
    )


_DEFAULT_RULE = StatusRule()

# The request fields an update may name (in update_mask), each with the domain field it sets.
RULE_FIELDS = {
    "min_consecutive_reports": "min_consecutive_reports",
    "min_dwell": "min_dwell_s",
    "min_dwell_s": "min_dwell_s",
    "require_accuracy_within_radius": "require_accuracy_within_radius",
    "min_confidence": "min_confidence",
    "kind": "kind",
    "min_probability": "min_probability",
    "outlier_share": "outlier_share",
}


def _dwell_s(m: st.StatusRule) -> int:
    """The dwell in seconds: ``min_dwell`` (whole seconds) or the deprecated ``min_dwell_s``;
    both may be set only to the same value."""
    if not m.HasField("min_dwell"):
        return m.min_dwell_s
    d = m.min_dwell
    if d.nanos or not 0 <= d.seconds <= MAX_DWELL_S:
        raise InvalidArgument("min_dwell", f"whole seconds, 0..{MAX_DWELL_S} s")
    if m.min_dwell_s and m.min_dwell_s != d.seconds:
        raise InvalidArgument(
            "min_dwell", f"differs from min_dwell_s ({m.min_dwell_s} s; deprecated): set one"
        )
    return int(d.seconds)


def _rule_values(m: st.StatusRule) -> dict[str, Any]:
    """Every field of a StatusRule message as the domain's, unset (zero) fields taking the
    domain's defaults: StatusRule's own field defaults."""
    if m.kind == st.STATUS_RULE_KIND_UNSPECIFIED:
        kind = RuleKind.CONSECUTIVE  # what a rule meant before there were kinds
    elif m.kind in _KIND_FROM_PB:
        kind = _KIND_FROM_PB[m.kind]  # type: ignore[index]
    else:
        raise InvalidArgument("kind", "unknown status rule kind")
    return {
        "min_consecutive_reports": m.min_consecutive_reports
        or _DEFAULT_RULE.min_consecutive_reports,
        "min_dwell_s": _dwell_s(m),
        "require_accuracy_within_radius": m.require_accuracy_within_radius,
        "min_confidence": m.min_confidence or _DEFAULT_RULE.min_confidence,
        "kind": kind,
        "min_probability": m.min_probability or _DEFAULT_RULE.min_probability,
        "outlier_share": m.outlier_share or _DEFAULT_RULE.outlier_share,
    }


def _rule_from_pb(m: st.StatusRule) -> StatusRule:
    return StatusRule(**_rule_values(m))


def rule_changes(m: st.StatusRule, mask: field_mask_pb2.FieldMask) -> dict[str, Any]:
    """The domain fields an UpdateStatusRule with ``update_mask`` changes (AIP-134)."""
    unknown = [p for p in mask.paths if p not in RULE_FIELDS]
    if unknown:  # worded as the setup updates' (adapters/grpc/convert.changes_from)
        raise InvalidArgument(
            "update_mask",
            f"cannot update {', '.join(unknown)}; updatable: {', '.join(sorted(RULE_FIELDS))}",
        )
    with field_prefix("status_rule"):
        values = _rule_values(m)
    return {RULE_FIELDS[path]: values[RULE_FIELDS[path]] for path in mask.paths}


def _history_query(
    request: q.ListStatusHistoryRequest | q.ListLocationHistoryRequest,
) -> HistoryQuery:
    return HistoryQuery(
        tracker_id=cv.optional_id(request.tracker_id, "tracker_id"),
        start_time=cv.from_ts(request, "start_time") if request.HasField("start_time") else None,
        end_time=cv.from_ts(request, "end_time") if request.HasField("end_time") else None,
    )


def page_scope(rpc: str, *filters: object) -> str:
    """What a page token is bound to: this RPC and its filters."""
    return f"tracker.v1.StatusQueryService/{rpc}?" + "|".join(str(p) for p in filters)


class StatusQueryServicer(q_grpc.StatusQueryServiceServicer):
    def __init__(self, uc: StatusQueries, tokens: PageTokens) -> None:
        self._uc = uc
        self._tokens = tokens

    async def GetTrackerStatus(
        self, request: q.GetTrackerStatusRequest, context: Ctx
    ) -> q.GetTrackerStatusResponse:
        status = await self._uc.get_status(caller(), cv.parse_id(request.tracker_id, "tracker_id"))
        return q.GetTrackerStatusResponse(status=status_pb(status))

    async def BatchGetTrackerStatuses(
        self, request: q.BatchGetTrackerStatusesRequest, context: Ctx
    ) -> q.BatchGetTrackerStatusesResponse:
        ids = [cv.parse_id(t, f"tracker_ids[{i}]") for i, t in enumerate(request.tracker_ids)]
        statuses = await self._uc.batch_get_statuses(caller(), ids)
        return q.BatchGetTrackerStatusesResponse(statuses=[status_pb(x) for x in statuses])

    async def ListStatusHistory(
        self, request: q.ListStatusHistoryRequest, context: Ctx
    ) -> q.ListStatusHistoryResponse:
        query = _history_query(request)
        key = page_scope("ListStatusHistory", query.tracker_id, query.start_time, query.end_time)
        page = await self._uc.list_status_history(
            caller(), query, self._tokens.request(request.page_size, request.page_token, key)
        )
        return q.ListStatusHistoryResponse(
            changes=[change_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def ListLocationHistory(
        self, request: q.ListLocationHistoryRequest, context: Ctx
    ) -> q.ListLocationHistoryResponse:
        query = _history_query(request)
        granularity = _GRANULARITY_FROM_PB.get(request.granularity)  # type: ignore[call-overload]
        if granularity is None:
            raise InvalidArgument("granularity", "unknown granularity")
        key = page_scope(
            "ListLocationHistory", query.tracker_id, query.start_time, query.end_time, granularity,
            request.min_confidence,
        )  # fmt: skip
        page = await self._uc.list_location_history(
            caller(),
            query,
            granularity,
            request.min_confidence,
            self._tokens.request(request.page_size, request.page_token, key),
        )
        return q.ListLocationHistoryResponse(
            points=[point_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetStatusRule(
        self, request: q.GetStatusRuleRequest, context: Ctx
    ) -> q.GetStatusRuleResponse:
        run_id = cv.parse_id(request.production_run_id, "production_run_id")
        rule = await self._uc.get_status_rule(caller(), run_id)
        return q.GetStatusRuleResponse(status_rule=rule_pb(str(run_id), rule))


class StatusServicer(s_grpc.StatusServiceServicer):
    def __init__(self, uc: StatusRuleUpdates) -> None:
        self._uc = uc

    async def UpdateStatusRule(
        self, request: s.UpdateStatusRuleRequest, context: Ctx
    ) -> s.UpdateStatusRuleResponse:
        m = request.status_rule
        with field_prefix("status_rule"):
            run_id = cv.parse_id(m.production_run_id, "production_run_id")
        reevaluate = request.reevaluate_history
        if request.update_mask.paths:
            changes = rule_changes(m, request.update_mask)
            with field_prefix("status_rule"):
                rule = await self._uc.update_status_rule(caller(), run_id, changes, reevaluate)
        else:  # no mask: the whole rule, as before masks existed
            with field_prefix("status_rule"):
                rule = _rule_from_pb(m)
            rule = await self._uc.set_status_rule(caller(), run_id, rule, reevaluate)
        return s.UpdateStatusRuleResponse(status_rule=rule_pb(str(run_id), rule))
