"""The status engine's rule: DELIVERED > IN_STORAGE > IN_TRANSIT, from the geofences of the
tracker's own production run, with an optional per-run rule against flapping.

Status is a pure function of the tracker's reports in report order (time, then position),
its run's geofences and its run's rule, so replaying the same reports in any arrival order
gives the same history. ``replay`` is that function; the database classifies reports against
geofences in bulk (``classify`` is the same rule for one report, and a test checks the two
agree).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import FieldViolation, InvalidArgument
from domain.geo import distance_m
from domain.model import GeoPoint, LocationKind

DEFAULT_MIN_CONFIDENCE = 2
MAX_MIN_CONSECUTIVE = 1000
MAX_DWELL_S = 7 * 86400


class TrackerStatus(enum.Enum):
    IN_STORAGE = "IN_STORAGE"
    IN_TRANSIT = "IN_TRANSIT"
    DELIVERED = "DELIVERED"


@dataclass(frozen=True, slots=True)
class StatusRule:
    """How a production run turns reports into statuses. The defaults are the plain rule:
    each report with confidence >= 2 decides the status at once, by its position alone."""

    min_consecutive_reports: int = 1
    min_dwell_s: int = 0
    require_accuracy_within_radius: bool = False
    min_confidence: int = DEFAULT_MIN_CONFIDENCE

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.min_consecutive_reports <= MAX_MIN_CONSECUTIVE:
            problems.append(
                FieldViolation("min_consecutive_reports", f"must be 1..{MAX_MIN_CONSECUTIVE}")
            )
        if not 0 <= self.min_dwell_s <= MAX_DWELL_S:
            problems.append(FieldViolation("min_dwell_s", f"must be 0..{MAX_DWELL_S} seconds"))
        if self.min_confidence not in (1, 2, 3):
            problems.append(FieldViolation("min_confidence", "must be 1, 2 or 3"))
        if problems:
            raise InvalidArgument.of(problems)


@dataclass(frozen=True, slots=True, order=True)
class ReportKey:
    """A report's identity within its tracker, and the order reports are replayed in."""

    report_time: datetime
    latitude_e7: int
    longitude_e7: int


@dataclass(frozen=True, slots=True)
class Fence:
    location_id: uuid.UUID
    kind: LocationKind
    center: GeoPoint
    radius_m: float


@dataclass(frozen=True, slots=True)
class Observation:
    """What one report says: the status it points at (None: too imprecise to tell) and the
    geofence it is inside (None: outside all)."""

    status: TrackerStatus | None
    location_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """A report that counts for the status, classified against its run's geofences."""

    key: ReportKey
    observation: Observation
    horizontal_accuracy_m: int
    confidence: int
    nearest_city_id: int | None = None


def classify(
    position: GeoPoint, accuracy_m: int, fences: Sequence[Fence], rule: StatusRule
) -> Observation:
    """DELIVERED if inside a delivery fence, else IN_STORAGE if inside a storage fence, else
    IN_TRANSIT. With ``require_accuracy_within_radius`` a report is inside only if its whole
    accuracy circle is, and one whose circle crosses a fence's edge tells nothing (None)."""
    slack = accuracy_m if rule.require_accuracy_within_radius else 0
    inside: dict[LocationKind, tuple[float, uuid.UUID]] = {}
    near = False
    for f in fences:
        d = distance_m(position, f.center)
        if d + slack <= f.radius_m:
            best = inside.get(f.kind)
            if best is None or (d, f.location_id) < best:
                inside[f.kind] = (d, f.location_id)
        elif d - slack <= f.radius_m:
            near = True
    for kind, status in (
        (LocationKind.DELIVERY, TrackerStatus.DELIVERED),
        (LocationKind.STORAGE, TrackerStatus.IN_STORAGE),
    ):
        if kind in inside:
            return Observation(status, inside[kind][1])
    return Observation(None) if near else Observation(TrackerStatus.IN_TRANSIT)


@dataclass(frozen=True, slots=True)
class RuleState:
    """Where the rule stands after some reports: the status, and the candidate status that
    has been seen since (with how often, since when) but has not yet met the rule."""

    status: TrackerStatus | None = None
    status_since: datetime | None = None
    location_id: uuid.UUID | None = None
    pending: TrackerStatus | None = None
    pending_count: int = 0
    pending_since: datetime | None = None
    pending_location_id: uuid.UUID | None = None

    @classmethod
    def after_change(cls, change: StatusChange) -> RuleState:
        """A change consumes its candidate: right after it, nothing is pending."""
        return cls(change.status, change.key.report_time, change.location_id)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status change, recorded at the report that caused it (its time, not ours)."""

    key: ReportKey
    status: TrackerStatus
    previous: TrackerStatus | None
    location_id: uuid.UUID | None
    horizontal_accuracy_m: int
    confidence: int
    nearest_city_id: int | None = None


def replay(
    state: RuleState, readings: Iterable[Reading], rule: StatusRule
) -> tuple[RuleState, list[StatusChange]]:
    """Apply readings (in key order) to a state; returns the new state and the changes.

    The first reading sets the first status at once. After that, a different status takes
    over when it has been seen in ``min_consecutive_reports`` reports in a row, the first of
    them at least ``min_dwell_s`` before the last; a reading of the current status breaks
    the run. Readings that tell nothing (status None) are skipped.
    """
    changes: list[StatusChange] = []
    dwell = timedelta(seconds=rule.min_dwell_s)
    for r in readings:
        seen = r.observation.status
        if seen is None:
            continue
        t = r.key.report_time
        if seen is state.status:
            if state.pending is not None or (
                state.location_id is None and r.observation.location_id is not None
            ):  # (the common case, nothing to change, makes no new object)
                state = RuleState(
                    state.status, state.status_since, state.location_id or r.observation.location_id
                )
            continue
        if state.status is not None:  # the first reading decides at once
            if state.pending is seen:
                count, since, where = (
                    state.pending_count + 1,
                    state.pending_since,
                    state.pending_location_id,
                )
            else:
                count, since, where = 1, t, r.observation.location_id
            assert since is not None
            if count < rule.min_consecutive_reports or t - since < dwell:
                state = RuleState(
                    state.status, state.status_since, state.location_id, seen, count, since, where
                )
                continue
        change = StatusChange(
            key=r.key,
            status=seen,
            previous=state.status,
            location_id=r.observation.location_id,
            horizontal_accuracy_m=r.horizontal_accuracy_m,
            confidence=r.confidence,
            nearest_city_id=r.nearest_city_id,
        )
        changes.append(change)
        state = RuleState(seen, t, r.observation.location_id)
    return state, changes


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where re-evaluation of a tracker starts: after ``after`` (None: its first report),
    from ``state``; history after ``after`` is replaced."""

    after: ReportKey | None
    state: RuleState
    replaces_history: bool = True  # False: there is no history after ``after`` to replace


def resume_point(
    since: datetime,
    checkpoint: tuple[ReportKey, RuleState] | None,
    last_change_before_since: StatusChange | None,
) -> ResumePoint:
    """New reports from ``since`` on. In order (all after the checkpoint): continue from the
    checkpoint. Late: restart from the last change before them, where nothing was pending,
    so the result is what in-order arrival would have given."""
    if checkpoint is not None and checkpoint[0].report_time < since:
        return ResumePoint(checkpoint[0], checkpoint[1], replaces_history=False)
    if last_change_before_since is not None:
        return ResumePoint(
            last_change_before_since.key, RuleState.after_change(last_change_before_since)
        )
    # No checkpoint: nothing was ever evaluated, so there is no history either.
    return ResumePoint(None, RuleState(), replaces_history=checkpoint is not None)
