"""The status engine's rule: DELIVERED > IN_STORAGE > IN_TRANSIT, from the geofences of the
tracker's own production run, under the run's rule: CONSECUTIVE (each report decides by its
position, optionally only after some reports in a row and a dwell: the plain and the
hysteresis rule) or EVIDENCE (a hidden Markov model weighs each report's position, accuracy
and confidence; the status changes when the new one is probable enough, see
``domain.evidence``).

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

from domain import evidence
from domain.errors import FieldViolation, InvalidArgument
from domain.evidence import Belief, NearFence
from domain.geo import distance_m
from domain.model import GeoPoint, LocationKind

CONFIDENCE_LEVELS = (1, 2, 3)  # a report's confidence, as Find My gives it
DEFAULT_MIN_CONFIDENCE = 2
MAX_MIN_CONSECUTIVE = 1000
MAX_DWELL_S = 7 * 86400
DEFAULT_MIN_PROBABILITY = 0.99
DEFAULT_OUTLIER_SHARE = 0.02


class TrackerStatus(enum.Enum):
    IN_STORAGE = "IN_STORAGE"
    IN_TRANSIT = "IN_TRANSIT"
    DELIVERED = "DELIVERED"


class RuleKind(enum.Enum):
    CONSECUTIVE = "CONSECUTIVE"  # by position; the plain rule, or hysteresis
    EVIDENCE = "EVIDENCE"  # weighs evidence (hidden Markov model)


# The kind of a run that never had a rule set: new runs weigh evidence (on a noisy fleet
# with ground truth, bench/status.py, it is wrong about 100 times less often than the plain
# rule and still tells of a delivery within minutes). Runs that existed before keep a row
# with the plain rule (migration 0012).
DEFAULT_RULE_KIND = RuleKind.EVIDENCE

_KIND_STATUS = {
    LocationKind.DELIVERY: TrackerStatus.DELIVERED,
    LocationKind.STORAGE: TrackerStatus.IN_STORAGE,
}
_STATUS_KIND = {v: k for k, v in _KIND_STATUS.items()}
_PRIORITY = (TrackerStatus.DELIVERED, TrackerStatus.IN_STORAGE, TrackerStatus.IN_TRANSIT)


@dataclass(frozen=True, slots=True)
class StatusRule:
    """How a production run turns reports into statuses. With the CONSECUTIVE defaults, the
    plain rule: each report with confidence >= 2 decides the status at once, by its position
    alone. EVIDENCE uses ``min_probability`` and ``outlier_share`` instead of the count,
    dwell and accuracy settings (which must keep their defaults)."""

    min_consecutive_reports: int = 1
    min_dwell_s: int = 0
    require_accuracy_within_radius: bool = False
    min_confidence: int = DEFAULT_MIN_CONFIDENCE
    kind: RuleKind = RuleKind.CONSECUTIVE
    min_probability: float = DEFAULT_MIN_PROBABILITY
    outlier_share: float = DEFAULT_OUTLIER_SHARE

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.min_consecutive_reports <= MAX_MIN_CONSECUTIVE:
            problems.append(
                FieldViolation("min_consecutive_reports", f"must be 1..{MAX_MIN_CONSECUTIVE}")
            )
        elif self.min_dwell_s > 0 and self.min_consecutive_reports < 2:
            # A dwell runs from the first report of the new status to the last: one report
            # cannot span it, so a dwell needs at least two (said, rather than implied).
            problems.append(
                FieldViolation("min_consecutive_reports", "must be at least 2 with a dwell")
            )
        if not 0 <= self.min_dwell_s <= MAX_DWELL_S:
            problems.append(FieldViolation("min_dwell_s", f"must be 0..{MAX_DWELL_S} seconds"))
        if self.min_confidence not in CONFIDENCE_LEVELS:
            problems.append(FieldViolation("min_confidence", "must be 1, 2 or 3"))
        if not 0.5 <= self.min_probability <= 0.999999:
            problems.append(FieldViolation("min_probability", "must be 0.5..0.999999"))
        if not 0.0 < self.outlier_share <= 0.2:
            problems.append(FieldViolation("outlier_share", "must be above 0 and at most 0.2"))
        if self.kind is RuleKind.EVIDENCE:
            for name, value in (
                ("min_consecutive_reports", self.min_consecutive_reports != 1),
                ("min_dwell_s", self.min_dwell_s != 0),
                ("require_accuracy_within_radius", self.require_accuracy_within_radius),
            ):
                if value:
                    problems.append(FieldViolation(name, "only for CONSECUTIVE rules"))
        if problems:
            raise InvalidArgument.of(problems)

    @classmethod
    def plain(cls) -> StatusRule:
        return cls(kind=RuleKind.CONSECUTIVE)

    @classmethod
    def default(cls) -> StatusRule:
        """The rule of a run that never had one set."""
        return cls(kind=DEFAULT_RULE_KIND)


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
    geofence it is inside (None: outside all); for the EVIDENCE rule also every fence
    within reach (radius + ``evidence.REACH_M``), by location id."""

    status: TrackerStatus | None
    location_id: uuid.UUID | None = None
    near: tuple[NearFence, ...] = ()


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
    within: list[NearFence] = []
    for f in fences:
        d = distance_m(position, f.center)
        if rule.kind is RuleKind.EVIDENCE and d <= f.radius_m + evidence.REACH_M:
            within.append(NearFence(f.location_id, f.kind, f.radius_m, d))
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
            return Observation(status, inside[kind][1], by_id(within))
    return Observation(None if near else TrackerStatus.IN_TRANSIT, None, by_id(within))


def by_id(near: Iterable[NearFence]) -> tuple[NearFence, ...]:
    return tuple(sorted(near, key=lambda f: f.location_id.int))


@dataclass(frozen=True, slots=True)
class RuleState:
    """Where the rule stands after some reports: the status (with the evidence that decided
    it), and for CONSECUTIVE the candidate status that has been seen since (with how often,
    since when) but has not yet met the rule; for EVIDENCE the belief over the hypotheses
    after the report at ``belief_time`` and since when each other status has been
    plausible (``onsets``: DELIVERED, IN_STORAGE, IN_TRANSIT)."""

    status: TrackerStatus | None = None
    status_since: datetime | None = None
    location_id: uuid.UUID | None = None
    pending: TrackerStatus | None = None
    pending_count: int = 0
    pending_since: datetime | None = None
    pending_location_id: uuid.UUID | None = None
    probability: float | None = None
    evidence_since: datetime | None = None
    belief: Belief = ()
    belief_time: datetime | None = None
    onsets: tuple[datetime | None, ...] = (None, None, None)

    @classmethod
    def after_change(cls, change: StatusChange) -> RuleState:
        """A change consumes its candidate: right after it, nothing is pending, and the
        evidence rule starts afresh from the probability that decided (a function of the
        recorded change alone, so a replay can resume at any change)."""
        belief: Belief = ()
        if change.probability is not None:
            kind = _STATUS_KIND.get(change.status)
            belief = evidence.reset(change.location_id, kind, change.probability)
        return cls(
            change.status,
            change.key.report_time,
            change.location_id,
            probability=change.probability,
            evidence_since=change.evidence_since,
            belief=belief,
            belief_time=change.key.report_time if belief else None,
        )


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
    # How sure: the probability of the new status when it was decided (EVIDENCE; None for
    # CONSECUTIVE), and the time of the first report of the evidence that led to it.
    probability: float | None = None
    evidence_since: datetime | None = None


def replay(
    state: RuleState, readings: Iterable[Reading], rule: StatusRule
) -> tuple[RuleState, list[StatusChange]]:
    """Apply readings (in key order) to a state; returns the new state and the changes."""
    if rule.kind is RuleKind.EVIDENCE:
        return _replay_evidence(state, readings, rule)
    return _replay_consecutive(state, readings, rule)


def _replay_consecutive(
    state: RuleState, readings: Iterable[Reading], rule: StatusRule
) -> tuple[RuleState, list[StatusChange]]:
    """A different status (the first one too) takes over when it has been seen in
    ``min_consecutive_reports`` reports in a row, the first of them at least
    ``min_dwell_s`` before the last; a reading of the current status breaks the run.
    Readings that tell nothing (status None) are skipped."""
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
                    state.status,
                    state.status_since,
                    state.location_id or r.observation.location_id,
                    evidence_since=state.evidence_since,
                )
            continue
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
                state.status,
                state.status_since,
                state.location_id,
                seen,
                count,
                since,
                where,
                evidence_since=state.evidence_since,
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
            evidence_since=since,
        )
        changes.append(change)
        state = RuleState.after_change(change)
    return state, changes


def _replay_evidence(
    state: RuleState, readings: Iterable[Reading], rule: StatusRule
) -> tuple[RuleState, list[StatusChange]]:
    """Filter the belief report by report; a status other than the current one (the first
    one too) takes over once its probability reaches ``min_probability``. It is recorded
    at the report that tipped it, with that probability and the first report since which
    the status had stayed at least ``evidence.ONSET_P`` likely."""
    changes: list[StatusChange] = []
    belief, belief_time, onsets = state.belief, state.belief_time, list(state.onsets)
    for r in readings:
        t = r.key.report_time
        near = r.observation.near
        if belief_time is None:
            belief, dt = evidence.initial_belief(near), 0.0
        else:
            dt = (t - belief_time).total_seconds()
        belief = evidence.step(
            belief, near, dt, r.horizontal_accuracy_m, r.confidence, rule.outlier_share
        )
        belief_time = t
        mass, best = _tally(belief)
        top = 0 if mass[0] >= mass[1] and mass[0] >= mass[2] else (1 if mass[1] >= mass[2] else 2)
        current = state.status
        for i in (0, 1, 2):
            if mass[i] < evidence.ONSET_P or _PRIORITY[i] is current:
                onsets[i] = None
            elif onsets[i] is None:
                onsets[i] = t
        candidate = _PRIORITY[top]
        if candidate is state.status or mass[top] < rule.min_probability:
            continue
        change = StatusChange(
            key=r.key,
            status=candidate,
            previous=state.status,
            location_id=best[top],
            horizontal_accuracy_m=r.horizontal_accuracy_m,
            confidence=r.confidence,
            nearest_city_id=r.nearest_city_id,
            probability=mass[top],
            evidence_since=onsets[top] or t,
        )
        changes.append(change)
        state = RuleState.after_change(change)
        belief, belief_time, onsets = state.belief, state.belief_time, [None, None, None]
    state = RuleState(
        state.status,
        state.status_since,
        state.location_id,
        probability=state.probability,
        evidence_since=state.evidence_since,
        belief=belief,
        belief_time=belief_time,
        onsets=tuple(onsets),
    )
    return state, changes


def _tally(belief: Belief) -> tuple[list[float], list[uuid.UUID | None]]:
    """Probability of each status (DELIVERED, IN_STORAGE, IN_TRANSIT) and its most probable
    fence (ties: the smallest id, as the belief is sorted by id)."""
    mass = [0.0, 0.0, 0.0]
    best: list[uuid.UUID | None] = [None, None, None]
    top = [-1.0, -1.0]
    for h, kind, p in belief:
        if kind is None:
            if h is None:
                mass[2] = p
            continue  # evidence.ELSEWHERE: no status yet, keeps every status below 1 - p
        i = 0 if kind is LocationKind.DELIVERY else 1
        mass[i] += p
        if p > top[i]:
            top[i], best[i] = p, h
    return mass, best


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
