"""Storing location reports pushed by other sources (the Find My fetcher stores its own
through the same repository). Valid reports are stored, invalid ones rejected one by one."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.access import Principal
from domain.errors import FieldViolation, InvalidArgument, NotFound
from domain.instants import DEFAULT_MAX_CLOCK_SKEW, check_clock_skew, check_report_time, month_start
from domain.limits import MAX_REPORT_MONTHS_PER_MESSAGE, MAX_REPORTS_PER_MESSAGE, check_count
from domain.model import GeoPoint, Tracker
from domain.ports import Clock, UnitOfWorkFactory
from domain.reports import IngestResult, Report

MAX_REPORTS_PER_CALL = MAX_REPORTS_PER_MESSAGE
MAX_CLOCK_SKEW = DEFAULT_MAX_CLOCK_SKEW
MAX_VIOLATIONS = 100


@dataclass(frozen=True, slots=True)
class NewReport:
    """A report as a source sends it: the tracker by id or by hashed advertisement key."""

    report_time: datetime | None
    latitude: float
    longitude: float
    confidence: int
    horizontal_accuracy_m: int
    status: int = 0
    tracker_id: uuid.UUID | None = None
    hashed_advertisement_key: bytes = b""
    published_time: datetime | None = None
    source: str = "push"


class IngestReports:
    """Each report needs a tracker the caller manages; one that is missing or not the
    caller's is rejected with the same reason, so nobody learns which trackers exist.
    A message over the limits of ``domain.limits`` is refused whole, before any work."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        check_clock_skew(max_clock_skew)
        self._uow, self._clock, self._skew = uow, clock, max_clock_skew

    async def __call__(
        self, caller: Principal, items: Sequence[NewReport], offset: int = 0
    ) -> IngestResult:
        check_count("reports", len(items), MAX_REPORTS_PER_MESSAGE, minimum=0, per="message")
        months = {
            month_start(i.report_time)
            for i in items
            if i.report_time is not None and i.report_time.utcoffset() is not None
        }
        if len(months) > MAX_REPORT_MONTHS_PER_MESSAGE:
            raise InvalidArgument(
                "reports",
                f"report times span {len(months)} months; at most "
                f"{MAX_REPORT_MONTHS_PER_MESSAGE} distinct months (UTC) per message",
            )
        now = self._clock.now()
        rejected: list[FieldViolation] = []
        async with self._uow() as uow:
            by_key = await uow.trackers.by_hashed_keys(
                list({i.hashed_advertisement_key for i in items if i.hashed_advertisement_key})
            )
            by_id: dict[uuid.UUID, Tracker] = {}
            for tid in {i.tracker_id for i in items if i.tracker_id is not None}:
                try:
                    by_id[tid] = await uow.trackers.get(tid)
                except NotFound:
                    continue  # rejected below like any unknown tracker
            good: dict[tuple[object, ...], Report] = {}
            bad: set[int] = set()
            for n, item in enumerate(items):
                where = f"reports[{offset + n}]"
                tracker = (
                    by_id.get(item.tracker_id)
                    if item.tracker_id is not None
                    else by_key.get(item.hashed_advertisement_key)
                )
                if tracker is None or not caller.can_read(tracker.client_id):
                    rejected.append(FieldViolation(where, "unknown tracker"))
                    bad.add(n)
                    continue
                if not caller.can_manage(tracker.client_id):
                    rejected.append(FieldViolation(where, "needs CLIENT_ADMIN of its client"))
                    bad.add(n)
                    continue
                try:
                    if item.report_time is None:
                        raise InvalidArgument("report_time", "required")
                    check_report_time(item.report_time, now, self._skew)
                    if item.published_time is not None:
                        check_report_time(item.published_time, now, self._skew, "published_time")
                    report = Report(
                        tracker_id=tracker.id,
                        report_time=item.report_time,
                        position=GeoPoint(item.latitude, item.longitude),
                        confidence=item.confidence,
                        horizontal_accuracy_m=item.horizontal_accuracy_m,
                        status=item.status,
                        published_time=item.published_time,
                        source=item.source,
                    )
                except InvalidArgument as err:
                    rejected += [
                        FieldViolation(f"{where}.{v.field}", v.reason) for v in err.violations
                    ]
                    bad.add(n)
                    continue
                good.setdefault(report.identity, report)
            stored = await uow.reports.add_many(list(good.values()))
            await uow.commit()
        return IngestResult(
            received=len(items),
            stored=stored,
            duplicates=len(items) - len(bad) - stored,
            rejected_count=len(bad),
            rejected=tuple(rejected),
        )
