"""Fetch scheduling rules: when a tracker is due again, and how failures back it off.

A tracker is fetched every ``interval``. A fetch that brings no report, or fails, doubles the
tracker's factor (x2, x4, x8, x16 of the interval, capped at ``max_factor``); a fetch with a
report resets it to x1. The queue serves trackers in order of due time, so a tracker is due
again only after one interval or more: every tracker due now is served before anyone gets a
second turn, and a failing tracker moves further back, never ahead of a healthy one.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from domain.errors import FieldViolation, InvalidArgument

MAX_REPORT_AGE = timedelta(days=7)
"""Apple keeps reports about a week: a fetch never asks further back than this."""


class FetchResult(enum.StrEnum):
    """How one tracker's turn ended."""

    REPORTED = "reported"
    """At least one report of the tracker came back."""
    NO_REPORTS = "no_reports"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    PROTOCOL = "protocol"
    UNAUTHORIZED = "unauthorized"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    interval: timedelta
    max_factor: int = 16
    max_report_age: timedelta = MAX_REPORT_AGE

    def __post_init__(self) -> None:
        problems = []
        if self.interval <= timedelta(0):
            problems.append(FieldViolation("interval", "must be > 0"))
        if self.max_factor < 1 or self.max_factor & (self.max_factor - 1):
            problems.append(FieldViolation("max_factor", "must be a power of two >= 1"))
        if self.max_report_age <= timedelta(0):
            problems.append(FieldViolation("max_report_age", "must be > 0"))
        if problems:
            raise InvalidArgument.of(problems)

    def delay(self, factor: int) -> timedelta:
        return self.interval * min(max(factor, 1), self.max_factor)

    def window_start(self, last_report: datetime | None, now: datetime) -> datetime:
        """A fetch asks from the latest report we hold, never more than the max age back."""
        floor = now - self.max_report_age
        if last_report is None or last_report < floor:
            return floor
        return min(last_report, now)

    def first_due(self, tracker_id: uuid.UUID, now: datetime) -> datetime:
        """A new tracker's first turn, spread over one interval by its id, so a fleet queued
        at once does not all fall due in the same second."""
        digest = hashlib.blake2b(tracker_id.bytes, digest_size=8).digest()
        share = int.from_bytes(digest, "big") / 2**64
        return now + self.interval * share


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """Pacing of one source account: at most one request at a time (the gate), at least
    ``min_interval`` between requests, and after a failed request a cool-down: the source's
    Retry-After if it sent one, else doubling from one second per failure in a row; both
    capped at ``max_cooldown``."""

    min_interval: timedelta = timedelta(0)
    max_cooldown: timedelta = timedelta(minutes=30)

    def __post_init__(self) -> None:
        problems = []
        if self.min_interval < timedelta(0):
            problems.append(FieldViolation("min_interval", "must be >= 0"))
        if self.max_cooldown <= timedelta(0):
            problems.append(FieldViolation("max_cooldown", "must be > 0"))
        if problems:
            raise InvalidArgument.of(problems)

    def next_allowed(
        self, now: datetime, failures_in_row: int, retry_after_s: float | None = None
    ) -> datetime:
        if failures_in_row <= 0:
            return now + self.min_interval
        if retry_after_s is not None and retry_after_s >= 0:
            wait = timedelta(seconds=min(retry_after_s, self.max_cooldown.total_seconds()))
        else:
            wait = timedelta(seconds=2.0 ** min(failures_in_row - 1, 30))
        return now + max(self.min_interval, min(wait, self.max_cooldown))


@dataclass(frozen=True, slots=True)
class FetchState:
    """A tracker's fetch bookkeeping, kept with its place in the queue and in PostgreSQL."""

    factor: int = 1
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_success: datetime | None = None
    last_attempt: datetime | None = None
    last_result: FetchResult | None = None
    next_due: datetime | None = None

    def after(self, result: FetchResult, now: datetime, policy: FetchPolicy) -> FetchState:
        """The state after one turn ended at ``now`` with ``result``."""
        if result is FetchResult.REPORTED:
            return FetchState(
                factor=1,
                successes=self.successes + 1,
                failures=self.failures,
                consecutive_failures=0,
                last_success=now,
                last_attempt=now,
                last_result=result,
                next_due=now + policy.delay(1),
            )
        factor = min(max(self.factor, 1) * 2, policy.max_factor)
        return replace(
            self,
            factor=factor,
            failures=self.failures + 1,
            consecutive_failures=self.consecutive_failures + 1,
            last_attempt=now,
            last_result=result,
            next_due=now + policy.delay(factor),
        )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def to_ms(t: datetime) -> int:
    """Whole milliseconds since the epoch, exactly (floor), as the queue scores times."""
    return (t - EPOCH) // MS


def from_ms(ms: int | float) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class Claim:
    """A tracker handed to one fetcher for one lease (or until that fetcher dies)."""

    tracker_id: uuid.UUID
    due: datetime


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    claims: list[Claim]
    next_due: datetime | None
    """When the earliest tracker still queued falls due (None: the queue is empty)."""
    lost: bool = False
    """The queue has no record of a rebuild: Redis lost its data; rebuild it now."""
    reclaimed: int = 0
    """Claims of dead workers or expired leases put back before this claim."""


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """Where one tracker stands in the queue now."""

    tracker_id: uuid.UUID
    queued: bool
    claimed_by: str | None
    due: datetime | None
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A tracker's place in the queue (None: not queued) and its saved fetch state."""

    tracker_id: uuid.UUID
    place: QueuePlace | None
    state: FetchState

    @property
    def due(self) -> datetime | None:
        return self.place.due if self.place and self.place.due else self.state.next_due


@dataclass(frozen=True, slots=True)
class QueueStats:
    queued: int
    due_now: int
    claimed: int
    workers: int
    oldest_due: datetime | None


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: int
    removed: int
    active: int
