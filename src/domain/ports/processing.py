"""Ports of the processing capability (the worker): its queue, geocoding, and the unit of
work over a batch of claimed trackers (roll-ups and statuses).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.geo import NearestCity
from domain.model import (
    GeoPoint,
)
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.processing import ProcessingBacklog, QuarantinedTracker
from domain.status import (
    Reading,
    ReportKey,
    ResumePoint,
    RuleState,
    StatusChange,
    StatusRule,
)
from domain.status_batch import ReadingColumns, ResultColumns, StateColumns


@dataclass(frozen=True, slots=True)
class Claim:
    """A tracker with new reports, claimed by one worker: since when, which hours, and the
    queue row's version (new reports meanwhile change it, so the row stays queued)."""

    tracker_id: uuid.UUID
    since: datetime
    hours: tuple[datetime, ...]
    version: int
    enqueue_time: datetime
    attempts: int = 0  # failures in a row before this claim (> 0: quarantined, retried)


class ProcessingQueue(Protocol):
    """Trackers with reports not yet processed (written with the reports themselves)."""

    async def claim(self, token: uuid.UUID, limit: int, lease_s: float) -> list[Claim]:
        """Up to ``limit`` unclaimed (or lease-expired) trackers, oldest first, leased to
        ``token`` for ``lease_s`` seconds; no two live claims share a tracker. Quarantined
        trackers come only once their retry time has come."""
        ...

    async def release(self, token: uuid.UUID) -> None:
        """Hand back every claim still held by ``token`` at once (a failed batch)."""
        ...

    async def quarantine(
        self, token: uuid.UUID, tracker_id: uuid.UUID, reason: str, delay_s: float
    ) -> None:
        """The claim of ``tracker_id`` failed on its own: release it, count the failure,
        keep ``reason`` and hold it back ``delay_s`` seconds."""
        ...

    async def backlog(self) -> ProcessingBacklog: ...

    async def quarantined(self, page: PageRequest) -> Page[QuarantinedTracker]:
        """Quarantined trackers by id."""
        ...

    async def retry_now(self, tracker_id: uuid.UUID) -> bool:
        """Make a quarantined tracker due at once; False if it is not quarantined."""
        ...


class Geocoder(Protocol):
    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        """The nearest city of each point (None when no city is known at all)."""
        ...


@dataclass(frozen=True, slots=True)
class StatusInput:
    """What re-evaluating one tracker starts from."""

    tracker_id: uuid.UUID
    rule: StatusRule
    checkpoint: tuple[ReportKey, RuleState] | None
    last_change_before_since: StatusChange | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome for one tracker: history after ``resume.after`` is replaced by
    ``changes``; ``state``/``last`` are the new checkpoint (``last`` None: no new reading)."""

    tracker_id: uuid.UUID
    resume: ResumePoint
    state: RuleState
    changes: list[StatusChange]
    last: Reading | None


class ProcessingUnitOfWork(Transaction, Protocol):
    """One transaction of a worker over a batch of claimed trackers."""

    async def lock(self, token: uuid.UUID, claims: Sequence[Claim]) -> list[Claim]:
        """The claims still held by ``token`` whose tracker could be locked until commit
        (a worker whose lease ran out cannot race a newer worker)."""
        ...

    async def ungeocoded(
        self, claims: Sequence[Claim]
    ) -> list[tuple[uuid.UUID, ReportKey, GeoPoint]]:
        """Reports in the claimed hours without a nearest city."""
        ...

    async def set_nearest_cities(
        self, rows: Sequence[tuple[uuid.UUID, ReportKey, int]]
    ) -> None: ...

    async def reroll(self, claims: Sequence[Claim]) -> int:
        """Recompute the hourly buckets the claims touch and their days; returns how many
        hourly buckets were recomputed."""
        ...

    async def status_inputs(self, claims: Sequence[Claim]) -> list[StatusInput]: ...

    async def readings(self, starts: Mapping[uuid.UUID, ReportKey | None]) -> ReadingColumns:
        """Each tracker's reports after its start key that count under its run's rule,
        classified against its run's geofences, in key order: as columns, the trackers in
        the order of ``starts``."""
        ...

    async def save_statuses(self, evaluations: Sequence[Evaluation]) -> None: ...

    async def status_state(self, claims: Sequence[Claim]) -> StateColumns:
        """The claims' starts as columns, in claim order (trackers that no longer exist
        left out): each tracker's rule and its checkpoint when the new reports all come
        after it (or nothing, for a tracker never evaluated). The others (late reports,
        beliefs wider than the columns) are flagged ``general`` without objects: the
        caller resumes them from ``status_inputs``."""
        ...

    async def readings_after(self, state: StateColumns) -> ReadingColumns:
        """``readings`` from the start keys of ``state``, its trackers in its order."""
        ...

    async def save_results(
        self, state: StateColumns, readings: ReadingColumns, result: ResultColumns
    ) -> None:
        """``save_statuses`` of a batch's results as columns: the history after each
        replacing start replaced by the changes, the checkpoints of trackers with
        readings."""
        ...

    async def complete(
        self, token: uuid.UUID, done: Sequence[Claim], claimed: Sequence[Claim]
    ) -> None:
        """Dequeue the claims ``done``, except those with newer reports meanwhile, and the
        claims of trackers that no longer exist; release the other claims of ``claimed``
        (still ``token``'s) for another try. Queue rows are locked in tracker order."""
        ...


class ProcessingUnitOfWorkFactory(Protocol):
    def __call__(self) -> ProcessingUnitOfWork: ...
