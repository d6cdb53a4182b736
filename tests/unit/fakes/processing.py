"""In-memory fakes of the processing ports (``ProcessingQueue``, ``ProcessingUnitOfWork``,
``Geocoder``), behaving like ``adapters.postgres.processing``: storing a report enqueues its
tracker (earliest new time, touched hours, version bump) as the trigger does; claims are
leased to a token; readings are classified with the domain's ``classify`` and the tracker's
fences and rule; status history is keyed by the causing report."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from domain.geo import City, NearestCity, distance_m
from domain.history import CurrentStatus, Granularity, LocationPoint, TrackerStatusChange
from domain.model import GeoPoint
from domain.pagination import Page, PageRequest
from domain.ports.processing import Claim, Evaluation, StatusInput
from domain.ports.status import HistoryFilter
from domain.processing import ProcessingBacklog, QuarantinedTracker
from domain.reports import Report, e7
from domain.status import (
    Fence,
    Reading,
    ReportKey,
    ResumePoint,
    RuleState,
    StatusChange,
    StatusRule,
    classify,
    resume_point,
)
from domain.status_batch import ReadingColumns, ResultColumns, StateColumns
from tests.unit.fakes.common import FakeUnitOfWorkFactory


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class _Queued:
    since: datetime
    hours: set[datetime]
    version: int
    enqueue_time: datetime
    token: uuid.UUID | None = None
    attempts: int = 0
    last_error: str = ""
    first_failure_time: datetime | None = None
    last_failure_time: datetime | None = None
    retry_time: datetime | None = None


@dataclass
class FakeProcessingStore:
    fences: dict[uuid.UUID, list[Fence]] = field(default_factory=dict)
    rules: dict[uuid.UUID, StatusRule] = field(default_factory=dict)
    reports: dict[uuid.UUID, dict[ReportKey, Report]] = field(default_factory=dict)
    cities: dict[tuple[uuid.UUID, ReportKey], int] = field(default_factory=dict)
    queue: dict[uuid.UUID, _Queued] = field(default_factory=dict)
    checkpoints: dict[uuid.UUID, tuple[ReportKey, RuleState]] = field(default_factory=dict)
    history: dict[uuid.UUID, dict[ReportKey, StatusChange]] = field(default_factory=dict)
    rerolled: list[tuple[uuid.UUID, datetime]] = field(default_factory=list)

    def add_reports(self, reports: Sequence[Report]) -> int:
        new: dict[uuid.UUID, list[Report]] = {}
        for r in reports:
            key = ReportKey(r.report_time, e7(r.position.latitude), e7(r.position.longitude))
            stored = self.reports.setdefault(r.tracker_id, {})
            if key not in stored:
                stored[key] = r
                new.setdefault(r.tracker_id, []).append(r)
        for tracker, rs in new.items():
            since = min(r.report_time for r in rs)
            hours = {_hour(r.report_time) for r in rs}
            q = self.queue.get(tracker)
            if q is None:
                self.queue[tracker] = _Queued(since, hours, 1, datetime.now(UTC))
            else:
                q.since, q.hours, q.version = min(q.since, since), q.hours | hours, q.version + 1
        return sum(len(rs) for rs in new.values())

    def changes(self, tracker: uuid.UUID) -> list[StatusChange]:
        return [c for _, c in sorted(self.history.get(tracker, {}).items())]


class FakeProcessingQueue:
    def __init__(self, store: FakeProcessingStore) -> None:
        self._s = store

    async def claim(self, token: uuid.UUID, limit: int, lease_s: float) -> list[Claim]:
        out = []
        now = datetime.now(UTC)
        for tracker, q in sorted(self._s.queue.items(), key=lambda kv: kv[1].enqueue_time):
            due = q.retry_time is None or q.retry_time <= now
            if q.token is None and due and len(out) < limit:
                q.token = token
                out.append(
                    Claim(
                        tracker,
                        q.since,
                        tuple(sorted(q.hours)),
                        q.version,
                        q.enqueue_time,
                        q.attempts,
                    )
                )
        return out

    async def release(self, token: uuid.UUID) -> None:
        for q in self._s.queue.values():
            if q.token == token:
                q.token = None

    async def quarantine(
        self, token: uuid.UUID, tracker_id: uuid.UUID, reason: str, delay_s: float
    ) -> None:
        q = self._s.queue.get(tracker_id)
        if q is None or q.token != token:
            return
        now = datetime.now(UTC)
        q.token = None
        q.attempts += 1
        q.last_error = reason
        q.first_failure_time = q.first_failure_time or now
        q.last_failure_time = now
        q.retry_time = now + timedelta(seconds=delay_s)

    async def backlog(self) -> ProcessingBacklog:
        waiting = [q for q in self._s.queue.values() if not q.attempts]
        return ProcessingBacklog(
            len(waiting),
            min((q.enqueue_time for q in waiting), default=None),
            len(self._s.queue) - len(waiting),
        )

    async def quarantined(self, page: PageRequest) -> Page[QuarantinedTracker]:
        items = [
            QuarantinedTracker(
                t,
                None,
                q.attempts,
                q.last_error,
                q.first_failure_time or q.enqueue_time,
                q.last_failure_time or q.enqueue_time,
                q.retry_time or q.enqueue_time,
                q.enqueue_time,
            )
            for t, q in sorted(self._s.queue.items())
            if q.attempts and (page.after is None or str(t) > page.after)
        ]
        more = len(items) > page.size
        items = items[: page.size]
        return Page(items, str(items[-1].tracker_id) if more else None)

    async def retry_now(self, tracker_id: uuid.UUID) -> bool:
        q = self._s.queue.get(tracker_id)
        if q is None or not q.attempts:
            return False
        q.retry_time = datetime.now(UTC)
        return True


class FakeProcessingUnitOfWork:
    def __init__(self, store: FakeProcessingStore) -> None:
        self._s = store
        self.committed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    async def commit(self) -> None:
        self.committed = True

    async def lock(self, token: uuid.UUID, claims: Sequence[Claim]) -> list[Claim]:
        return [c for c in claims if (q := self._s.queue.get(c.tracker_id)) and q.token == token]

    async def ungeocoded(
        self, claims: Sequence[Claim]
    ) -> list[tuple[uuid.UUID, ReportKey, GeoPoint]]:
        return [
            (c.tracker_id, k, r.position)
            for c in claims
            for k, r in self._s.reports.get(c.tracker_id, {}).items()
            if k.report_time >= c.since and (c.tracker_id, k) not in self._s.cities
        ]

    async def set_nearest_cities(self, rows: Sequence[tuple[uuid.UUID, ReportKey, int]]) -> None:
        for t, k, city in rows:
            self._s.cities[(t, k)] = city

    async def reroll(self, claims: Sequence[Claim]) -> int:
        hours = [(c.tracker_id, h) for c in claims for h in c.hours]
        self._s.rerolled += hours
        return len(hours)

    async def status_inputs(self, claims: Sequence[Claim]) -> list[StatusInput]:
        out = []
        for c in claims:
            before = [ch for ch in self._s.changes(c.tracker_id) if ch.key.report_time < c.since]
            out.append(
                StatusInput(
                    c.tracker_id,
                    self._s.rules.get(c.tracker_id, StatusRule.default()),
                    self._s.checkpoints.get(c.tracker_id),
                    before[-1] if before else None,
                )
            )
        return out

    async def readings(self, starts: Mapping[uuid.UUID, ReportKey | None]) -> ReadingColumns:
        out: dict[uuid.UUID, list[Reading]] = {}
        for tracker, start in starts.items():
            rule = self._s.rules.get(tracker, StatusRule.default())
            for key, r in sorted(self._s.reports.get(tracker, {}).items()):
                if (start is not None and key <= start) or r.confidence < rule.min_confidence:
                    continue
                seen = classify(
                    r.position, r.horizontal_accuracy_m, self._s.fences.get(tracker, []), rule
                )
                out.setdefault(tracker, []).append(
                    Reading(
                        key,
                        seen,
                        r.horizontal_accuracy_m,
                        r.confidence,
                        self._s.cities.get((tracker, key)),
                    )
                )
        return ReadingColumns.from_readings(list(starts), out)

    async def save_statuses(self, evaluations: Sequence[Evaluation]) -> None:
        for e in evaluations:
            history = self._s.history.setdefault(e.tracker_id, {})
            after = e.resume.after
            for key in [k for k in history if after is None or k > after]:
                del history[key]
            for c in e.changes:
                history[c.key] = c
            if e.last is not None:
                self._s.checkpoints[e.tracker_id] = (e.last.key, e.state)

    async def status_state(self, claims: Sequence[Claim]) -> StateColumns:
        since = {c.tracker_id: c.since for c in claims}
        inputs = await self.status_inputs(claims)
        resumes = [
            resume_point(since[i.tracker_id], i.checkpoint, i.last_change_before_since)
            for i in inputs
        ]
        state = StateColumns.of(
            [i.tracker_id for i in inputs],
            [(r.state, i.rule) for r, i in zip(resumes, inputs, strict=True)],
            [r.after for r in resumes],
            [r.replaces_history for r in resumes],
        )
        # as the adapter: late reports are left for the caller (from status_inputs)
        for n, i in enumerate(inputs):
            cp = i.checkpoint
            if (cp is not None and cp[0].report_time >= since[i.tracker_id]) or (
                cp is None and i.last_change_before_since is not None
            ):
                state.general[n] = True
                state.objects.pop(n, None)
        return state

    async def readings_after(self, state: StateColumns) -> ReadingColumns:
        return await self.readings({t: state.after(i) for i, t in enumerate(state.trackers)})

    async def save_results(
        self, state: StateColumns, readings: ReadingColumns, result: ResultColumns
    ) -> None:
        await self.save_statuses(
            [
                Evaluation(t, ResumePoint(state.after(i), s0, bool(state.replaces[i])), *o)
                for i, (t, s0, o) in enumerate(
                    zip(
                        state.trackers,
                        [state.states.get(i, state.ids) for i in range(len(state))],
                        result.outcomes(readings),
                        strict=True,
                    )
                )
            ]
        )

    async def complete(
        self, token: uuid.UUID, done: Sequence[Claim], claimed: Sequence[Claim]
    ) -> None:
        for c in done:
            q = self._s.queue.get(c.tracker_id)
            if q is not None and q.token == token:
                if q.version == c.version:
                    del self._s.queue[c.tracker_id]
                else:
                    q.attempts, q.last_error, q.retry_time = 0, "", None
        for c in claimed:
            q = self._s.queue.get(c.tracker_id)
            if q is not None and q.token == token:
                q.token = None


class FakeGeocoder:
    """Nearest of a fixed list of cities (None without cities)."""

    def __init__(self, cities: Sequence[City] = ()) -> None:
        self._cities = list(cities)

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        out: list[NearestCity | None] = []
        for p in points:
            best = min(self._cities, key=lambda c: distance_m(p, c.position), default=None)
            out.append(NearestCity(best, distance_m(p, best.position)) if best else None)
        return out


class FakeStatusRepository:
    """``StatusRepository`` over the setup fakes' committed trackers: statuses and histories
    are whatever a test puts in; the queries record the filters they were given."""

    def __init__(self, uow: FakeUnitOfWorkFactory) -> None:
        self._uow = uow
        self.statuses: dict[uuid.UUID, CurrentStatus] = {}
        self.rules: dict[uuid.UUID, StatusRule] = {}
        self.reevaluated: list[uuid.UUID] = []
        self.queries: list[tuple[HistoryFilter, object, object]] = []

    async def tracker_clients(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        trackers = self._uow.committed.trackers
        return {t: trackers[t].client_id for t in ids if t in trackers}

    async def current(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CurrentStatus]:
        clients = await self.tracker_clients(ids)
        return {t: self.statuses.get(t, CurrentStatus(t, c)) for t, c in clients.items()}

    async def status_history(
        self, filter: HistoryFilter, page: PageRequest
    ) -> Page[TrackerStatusChange]:
        self.queries.append((filter, None, None))
        return Page([], None)

    async def location_history(
        self,
        filter: HistoryFilter,
        granularity: Granularity,
        min_confidence: int,
        page: PageRequest,
    ) -> Page[LocationPoint]:
        self.queries.append((filter, granularity, min_confidence))
        return Page([], None)

    async def status_rule(self, production_run_id: uuid.UUID) -> StatusRule:
        return self.rules.get(production_run_id, StatusRule.default())

    async def set_status_rule(self, production_run_id: uuid.UUID, rule: StatusRule) -> None:
        self.rules[production_run_id] = rule

    async def reevaluate_run(self, production_run_id: uuid.UUID) -> int:
        self.reevaluated.append(production_run_id)
        return 0
