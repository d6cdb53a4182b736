"""What users read of processing: current status, status history, location history."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import InvalidArgument
from domain.geo import NearestCity
from domain.instants import check_query_time
from domain.model import GeoPoint
from domain.status import StatusChange, TrackerStatus


class Granularity(enum.Enum):
    RAW = "RAW"
    HOURLY = "HOURLY"
    DAILY = "DAILY"
    AUTO = "AUTO"  # hourly for recent buckets, daily for older ones


@dataclass(frozen=True, slots=True)
class LastReport:
    """The last report that counted for a tracker's status."""

    report_time: datetime
    position: GeoPoint
    horizontal_accuracy_m: int
    nearest_city: NearestCity | None


@dataclass(frozen=True, slots=True)
class CurrentStatus:
    """A tracker's status now; ``status`` None while no report has counted yet."""

    tracker_id: uuid.UUID
    client_id: uuid.UUID
    status: TrackerStatus | None = None
    status_since: datetime | None = None
    location_id: uuid.UUID | None = None
    last_report: LastReport | None = None
    update_time: datetime | None = None
    # the evidence of the change to ``status`` (see ``StatusChange``)
    probability: float | None = None
    evidence_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class TrackerStatusChange:
    tracker_id: uuid.UUID
    change: StatusChange
    position: GeoPoint
    nearest_city: NearestCity | None


@dataclass(frozen=True, slots=True)
class LocationPoint:
    """One raw report or one roll-up bucket of a tracker's location history."""

    tracker_id: uuid.UUID
    granularity: Granularity  # RAW, HOURLY or DAILY
    start_time: datetime  # the report's time, or the bucket's start
    report_count: int
    first_report_time: datetime
    last_report_time: datetime
    position: GeoPoint  # the report's, or the bucket's most accurate report's
    horizontal_accuracy_m: int  # best in the bucket
    nearest_city: NearestCity | None
    confidence: int = 0  # raw reports only
    source: str = ""  # raw reports only: "findmy", "detector" or what a pusher named

    @property
    def end_time(self) -> datetime:
        if self.granularity is Granularity.HOURLY:
            return self.start_time + timedelta(hours=1)
        if self.granularity is Granularity.DAILY:
            return self.start_time + timedelta(days=1)
        return self.start_time


def check_time_range(start: datetime | None, end: datetime | None) -> None:
    """A query's time filter: each bound within the query range, end after start."""
    if start is not None:
        check_query_time(start, "start_time")
    if end is not None:
        check_query_time(end, "end_time")
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
