"""Location reports: where a tag was seen, when, how precisely. Idempotent by identity."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

from domain.errors import FieldViolation, InvalidArgument
from domain.model import GeoPoint

MAX_ACCURACY_M = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """One decrypted location report of one tracker.

    Two reports with the same tracker, time and position are the same report: storing it
    again changes nothing (reports are re-fetched and pushed more than once).
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
        problems = []
        if self.report_time.tzinfo is None:
            problems.append(FieldViolation("report_time", "must be timezone-aware"))
        if self.published_time is not None and self.published_time.tzinfo is None:
            problems.append(FieldViolation("published_time", "must be timezone-aware"))
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
