"""Location reports: where a tag was seen, when, how precisely. Idempotent by identity."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


# --- Reports in columns: the bulk path (one list per field, index i = report i) ---------

# google.protobuf.Timestamp's range (0001-01-01 .. 9999-12-31), in microseconds since 1970.
MIN_TIME_US = -62_135_596_800 * 1_000_000
MAX_TIME_US = 253_402_300_799_999_999
MAX_SOURCE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class TrackerRef:
    """What storing a report needs to know of its tracker: who it is, whose it is."""

    id: uuid.UUID
    client_id: uuid.UUID
    hashed_advertisement_key: bytes


@dataclass(slots=True)
class ReportRows:
    """Valid reports ready to store, in columns (times in microseconds since 1970 UTC,
    positions as integer 1e-7 degrees, ``published_us`` None when unknown)."""

    tracker_ids: list[uuid.UUID]
    times_us: list[int]
    latitudes: list[float]
    longitudes: list[float]
    confidences: list[int]
    accuracies_m: list[int]
    statuses: list[int]
    published_us: list[int | None]
    sources: list[str]

    @classmethod
    def empty(cls) -> ReportRows:
        return cls([], [], [], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.tracker_ids)

    def reports(self) -> list[Report]:
        """The same rows as Report entities (for adapters without a bulk path)."""
        return [
            Report(
                tracker_id=self.tracker_ids[i],
                report_time=from_us(self.times_us[i]),
                position=GeoPoint(self.latitudes[i], self.longitudes[i]),
                confidence=self.confidences[i],
                horizontal_accuracy_m=self.accuracies_m[i],
                status=self.statuses[i],
                published_time=None if (p := self.published_us[i]) is None else from_us(p),
                source=self.sources[i],
            )
            for i in range(len(self))
        ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def to_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


# The stored bounds of report times (``domain.instants``), in microseconds since 1970.
_FLOOR_US = to_us(REPORT_TIME_FLOOR)
_CEILING_US = to_us(TIME_CEILING)  # exclusive


def report_problems(
    time_us: int | None,
    latest_us: int,
    latitude: float,
    longitude: float,
    confidence: int,
    accuracy_m: int,
    status: int,
    published_us: int | None,
    source: str,
    skew: timedelta | None = None,
) -> list[FieldViolation]:
    """Why one report (as plain values) cannot be stored; empty if it can. The same rules
    and reasons as ``Report`` and ``GeoPoint``, in the same precedence (a missing,
    unrepresentable or future time first, then the position, then the rest with the stored
    time bounds of ``domain.instants``), without building either (a test checks that the two
    agree). ``skew``, if given, is how far ``latest_us`` lies past now (said in the reason)."""
    future = f"in the future (after {from_us(latest_us):%FT%TZ}"
    future += ")" if skew is None else f": now plus {skew.total_seconds():g} s)"
    if time_us is None:
        return [FieldViolation("report_time", "required")]
    for name, t in (("report_time", time_us), ("published_time", published_us)):
        if t is None:
            continue
        if not MIN_TIME_US <= t <= MAX_TIME_US:
            return [FieldViolation(name, "timestamp out of range")]
        if t > latest_us:
            return [FieldViolation(name, future)]
    problems = []
    if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
        problems.append(FieldViolation("latitude", "must be within [-90, 90]"))
    if not (math.isfinite(longitude) and -180.0 <= longitude <= 180.0):
        problems.append(FieldViolation("longitude", "must be within [-180, 180]"))
    if problems:
        return problems
    for name, t in (("report_time", time_us), ("published_time", published_us)):
        if t is not None and not _FLOOR_US <= t < _CEILING_US:
            try:
                check_stored_report_time(from_us(t), name)
            except InvalidArgument as err:
                problems += err.violations
    if confidence not in (1, 2, 3):
        problems.append(FieldViolation("confidence", "must be 1, 2 or 3"))
    if not 0 <= accuracy_m <= MAX_ACCURACY_M:
        problems.append(
            FieldViolation("horizontal_accuracy_m", f"must be within 0..{MAX_ACCURACY_M} metres")
        )
    if not 0 <= status <= 255:
        problems.append(FieldViolation("status", "must be one byte (0..255)"))
    if not source or len(source) > MAX_SOURCE_LENGTH or "\x00" in source:
        problems.append(FieldViolation("source", "1..64 characters"))
    return problems


def suspects(
    times_us: Sequence[int | None],
    latest_us: int,
    latitudes: Sequence[float],
    longitudes: Sequence[float],
    confidences: Sequence[int],
    accuracies_m: Sequence[int],
    statuses: Sequence[int],
    published_us: Sequence[int | None],
    sources: Sequence[str],
) -> list[int]:
    """The indices of the reports ``report_problems`` finds fault with, found in one pass
    over the columns (the same rules as one expression; a test checks the two agree)."""
    lo, hi = _FLOOR_US, min(_CEILING_US - 1, latest_us)
    return [
        i
        for i, (t, lat, lon, c, a, s, p, src) in enumerate(
            zip(
                times_us,
                latitudes,
                longitudes,
                confidences,
                accuracies_m,
                statuses,
                published_us,
                sources,
                strict=True,
            )
        )
        if not (
            t is not None
            and lo <= t <= hi
            and -90.0 <= lat <= 90.0
            and -180.0 <= lon <= 180.0
            and c in (1, 2, 3)
            and 0 <= a <= MAX_ACCURACY_M
            and 0 <= s <= 255
            and (p is None or lo <= p <= hi)
            and 0 < len(src) <= MAX_SOURCE_LENGTH
            and "\x00" not in src
        )
    ]
