"""Processing bookkeeping: the backlog of unprocessed reports and the quarantine of trackers
whose processing failed on their own (issues 10 and 13)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

# How much of a failure's text is kept as the quarantine reason.
MAX_REASON_LENGTH = 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Quarantined trackers are retried after ``base_s``, then twice as long each failure
    in a row, up to ``max_s``."""

    base_s: float = 30.0
    max_s: float = 3600.0

    def delay_s(self, attempts: int) -> float:
        """The wait before the next try after ``attempts`` failures in a row (>= 1)."""
        return min(self.max_s, self.base_s * 2.0 ** min(max(attempts, 1) - 1, 60))


def failure_reason(exc: BaseException) -> str:
    """What an operator is shown: the exception's kind and message, bounded."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_REASON_LENGTH]


@dataclass(frozen=True, slots=True)
class QuarantinedTracker:
    tracker_id: uuid.UUID
    client_id: uuid.UUID | None
    attempts: int
    last_error: str
    first_failure_time: datetime
    last_failure_time: datetime
    retry_time: datetime
    enqueue_time: datetime


@dataclass(frozen=True, slots=True)
class ProcessingBacklog:
    """Trackers waiting for processing (quarantined ones apart), the arrival time of the
    oldest report not yet processed among them, and the quarantined trackers."""

    waiting: int
    oldest_arrival: datetime | None
    quarantined: int
