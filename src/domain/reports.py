"""Location reports: where a tag was seen, when, how precisely. Idempotent by identity."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

from domain.errors import FieldViolation, InvalidArgument
from domain.instants import (
    REPORT_TIME_FLOOR,
    TIME_CEILING,
    add_months,
    check_stored_report_time,
    month_start,
)
from domain.model import GeoPoint

MAX_ACCURACY_M = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """One decrypted location report of one tracker.

    Two reports with the same tracker, time and position are the same report: storing it
    again changes nothing (reports are re-fetched and pushed more than once). Its times are
    within the stored range of ``domain.instants`` (a source's clock is checked by the use
    case that receives it, which knows the time).
    """

    tracker_id: uuid.UUID
    report_time: datetime
    position: GeoPoint
    confidence: int
    horizontal_accuracy_m: int
    status: int = 0
    published_time: datetime | None = None
    source: str = "findmy"

    def __post_init__(self) -> None:
        problems: list[FieldViolation] = []
        times = [("report_time", self.report_time), ("published_time", self.published_time)]
        for name, value in times:
            if value is None:
                continue
            try:
                check_stored_report_time(value, name)
            except InvalidArgument as err:
                problems += err.violations
        if self.confidence not in (1, 2, 3):
            problems.append(FieldViolation("confidence", "must be 1, 2 or 3"))
        if not 0 <= self.horizontal_accuracy_m <= MAX_ACCURACY_M:
            problems.append(
                FieldViolation(
                    "horizontal_accuracy_m", f"must be within 0..{MAX_ACCURACY_M} metres"
                )
            )
        if not 0 <= self.status <= 255:
            problems.append(FieldViolation("status", "must be one byte (0..255)"))
        if not self.source or len(self.source) > 64 or "\x00" in self.source:
            problems.append(FieldViolation("source", "1..64 characters"))
        if problems:
            raise InvalidArgument.of(problems)

    @property
    def identity(self) -> tuple[uuid.UUID, datetime, int, int]:
        """What makes two reports the same: tracker, time, position to 1e-7 degree."""
        return (
            self.tracker_id,
            self.report_time,
            e7(self.position.latitude),
            e7(self.position.longitude),
        )


def e7(degrees: float) -> int:
    """Degrees as the integer 1e-7 degrees Find My reports carry."""
    return math.floor(degrees * 1e7 + 0.5)


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int
    rejected_count: int
    rejected: tuple[FieldViolation, ...]


def partition_months(now: datetime, back_months: int, ahead_months: int) -> list[datetime]:
    """The months (UTC month starts) whose ``reports`` partitions should exist at ``now``:
    ``back_months`` before the current one (late reports: Find My's 7 days reach into the
    previous month), the current one, and ``ahead_months`` after it, so a report is never
    the first of its month; none before the oldest acceptable report time or at/after the
    ceiling. Older months (backfilled history) land in the default partition."""
    if back_months < 0 or ahead_months < 1:
        raise InvalidArgument("partition months", "back must be >= 0 and ahead >= 1")
    current = month_start(now)
    months = (add_months(current, n) for n in range(-back_months, ahead_months + 1))
    return [m for m in months if REPORT_TIME_FLOOR <= m < TIME_CEILING]
