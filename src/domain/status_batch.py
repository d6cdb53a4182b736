"""The status step of many trackers at once (issue 12, speed), column-wise end to end: the
readings of a batch (``ReadingColumns``), the trackers' starts (``StateColumns``: rule,
resume key and state, the evidence rule's belief in fixed slots) and the results
(``ResultColumns``: new states and the changes) are numpy columns, no object per tracker or
report. ``replay_columns`` gives for every tracker exactly what ``domain.status.replay``
gives for its readings (``replay_batch`` is the same over objects).

The pure replay stays the reference. ``replay_columns`` runs the common cases report by
report across all trackers at once, with the same float operations in the same order as the
pure code (``math.erfc``/``math.expm1`` and Python's ``sum`` of three terms element by
element, the rest IEEE arithmetic that numpy does exactly as Python does), so its results
are bit for bit the pure replay's:

- CONSECUTIVE rules without hysteresis (1 report, no dwell), from a state with nothing
  pending and no evidence-rule leftovers;
- EVIDENCE rules while the belief is "settled": in transit, possibly ``evidence.ELSEWHERE``
  (before the first status) and at most one fence, and each report near no fence or near
  that fence only (near any one fence if the belief holds none); a fresh tracker whose
  first report is near at most one fence (its first belief: transit, ELSEWHERE and that
  fence). That is every report of a tracker at rest, travelling or delivered, and the
  first status of one first seen near a fence.

A tracker that leaves these cases at any report (reports near two fences, moving from one
fence to another, a hysteresis rule, a start given as objects, ...) is replayed by
``domain.status.replay`` from its start instead, and its outcome put back into the columns.
Property tests check the batch against the pure replay, restarts from a recorded change
included.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from typing import Any

import numpy as np
import numpy.typing as npt

from domain import evidence
from domain.evidence import ELSEWHERE, NearFence
from domain.model import LocationKind
from domain.status import (
    Observation,
    Reading,
    ReportKey,
    RuleKind,
    RuleState,
    StatusChange,
    StatusRule,
    TrackerStatus,
    replay,
)

I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

# Times are microseconds since PostgreSQL's epoch (as its binary protocol sends them).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
NO_TIME = np.iinfo(np.int64).min  # "None" in a time column
# Status codes in the order of domain.status._PRIORITY (-1: none / tells nothing).
STATUSES = (TrackerStatus.DELIVERED, TrackerStatus.IN_STORAGE, TrackerStatus.IN_TRANSIT)
_CODE = {s: i for i, s in enumerate(STATUSES)}
KINDS = (LocationKind.DELIVERY, LocationKind.STORAGE)  # fence kind codes (-1: unknown)
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}


def to_us(t: datetime) -> int:
    d = t - EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, eq=False)
class ReadingColumns:
    """The readings of a batch of trackers, tracker by tracker in key order: tracker ``i``
    (``trackers[i]``) has rows ``start[i]:start[i + 1]``. Per row: its key, accuracy,
    confidence, city (-1: none), what it says under its run's rule (``status``: a code of
    ``STATUSES``, -1 tells nothing; ``location``: a fence index, -1 none) and, for EVIDENCE
    rules, the fences within reach (rows ``near_start[r]:near_start[r + 1]`` of
    ``near_fence``/``near_d``, by fence id). Fences are indexed into ``fence_ids``, with their
    kind code (-1: unknown, only named as a location) and radius."""

    trackers: tuple[uuid.UUID, ...]
    start: I64
    time_us: I64
    latitude_e7: I64
    longitude_e7: I64
    accuracy_m: I64
    confidence: I64
    city: I64
    status: I8
    location: I32
    near_start: I64
    near_fence: I32
    near_d: F64
    fence_ids: tuple[uuid.UUID, ...]
    fence_kind: I8
    fence_radius: F64

    def __len__(self) -> int:
        return len(self.time_us)

    def count(self, i: int) -> int:
        return int(self.start[i + 1] - self.start[i])

    def reading(self, r: int) -> Reading:
        """Row ``r`` as the pure replay's ``Reading``."""
        return self.rows([r])[0]

    def readings(self, i: int) -> list[Reading]:
        return self.rows(range(int(self.start[i]), int(self.start[i + 1])))

    def rows(self, rows: Sequence[int] | I64) -> list[Reading]:
        """Rows as the pure replay's ``Reading`` objects (gathered column by column: one
        numpy call per column, not per value)."""
        idx = np.asarray(rows, dtype=np.int64)
        if not len(idx):
            return []
        ns, ne = self.near_start[idx], self.near_start[idx + 1]
        lo, hi = int(ns.min()), int(ne.max())
        ns, ne = (ns - lo).tolist(), (ne - lo).tolist()
        fences = self._fences
        near_f, near_d = self.near_fence[lo:hi].tolist(), self.near_d[lo:hi].tolist()
        ids = self.fence_ids
        return [
            Reading(
                ReportKey(from_us(t), lat, lon),
                Observation(
                    STATUSES[code] if code >= 0 else None,
                    ids[loc] if loc >= 0 else None,
                    tuple(fences[near_f[x]](near_d[x]) for x in range(a, b)) if b > a else (),
                ),
                acc,
                conf,
                city if city >= 0 else None,
            )
            for t, lat, lon, acc, conf, city, code, loc, a, b in zip(
                self.time_us[idx].tolist(),
                self.latitude_e7[idx].tolist(),
                self.longitude_e7[idx].tolist(),
                self.accuracy_m[idx].tolist(),
                self.confidence[idx].tolist(),
                self.city[idx].tolist(),
                self.status[idx].tolist(),
                self.location[idx].tolist(),
                ns,
                ne,
                strict=True,
            )
        ]

    @cached_property
    def _fences(self) -> list[Any]:
        kinds, radii = self.fence_kind.tolist(), self.fence_radius.tolist()
        return [
            partial(NearFence, i, KINDS[k], r) if k >= 0 else None
            for i, k, r in zip(self.fence_ids, kinds, radii, strict=True)
        ]

    def as_dict(self) -> dict[uuid.UUID, list[Reading]]:
        return {t: self.readings(i) for i, t in enumerate(self.trackers) if self.count(i)}

    @classmethod
    def from_readings(
        cls, trackers: Sequence[uuid.UUID], readings: Mapping[uuid.UUID, Sequence[Reading]]
    ) -> ReadingColumns:
        """The columns of readings given as objects (fakes and tests)."""
        fences: dict[uuid.UUID, int] = {}
        kind: list[int] = []
        radius: list[float] = []

        def fence(i: uuid.UUID, k: LocationKind | None = None, r: float = math.nan) -> int:
            n = fences.get(i)
            if n is None:
                n = fences[i] = len(kind)
                kind.append(-1)
                radius.append(math.nan)
            if k is not None:
                kind[n], radius[n] = _KIND_CODE[k], r
            return n

        start = [0]
        rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        near_start = [0]
        near_fence: list[int] = []
        near_d: list[float] = []
        for t in trackers:
            for r in readings.get(t, ()):
                o = r.observation
                for f in o.near:
                    near_fence.append(fence(f.location_id, f.kind, f.radius_m))
                    near_d.append(f.distance_m)
                near_start.append(len(near_fence))
                rows.append(
                    (
                        to_us(r.key.report_time),
                        r.key.latitude_e7,
                        r.key.longitude_e7,
                        r.horizontal_accuracy_m,
                        r.confidence,
                        -1 if r.nearest_city_id is None else r.nearest_city_id,
                        -1 if o.status is None else _CODE[o.status],
                        -1 if o.location_id is None else fence(o.location_id),
                    )
                )
            start.append(len(rows))
        cols = np.array(rows, dtype=np.int64).reshape(-1, 8)
        return cls(
            trackers=tuple(trackers),
            start=np.array(start, dtype=np.int64),
            time_us=cols[:, 0].copy(),
            latitude_e7=cols[:, 1].copy(),
            longitude_e7=cols[:, 2].copy(),
            accuracy_m=cols[:, 3].copy(),
            confidence=cols[:, 4].copy(),
            city=cols[:, 5].copy(),
            status=cols[:, 6].astype(np.int8),
            location=cols[:, 7].astype(np.int32),
            near_start=np.array(near_start, dtype=np.int64),
            near_fence=np.array(near_fence, dtype=np.int32),
            near_d=np.array(near_d, dtype=np.float64),
            fence_ids=tuple(fences),
            fence_kind=np.array(kind, dtype=np.int8),
            fence_radius=np.array(radius, dtype=np.float64),
        )


Outcome = tuple[RuleState, list[StatusChange], Reading | None]

_KIND_OF = (*KINDS, None)  # fence kind code -> kind (-1: None)
_STATUS_OF = (*STATUSES, None)  # status code -> status (-1: None)


def _time(us: int) -> datetime | None:
    return None if us == NO_TIME else from_us(us)


def _us(t: datetime | None) -> int:
    return NO_TIME if t is None else to_us(t)


@dataclass(eq=False)
class States:
    """Rule states of a batch of trackers as columns (``RuleState`` field by field): status
    codes of ``STATUSES`` (-1: None), times in microseconds (``NO_TIME``: None), locations
    as indices into a list of ids kept beside (-1: None), probabilities NaN for None. The
    evidence rule's belief in fixed slots: ``transit`` (NaN: no belief at all), then
    ``elsewhere`` (``evidence.ELSEWHERE``; NaN: not in the belief) and one ``fence`` (-1:
    none) with its kind code and probability; a belief of another shape does not fit."""

    status: I64
    since: I64
    location: I64
    pending: I64
    pending_count: I64
    pending_since: I64
    pending_location: I64
    probability: F64
    evidence_since: I64
    transit: F64
    elsewhere: F64
    fence: I64
    fence_kind: I64
    fence_p: F64
    belief_time: I64
    onsets: I64  # (3, n): DELIVERED, IN_STORAGE, IN_TRANSIT

    @classmethod
    def empty(cls, n: int) -> States:
        """``n`` fresh states (``RuleState()``)."""

        def i(v: int) -> I64:
            return np.full(n, v, dtype=np.int64)

        def f() -> F64:
            return np.full(n, np.nan)

        return cls(
            i(-1), i(NO_TIME), i(-1), i(-1), i(0), i(NO_TIME), i(-1), f(), i(NO_TIME), f(),
            f(), i(-1), i(-1), f(), i(NO_TIME), np.full((3, n), NO_TIME, dtype=np.int64),
        )  # fmt: skip

    def copy(self) -> States:
        return States(*(getattr(self, k).copy() for k in self.__dataclass_fields__))

    def get(self, i: int, ids: Sequence[uuid.UUID]) -> RuleState:
        """State ``i`` as a ``RuleState`` (its belief from the slots)."""

        def loc(n: int) -> uuid.UUID | None:
            return None if n < 0 else ids[n]

        belief: evidence.Belief = ()
        transit = float(self.transit[i])
        if transit == transit:
            belief = ((None, None, transit),)
            e = float(self.elsewhere[i])
            if e == e:
                belief += ((ELSEWHERE, None, e),)
            f = int(self.fence[i])
            if f >= 0:
                belief += ((ids[f], _KIND_OF[int(self.fence_kind[i])], float(self.fence_p[i])),)
        p = float(self.probability[i])
        return RuleState(
            status=_STATUS_OF[int(self.status[i])],
            status_since=_time(int(self.since[i])),
            location_id=loc(int(self.location[i])),
            pending=_STATUS_OF[int(self.pending[i])],
            pending_count=int(self.pending_count[i]),
            pending_since=_time(int(self.pending_since[i])),
            pending_location_id=loc(int(self.pending_location[i])),
            probability=None if p != p else p,
            evidence_since=_time(int(self.evidence_since[i])),
            belief=belief,
            belief_time=_time(int(self.belief_time[i])),
            onsets=tuple(_time(int(self.onsets[x, i])) for x in range(3)),
        )

    def put(self, i: int, s: RuleState, ids: _Ids) -> bool:
        """Set state ``i`` to ``s``; False if its belief does not fit the slots (the belief
        columns then say nothing)."""
        self.status[i] = -1 if s.status is None else _CODE[s.status]
        self.since[i] = _us(s.status_since)
        self.location[i] = ids.index(s.location_id)
        self.pending[i] = -1 if s.pending is None else _CODE[s.pending]
        self.pending_count[i] = s.pending_count
        self.pending_since[i] = _us(s.pending_since)
        self.pending_location[i] = ids.index(s.pending_location_id)
        self.probability[i] = math.nan if s.probability is None else s.probability
        self.evidence_since[i] = _us(s.evidence_since)
        self.belief_time[i] = _us(s.belief_time)
        for x in range(3):
            self.onsets[x, i] = _us(s.onsets[x])
        self.transit[i] = self.elsewhere[i] = self.fence_p[i] = math.nan
        self.fence[i] = self.fence_kind[i] = -1
        if not s.belief:
            return True
        slots = belief_slots(s.belief)
        if slots is None:
            return False
        self.transit[i], elsewhere, fence = slots
        if elsewhere is not None:
            self.elsewhere[i] = elsewhere
        if fence is not None:
            h, kind, p = fence
            self.fence[i], self.fence_kind[i], self.fence_p[i] = ids.index(h), _KIND_CODE[kind], p
        return True


def belief_slots(
    belief: evidence.Belief,
) -> tuple[float, float | None, tuple[uuid.UUID, LocationKind, float] | None] | None:
    """A non-empty belief in the slots the columns (and ``tracker_status``) keep: transit,
    ``ELSEWHERE`` (None: not in it) and at most one fence (None: none); None if it does not
    fit them (transit not first, or more than one fence)."""
    (h, kind, transit), rest = belief[0], list(belief[1:])
    if h is not None or kind is not None:
        return None
    elsewhere = None
    if rest and rest[0][0] == ELSEWHERE and rest[0][1] is None:
        elsewhere = rest.pop(0)[2]
    fence = None
    if rest:
        h, kind, p = rest.pop(0)
        if h is None or h == ELSEWHERE or kind is None:
            return None
        fence = (h, kind, p)
    return None if rest else (transit, elsewhere, fence)


@dataclass(eq=False)
class StateColumns:
    """Where each tracker of a batch resumes (its state after the key ``after_*``; history
    after it is replaced if ``replaces``) under which rule, as columns. A tracker whose start
    does not fit the columns (``general``) has it as objects in ``objects`` instead (the
    adapter leaves those for ``domain.status.resume_point`` over the full inputs)."""

    trackers: tuple[uuid.UUID, ...]
    ids: list[uuid.UUID]  # the locations the states index
    states: States
    evidence: B
    min_count: I64
    dwell_s: I64
    accuracy_rule: B
    min_confidence: I64
    min_probability: F64
    outlier_share: F64
    after_us: I64  # NO_TIME: from the first report
    after_lat: I64
    after_lon: I64
    replaces: B
    general: B
    objects: dict[int, tuple[RuleState, StatusRule]]
    # each tracker's production run (an index into run_ids; -1: not known here), whose rule
    # and fences apply: the readings need not look them up again
    run: I64 | None = None
    run_ids: list[uuid.UUID] = field(default_factory=list)
    # whether each tracker had a stored checkpoint when its start was read (None: not
    # known): the adapter updates those in place and inserts the others
    stored: B | None = None

    def __len__(self) -> int:
        return len(self.trackers)

    @classmethod
    def of(
        cls,
        trackers: Sequence[uuid.UUID],
        starts: Sequence[tuple[RuleState, StatusRule]],
        after: Sequence[ReportKey | None] | None = None,
        replaces: Sequence[bool] | None = None,
    ) -> StateColumns:
        """The columns of starts given as objects (those whose belief does not fit stay
        objects)."""
        n = len(trackers)
        out = cls.fresh(trackers)
        ids = _Ids(())
        for i, (state, rule) in enumerate(starts):
            out.set_rule(i, rule)
            if not out.states.put(i, state, ids):
                out.general[i] = True
                out.objects[i] = (state, rule)
        out.ids = ids.ids
        for i, k in enumerate(after or [None] * n):
            if k is not None:
                out.after_us[i] = to_us(k.report_time)
                out.after_lat[i], out.after_lon[i] = k.latitude_e7, k.longitude_e7
        if replaces is not None:
            out.replaces[:] = replaces
        return out

    @classmethod
    def fresh(cls, trackers: Sequence[uuid.UUID]) -> StateColumns:
        """Fresh states under the default rule (to be filled in)."""
        n = len(trackers)
        d = StatusRule.default()
        return cls(
            trackers=tuple(trackers),
            ids=[],
            states=States.empty(n),
            evidence=np.full(n, d.kind is RuleKind.EVIDENCE),
            min_count=np.full(n, d.min_consecutive_reports, dtype=np.int64),
            dwell_s=np.full(n, d.min_dwell_s, dtype=np.int64),
            accuracy_rule=np.full(n, d.require_accuracy_within_radius),
            min_confidence=np.full(n, d.min_confidence, dtype=np.int64),
            min_probability=np.full(n, d.min_probability),
            outlier_share=np.full(n, d.outlier_share),
            after_us=np.full(n, NO_TIME, dtype=np.int64),
            after_lat=np.full(n, np.iinfo(np.int32).min, dtype=np.int64),
            after_lon=np.full(n, np.iinfo(np.int32).min, dtype=np.int64),
            replaces=np.zeros(n, dtype=np.bool_),
            general=np.zeros(n, dtype=np.bool_),
            objects={},
        )

    def set_rule(self, i: int, rule: StatusRule) -> None:
        self.evidence[i] = rule.kind is RuleKind.EVIDENCE
        self.min_count[i] = rule.min_consecutive_reports
        self.dwell_s[i] = rule.min_dwell_s
        self.accuracy_rule[i] = rule.require_accuracy_within_radius
        self.min_confidence[i] = rule.min_confidence
        self.min_probability[i] = rule.min_probability
        self.outlier_share[i] = rule.outlier_share

    def set_general(
        self, i: int, after: ReportKey | None, replaces: bool, state: RuleState, rule: StatusRule
    ) -> None:
        """Tracker ``i`` resumes from objects (``domain.status.resume_point``)."""
        self.general[i] = True
        self.objects[i] = (state, rule)
        self.set_rule(i, rule)
        self.after_us[i] = NO_TIME if after is None else to_us(after.report_time)
        self.after_lat[i] = np.iinfo(np.int32).min if after is None else after.latitude_e7
        self.after_lon[i] = np.iinfo(np.int32).min if after is None else after.longitude_e7
        self.replaces[i] = replaces

    def unresolved(self) -> list[int]:
        """The trackers flagged ``general`` whose start is not given yet."""
        return [i for i in np.flatnonzero(self.general).tolist() if i not in self.objects]

    def after(self, i: int) -> ReportKey | None:
        t = int(self.after_us[i])
        if t == NO_TIME:
            return None
        return ReportKey(from_us(t), int(self.after_lat[i]), int(self.after_lon[i]))

    def rule(self, i: int) -> StatusRule:
        if i in self.objects:
            return self.objects[i][1]
        return StatusRule(
            int(self.min_count[i]),
            int(self.dwell_s[i]),
            bool(self.accuracy_rule[i]),
            int(self.min_confidence[i]),
            RuleKind.EVIDENCE if self.evidence[i] else RuleKind.CONSECUTIVE,
            float(self.min_probability[i]),
            float(self.outlier_share[i]),
        )


@dataclass(eq=False)
class ResultColumns:
    """What the status step gives for a batch, as columns, tracker by tracker as in its
    ``ReadingColumns``: the new state (``states``, locations indexing ``ids``; a belief that
    does not fit the slots in ``wide``), the row of its last reading (-1: none, nothing to
    save) and its changes (``change_*``, by tracker and row; each at a reading row, its key,
    accuracy, confidence and city that row's)."""

    ids: list[uuid.UUID]
    states: States
    wide: dict[int, evidence.Belief]
    last: I64
    change_tracker: I64
    change_row: I64
    change_status: I64
    change_previous: I64
    change_location: I64
    change_probability: F64
    change_evidence_since: I64

    @property
    def change_count(self) -> int:
        return len(self.change_tracker)

    def outcomes(self, c: ReadingColumns) -> list[Outcome]:
        """As the pure replay's objects (tests and fakes)."""
        out: list[Outcome] = []
        per: dict[int, list[StatusChange]] = {}
        for j, r, st, pr, lo, p, es in zip(
            *(
                x.tolist()
                for x in (
                    self.change_tracker, self.change_row, self.change_status,
                    self.change_previous, self.change_location, self.change_probability,
                    self.change_evidence_since,
                )
            ),
            strict=True,
        ):  # fmt: skip
            at = from_us(int(c.time_us[r]))
            per.setdefault(j, []).append(
                StatusChange(
                    key=ReportKey(at, int(c.latitude_e7[r]), int(c.longitude_e7[r])),
                    status=STATUSES[st],
                    previous=_STATUS_OF[pr],
                    location_id=None if lo < 0 else self.ids[lo],
                    horizontal_accuracy_m=int(c.accuracy_m[r]),
                    confidence=int(c.confidence[r]),
                    nearest_city_id=None if c.city[r] < 0 else int(c.city[r]),
                    probability=None if p != p else p,
                    evidence_since=from_us(es),
                )
            )
        for i in range(len(self.last)):
            state = self.states.get(i, self.ids)
            if i in self.wide:
                state = RuleState(
                    state.status,
                    state.status_since,
                    state.location_id,
                    state.pending,
                    state.pending_count,
                    state.pending_since,
                    state.pending_location_id,
                    state.probability,
                    state.evidence_since,
                    self.wide[i],
                    state.belief_time,
                    state.onsets,
                )
            last = int(self.last[i])
            out.append((state, per.get(i, []), c.reading(last) if last >= 0 else None))
        return out


def replay_batch(
    starts: Sequence[tuple[RuleState, StatusRule]],
    columns: ReadingColumns,
    stats: dict[str, int] | None = None,
) -> list[Outcome]:
    """For tracker ``i`` of ``columns``, from ``starts[i]`` (its resume state and rule):
    ``domain.status.replay`` of its readings and its last reading (``replay_columns`` over
    objects)."""
    state = StateColumns.of(columns.trackers, starts)
    return replay_columns(state, columns, stats).outcomes(columns)


class _Changes:
    def __init__(self) -> None:
        self.parts: list[tuple[Any, ...]] = []

    def add(self, j: I64, r: I64, st: I64, pr: I64, lo: I64, p: F64, es: I64) -> None:
        self.parts.append((j, r, st, pr, lo, p, es))


def replay_columns(
    state: StateColumns, c: ReadingColumns, stats: dict[str, int] | None = None
) -> ResultColumns:
    """The status step of a batch: for tracker ``i``, ``domain.status.replay`` from its start
    in ``state`` over its readings in ``c`` (the same trackers in the same order), bit for
    bit. The plain rule and the evidence rule's settled beliefs (see the module's docstring)
    go report by report across all trackers at once; the rest tracker by tracker through
    the pure replay. ``stats`` (if given) counts the trackers done in bulk (``bulk``) and one
    by one (``pure``)."""
    n = len(c.trackers)
    assert len(state) == n
    assert state.trackers == c.trackers
    assert not state.unresolved(), "general starts must be given as objects"
    ids = _Ids(c.fence_ids)
    # the states' locations into the batch's index (the readings' fences first)
    to = np.array([ids.index(u) for u in state.ids] + [-1], dtype=np.int64)
    s = state.states.copy()
    for name in ("location", "pending_location", "fence"):
        setattr(s, name, to[getattr(s, name)])
    none = np.zeros(0, dtype=np.int64)
    res = ResultColumns(
        ids=ids.ids,
        states=s.copy(),
        wide={},
        last=np.where(np.diff(c.start) > 0, c.start[1:] - 1, -1),
        change_tracker=none,
        change_row=none,
        change_status=none,
        change_previous=none,
        change_location=none,
        change_probability=np.zeros(0),
        change_evidence_since=none,
    )
    counts = np.diff(c.start)
    pending_free = (
        (s.pending < 0)
        & (s.pending_count == 0)
        & (s.pending_since == NO_TIME)
        & (s.pending_location < 0)
    )
    no_belief = np.isnan(s.transit) & (s.belief_time == NO_TIME)
    clean = pending_free & np.isnan(s.probability) & no_belief & (s.onsets == NO_TIME).all(axis=0)
    fresh = clean & (s.status < 0) & (s.since == NO_TIME) & (s.location < 0)
    fresh &= s.evidence_since == NO_TIME
    settled = pending_free & ~np.isnan(s.transit) & (s.belief_time != NO_TIME)
    usable = ~state.general & (counts > 0)
    plain = usable & ~state.evidence & (state.min_count == 1) & (state.dwell_s == 0) & clean
    evid = usable & state.evidence & (fresh | settled)
    ch = _Changes()
    fallback = np.ones(n, dtype=np.bool_)
    if plain.any():
        fallback[_plain(np.flatnonzero(plain), s, c, res, ch)] = False
    if evid.any():
        fallback[_evidence(np.flatnonzero(evid), s, state, c, res, ch)] = False
    if stats is not None:
        stats["pure"] = stats.get("pure", 0) + int(fallback.sum())
        stats["bulk"] = stats.get("bulk", 0) + n - int(fallback.sum())
    pure = np.flatnonzero(fallback)
    lo, hi = c.start[pure], c.start[pure + 1]
    every = c.rows(_ranges(lo, hi))
    at = 0
    for i, k, first in zip(pure.tolist(), (hi - lo).tolist(), lo.tolist(), strict=True):
        rs, at = every[at : at + k], at + k
        if i in state.objects:
            start, rule = state.objects[i]
        else:
            start, rule = s.get(i, ids.ids), state.rule(i)
        new, changes = replay(start, rs, rule)
        if not res.states.put(i, new, ids):
            res.wide[i] = new.belief
        if changes:
            row = {r.key: first + x for x, r in enumerate(rs)}
            ch.add(
                np.full(len(changes), i, dtype=np.int64),
                np.array([row[x.key] for x in changes], dtype=np.int64),
                np.array([_CODE[x.status] for x in changes], dtype=np.int64),
                np.array([-1 if x.previous is None else _CODE[x.previous] for x in changes]),
                np.array([ids.index(x.location_id) for x in changes], dtype=np.int64),
                np.array([math.nan if x.probability is None else x.probability for x in changes]),
                np.array([_us(x.evidence_since) for x in changes], dtype=np.int64),
            )
    res.ids = ids.ids
    if ch.parts:
        cols = [np.concatenate(x) for x in zip(*ch.parts, strict=True)]
        o = np.lexsort((cols[1], cols[0]))
        i64 = [x[o].astype(np.int64) if n != 5 else x for n, x in enumerate(cols)]
        res.change_tracker, res.change_row, res.change_status = i64[0], i64[1], i64[2]
        res.change_previous, res.change_location = i64[3], i64[4]
        res.change_probability = cols[5][o].astype(np.float64)
        res.change_evidence_since = i64[6]
    return res


def _ranges(lo: I64, hi: I64) -> I64:
    """The concatenation of ``range(lo[i], hi[i])``."""
    width = hi - lo
    return np.repeat(lo - (np.cumsum(width) - width), width) + np.arange(int(width.sum()))


class _Ids:
    """Location ids of the batch and of the states, by index (-1: None)."""

    def __init__(self, fence_ids: Sequence[uuid.UUID]) -> None:
        self.ids: list[uuid.UUID] = list(fence_ids)
        self._index = {f.int: n for n, f in enumerate(self.ids)}  # (ints hash in C)

    def index(self, i: uuid.UUID | None) -> int:
        if i is None:
            return -1
        n = self._index.get(i.int)
        if n is None:
            n = self._index[i.int] = len(self.ids)
            self.ids.append(i)
        return n


def _plain(which: I64, s: States, c: ReadingColumns, res: ResultColumns, ch: _Changes) -> I64:
    """CONSECUTIVE, 1 report, no dwell, from a clean state: every reading that tells a
    status other than the current one changes it at once; one of the same status fills in
    a missing location."""
    status, since = s.status[which].copy(), s.since[which].copy()
    loc, ev_since = s.location[which].copy(), s.evidence_since[which].copy()
    first = c.start[which]
    count = c.start[which + 1] - first
    for k in range(int(count.max())):
        live = np.flatnonzero(count > k)
        rows = first[live] + k
        seen = c.status[rows].astype(np.int64)
        obs_loc = c.location[rows].astype(np.int64)
        tells = seen >= 0
        cur = status[live]
        same = tells & (seen == cur)
        fill = same & (loc[live] < 0) & (obs_loc >= 0)
        loc[live[fill]] = obs_loc[fill]
        new = tells & ~same
        if new.any():
            jj, rr = live[new], rows[new]
            t = c.time_us[rr]
            ch.add(which[jj], rr, seen[new], cur[new], obs_loc[new], np.full(len(jj), np.nan), t)
            status[jj], since[jj], loc[jj], ev_since[jj] = seen[new], t, obs_loc[new], t
    # (a clean state has no other fields, before and after)
    r = res.states
    r.status[which], r.since[which], r.location[which] = status, since, loc
    r.evidence_since[which] = ev_since
    return which


def _map(f: Any, x: F64) -> F64:
    """``f`` (a ``math`` function) element by element: the pure replay's own results."""
    return np.fromiter(map(f, x.tolist()), dtype=np.float64, count=len(x))


def _sum3(a: F64, b: F64, c: F64) -> F64:
    """Python's ``sum`` of three floats, element by element (its own rounding, whichever
    way the running Python sums)."""
    return np.fromiter(
        map(sum, zip(a.tolist(), b.tolist(), c.tolist(), strict=True)),
        dtype=np.float64,
        count=len(a),
    )


def _evidence(
    which: I64,
    s: States,
    state: StateColumns,
    c: ReadingColumns,
    res: ResultColumns,
    ch: _Changes,
) -> I64:
    """The evidence rule while beliefs are settled: in transit, possibly ``ELSEWHERE``
    (before the first status) and at most one fence, each report near no fence or near that
    fence only (near one fence if the belief has none; a fresh tracker's first report near
    at most one fence). Returns the trackers done (the others left for the pure replay)."""
    m = len(which)
    pa, pe = s.transit[which].copy(), s.elsewhere[which].copy()
    pb, hb, hk = s.fence_p[which].copy(), s.fence[which].copy(), s.fence_kind[which].copy()
    btime, onsets = s.belief_time[which].copy(), s.onsets[:, which].copy()
    status, since, loc = s.status[which].copy(), s.since[which].copy(), s.location[which].copy()
    prob, ev_since = s.probability[which].copy(), s.evidence_since[which].copy()
    min_p, share_o = state.min_probability[which], state.outlier_share[which]
    fresh = np.isnan(pa)
    # the batch's fence indices are the first in the index, so fence tables index by them
    fkind = c.fence_kind.astype(np.int64)
    frad = c.fence_radius
    first = c.start[which]
    count = c.start[which + 1] - first
    ok = np.ones(m, dtype=np.bool_)
    found: list[tuple[Any, ...]] = []
    factor = np.array([4.0, 4.0, 2.0, 1.0])  # CONFIDENCE_OUTLIER_FACTOR, 4.0 otherwise
    assert evidence.CONFIDENCE_OUTLIER_FACTOR == {1: 4.0, 2: 2.0, 3: 1.0}
    for k in range(int(count.max())):
        live = np.flatnonzero((count > k) & ok)
        if not len(live):
            break
        rows = first[live] + k
        nn = c.near_start[rows + 1] - c.near_start[rows]
        one = nn == 1
        nf = np.full(len(rows), -1, dtype=np.int64)
        nf[one] = c.near_fence[c.near_start[rows[one]]]
        t = c.time_us[rows]
        if k == 0 and fresh.any():
            # evidence.initial_belief(near): transit, ELSEWHERE and the fence near the first
            # reading (if one), all alike; the first step has dt = 0
            f0 = fresh[live]
            ok[live[f0 & (nn > 1)]] = False
            s0 = f0 & (nn <= 1)
            j0, near0 = live[s0], nf[s0]
            p0 = np.where(near0 >= 0, 1.0 / 3, 1.0 / 2)
            pa[j0], pe[j0] = p0, p0
            pb[j0] = np.where(near0 >= 0, p0, np.nan)
            hb[j0] = near0
            hk[j0] = np.where(near0 >= 0, fkind[near0], -1) if len(fkind) else -1
            btime[j0] = t[s0]
            keep_ = ~f0 | (nn <= 1)
            live, rows, nn, nf, t = live[keep_], rows[keep_], nn[keep_], nf[keep_], t[keep_]
        h = hb[live]
        fits = (nn == 0) | ((nn == 1) & ((h < 0) | (nf == h)))
        ok[live[~fits]] = False
        live, rows, nn, nf, h, t = live[fits], rows[fits], nn[fits], nf[fits], h[fits], t[fits]
        has_e_all = ~np.isnan(pe[live])
        # the step (not for a belief in transit only, far from every fence)
        stepping = has_e_all | (h >= 0) | (nn == 1)
        sj, sr = live[stepping], rows[stepping]
        if len(sj):
            near = nn[stepping] == 1
            held = h[stepping] >= 0
            has_e = has_e_all[stepping]
            has_f = held | near
            f = np.where(held, h[stepping], nf[stepping])
            joined = fkind[np.where(near, f, 0)] if len(fkind) else np.full(len(sj), -1)
            kind = np.where(held, hk[sj], np.where(near, joined, -1))
            transit = pa[sj]
            p = np.where(held, pb[sj], 0.0)  # a fence that joins starts at 0
            e = np.where(has_e, pe[sj], 0.0)
            dt = (t[stepping] - btime[sj]) / 1e6
            moving = dt > 0
            # motion: ELSEWHERE (a storage-like stay) first, then the fence, into transit;
            # then transit near the fence enters it
            dwell = np.where(kind == 0, evidence.DELIVERED_DWELL_S, evidence.STORAGE_DWELL_S)
            out_f = p * -_map(math.expm1, -dt / dwell)
            out_e = np.zeros(len(sj))
            if has_e.any():
                out_e[has_e] = e[has_e] * -_map(math.expm1, -dt[has_e] / evidence.STORAGE_DWELL_S)
            e_enter = -_map(math.expm1, -dt / evidence.ENTER_S)
            p = np.where(moving, p - out_f, p)
            e = np.where(moving, e - out_e, e)
            left = np.where(has_e, out_e + out_f, out_f)
            transit = np.where(moving, transit + left, transit)
            moved = transit * e_enter
            enter = moving & near
            p = np.where(enter, p + moved, p)
            transit = np.where(enter, transit - moved, transit)
            # the report's likelihood under each hypothesis
            acc = c.accuracy_m[sr].astype(np.float64)
            sigma = np.maximum(acc / evidence.ACCURACY_SIGMAS, evidence.MIN_SIGMA_M)
            conf = c.confidence[sr]
            fac = factor[np.where((conf >= 1) & (conf <= 3), conf, 0)]
            eps = np.minimum(share_o[sj] * fac, 0.5)
            base = eps * evidence._OUTLIER_DENSITY
            keep = 1.0 - eps
            d = np.zeros(len(sj))
            radius = np.zeros(len(sj))
            share = np.zeros(len(sj))
            if near.any():
                d[near] = c.near_d[c.near_start[sr[near]]]
                radius[near] = frad[f[near]]
                arg = (d[near] - radius[near]) * (1.0 / (sigma[near] * evidence._SQRT2))
                share[near] = 0.5 * _map(math.erfc, arg)
            a = transit * (keep * evidence._TRANSIT_DENSITY * (1.0 - share) + base)
            inside = share / (math.pi * (radius * radius + sigma * sigma))
            b = p * (keep * inside + base)
            x = e * base
            total = np.where(has_f, a + b, a + x)
            three = has_e & has_f
            if three.any():
                total[three] = _sum3(a[three], x[three], b[three])
            nb, nx = b / total, x / total
            keep_f = has_f & (nb >= evidence.PRUNE_P)
            pa[sj] = a / total
            pb[sj] = np.where(keep_f, nb, np.nan)
            hb[sj] = np.where(keep_f, f, -1)
            hk[sj] = np.where(keep_f, kind, -1)
            pe[sj] = np.where(has_e & (nx >= evidence.PRUNE_P), nx, np.nan)
        btime[live] = t
        # tally: mass of DELIVERED, IN_STORAGE, IN_TRANSIT
        hl, kl, pl = hb[live], hk[live], pb[live]
        mass = np.zeros((3, len(live)))
        mass[2] = pa[live]
        for y in (0, 1):
            mass[y] = np.where((hl >= 0) & (kl == y), 0.0 + pl, 0.0)
        m0, m1, m2 = mass
        top = np.where((m0 >= m1) & (m0 >= m2), 0, np.where(m1 >= m2, 1, 2))
        cur = status[live]
        for y in (0, 1, 2):
            o = onsets[y, live]
            o = np.where(
                (mass[y] < evidence.ONSET_P) | (cur == y), NO_TIME, np.where(o == NO_TIME, t, o)
            )
            onsets[y, live] = o
        mtop = mass[top, np.arange(len(live))]
        new = (top != cur) & (mtop >= min_p[live])
        if new.any():
            jj, rr, tt, mt = live[new], rows[new], top[new], mtop[new]
            best = np.where((tt < 2) & (hl[new] >= 0) & (kl[new] == tt), hl[new], -1)
            es = onsets[tt, jj]
            es = np.where(es == NO_TIME, t[new], es)
            found.append((jj, rr, tt, cur[new], best, mt, es))
            status[jj], since[jj], loc[jj], prob[jj], ev_since[jj] = tt, t[new], best, mt, es
            # evidence.reset: the decided fence at its probability, the rest in transit
            fence = best >= 0
            pa[jj] = np.where(fence, 1.0 - mt, 1.0)
            pb[jj] = np.where(fence, mt, np.nan)
            hb[jj] = best
            hk[jj] = np.where(fence, tt, -1)
            pe[jj] = np.nan
            onsets[:, jj] = NO_TIME
    for jj, rr, tt, prev, best, mt, es in found:
        mine = ok[jj]
        ch.add(which[jj[mine]], rr[mine], tt[mine], prev[mine], best[mine], mt[mine], es[mine])
    sel = np.flatnonzero(ok)
    done = which[sel]
    r = res.states
    r.status[done], r.since[done], r.location[done] = status[sel], since[sel], loc[sel]
    r.probability[done], r.evidence_since[done] = prob[sel], ev_since[sel]
    r.transit[done], r.elsewhere[done] = pa[sel], pe[sel]
    r.fence[done], r.fence_kind[done], r.fence_p[done] = hb[sel], hk[sel], pb[sel]
    r.belief_time[done], r.onsets[:, done] = btime[sel], onsets[:, sel]
    return done
