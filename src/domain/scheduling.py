"""Fetch scheduling rules: when a tracker is due again, and how failures back it off.

A tracker is fetched every ``interval``. A turn that brings no report we did not already
hold doubles the tracker's factor (x2, x4, x8, x16 of the interval, capped at
``max_factor``); a turn with a new report resets it to x1. A request that failed as a whole
(429, 5xx, timeout) says nothing about its trackers: they keep their factor and their due
time, so they are served first once an account can send again. The queue serves trackers in
order of due time, so a tracker is due again only after one interval or more: every tracker
due now is served before anyone gets a second turn, and a silent tracker moves further back,
never ahead of a healthy one.
"""

from __future__ import annotations

import enum
import hashlib
import math
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from domain.errors import FieldViolation, InvalidArgument

MAX_REPORT_AGE = timedelta(days=7)
"""Apple keeps reports about a week: a fetch never asks further back than this."""
DEFAULT_OVERLAP = timedelta(hours=6)
"""A request asks from the newest report we hold minus this, so reports uploaded late (dated
before the newest one we hold) are still fetched; see docs/fetching.md for the choice."""
DEFAULT_END_GRACE = timedelta(hours=24)
"""After a run's end its trackers are still fetched this long (reports dated before the end
that finders upload after it); windows never reach past the end itself."""
DEFAULT_FILL_HORIZON = 0.25
"""A request that is not full is filled with trackers due within this fraction of the
interval (soonest first)."""
DEFAULT_BUDGET_PER_HOUR = 60
"""Requests per hour one Apple account may send; see docs/fetching.md for the source."""
DEFAULT_PROBE_MAX = timedelta(seconds=60)
"""Longest pause between two recovery probes of an account without a Retry-After."""


class FetchResult(enum.StrEnum):
    """How one tracker's turn ended."""

    REPORTED = "reported"
    """At least one report came back that we did not hold before."""
    NO_REPORTS = "no_reports"
    """Nothing new: no report, or only reports we already held."""
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    PROTOCOL = "protocol"
    UNAUTHORIZED = "unauthorized"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class FetchWindow:
    """The time range one key's reports are asked for (Apple's startDate/endDate)."""

    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    interval: timedelta
    max_factor: int = 16
    max_report_age: timedelta = MAX_REPORT_AGE
    overlap: timedelta = DEFAULT_OVERLAP
    end_grace: timedelta = DEFAULT_END_GRACE
    fill_horizon: float = DEFAULT_FILL_HORIZON

    def __post_init__(self) -> None:
        problems = []
        if self.interval <= timedelta(0):
            problems.append(FieldViolation("interval", "must be > 0"))
        if self.max_factor < 1 or self.max_factor & (self.max_factor - 1):
            problems.append(FieldViolation("max_factor", "must be a power of two >= 1"))
        if self.max_report_age <= timedelta(0):
            problems.append(FieldViolation("max_report_age", "must be > 0"))
        if self.overlap < timedelta(0):
            problems.append(FieldViolation("overlap", "must be >= 0"))
        if self.end_grace < timedelta(0):
            problems.append(FieldViolation("end_grace", "must be >= 0"))
        if not 0 <= self.fill_horizon <= 1:
            problems.append(FieldViolation("fill_horizon", "must be between 0 and 1"))
        if problems:
            raise InvalidArgument.of(problems)

    def delay(self, factor: int) -> timedelta:
        return self.interval * min(max(factor, 1), self.max_factor)

    @property
    def horizon(self) -> timedelta:
        """How far ahead of its due time a tracker may fill a request that is not full."""
        return self.interval * self.fill_horizon

    def window_start(self, last_report: datetime | None, now: datetime) -> datetime:
        """From the newest report we hold minus the overlap, never more than the max age
        back (without a run to clamp to; see ``window``)."""
        return self.window(last_report, now).since

    def window(
        self,
        last_report: datetime | None,
        now: datetime,
        run_start: datetime | None = None,
        run_end: datetime | None = None,
    ) -> FetchWindow:
        """What one key asks for: from the newest report we hold minus the overlap (late
        uploads), never before the run's start nor more than the max age back; until now,
        never after the run's end. Storage is idempotent, so the overlap costs no duplicate."""
        until = now if run_end is None else min(now, run_end)
        floor = now - self.max_report_age
        if run_start is not None:
            floor = max(floor, run_start)
        since = floor if last_report is None else max(floor, last_report - self.overlap)
        return FetchWindow(min(since, until), until)

    def active(self, now: datetime, run_start: datetime, run_end: datetime) -> bool:
        """Whether a run's trackers are fetched at ``now``: from its start to its end plus
        the grace period."""
        return run_start <= now < run_end + self.end_grace

    def first_due(self, tracker_id: uuid.UUID, now: datetime) -> datetime:
        """A new tracker's first turn, spread over one interval by its id, so a fleet queued
        at once does not all fall due in the same second."""
        digest = hashlib.blake2b(tracker_id.bytes, digest_size=8).digest()
        share = int.from_bytes(digest, "big") / 2**64
        return now + self.interval * share


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """Pacing of one source account: at most one request at a time (the gate), at least
    ``pace`` between requests (``min_interval``, and the budget of ``budget_per_hour``
    requests spread evenly over the hour, so no hour ever holds more), and after a failed
    request a pause: the source's Retry-After if it sent one (capped at ``max_cooldown``),
    else a short one (1 s, 2 s, 4 s... capped at ``probe_max``). The next request after a
    failure is the probe: one request tells whether the account recovered, so a storm that
    has passed costs at most ``probe_max`` of idleness rather than a doubled timer."""

    min_interval: timedelta = timedelta(0)
    max_cooldown: timedelta = timedelta(minutes=30)
    budget_per_hour: float = 0
    """0: no budget beyond ``min_interval``."""
    probe_max: timedelta = DEFAULT_PROBE_MAX

    def __post_init__(self) -> None:
        problems = []
        if self.min_interval < timedelta(0):
            problems.append(FieldViolation("min_interval", "must be >= 0"))
        if self.max_cooldown <= timedelta(0):
            problems.append(FieldViolation("max_cooldown", "must be > 0"))
        if self.budget_per_hour < 0:
            problems.append(FieldViolation("budget_per_hour", "must be >= 0"))
        if self.probe_max <= timedelta(0):
            problems.append(FieldViolation("probe_max", "must be > 0"))
        if problems:
            raise InvalidArgument.of(problems)

    @property
    def pace(self) -> timedelta:
        """The least time between two requests of one account."""
        if self.budget_per_hour <= 0:
            return self.min_interval
        # Rounded up to the microsecond: rounding down would fit one request too many.
        spread = timedelta(microseconds=math.ceil(3600e6 / self.budget_per_hour))
        return max(self.min_interval, spread)

    def requests_per_hour(self) -> float:
        """The most requests one account sends in an hour (inf: unpaced)."""
        pace_s = self.pace.total_seconds()
        return 3600 / pace_s if pace_s > 0 else math.inf

    def next_allowed(
        self, now: datetime, failures_in_row: int, retry_after_s: float | None = None
    ) -> datetime:
        if failures_in_row <= 0:
            return now + self.pace
        if retry_after_s is not None and retry_after_s >= 0:
            wait = timedelta(seconds=min(retry_after_s, self.max_cooldown.total_seconds()))
        else:
            probe = timedelta(seconds=2.0 ** min(failures_in_row - 1, 30))
            wait = min(probe, self.probe_max, self.max_cooldown)
        return now + max(self.pace, wait)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Requests the fleet needs per interval (every tracker at x1, full requests) against
    what the accounts may send in that time."""

    trackers: int
    accounts: int
    needed_per_interval: int
    allowed_per_interval: float
    accounts_needed: int

    @property
    def sufficient(self) -> bool:
        return self.needed_per_interval <= self.allowed_per_interval


def capacity(
    trackers: int,
    accounts: int,
    keys_per_request: int,
    interval: timedelta,
    account_policy: AccountPolicy,
) -> Capacity:
    needed = math.ceil(trackers / max(keys_per_request, 1))
    per_account = account_policy.requests_per_hour() * (interval / timedelta(hours=1))
    allowed = accounts * per_account
    if needed == 0:
        accounts_needed = 0
    elif per_account == math.inf:
        accounts_needed = 1
    else:
        accounts_needed = math.ceil(needed / per_account) if per_account > 0 else 0
    return Capacity(trackers, accounts, needed, allowed, accounts_needed)


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

    def after(
        self,
        result: FetchResult,
        now: datetime,
        policy: FetchPolicy,
        due: datetime | None = None,
    ) -> FetchState:
        """The state after one turn ended at ``now`` with ``result``. ``due``: when the turn
        was scheduled; a tracker served early (filling a request) keeps its cadence, the next
        turn counts from its due time, not from the early fetch."""
        base = now if due is None else max(now, due)
        if result is FetchResult.REPORTED:
            return FetchState(
                factor=1,
                successes=self.successes + 1,
                failures=self.failures,
                consecutive_failures=0,
                last_success=now,
                last_attempt=now,
                last_result=result,
                next_due=base + policy.delay(1),
            )
        factor = min(max(self.factor, 1) * 2, policy.max_factor)
        return replace(
            self,
            factor=factor,
            failures=self.failures + 1,
            consecutive_failures=self.consecutive_failures + 1,
            last_attempt=now,
            last_result=result,
            next_due=base + policy.delay(factor),
        )

    def after_failed_request(self, result: FetchResult, now: datetime, due: datetime) -> FetchState:
        """The request failed as a whole (the account's or Apple's trouble, not the
        tracker's): the factor stays, the tracker stays due at ``due`` so it is served first
        when an account can send again; the failed attempt is counted."""
        return replace(
            self,
            failures=self.failures + 1,
            consecutive_failures=self.consecutive_failures + 1,
            last_attempt=now,
            last_result=result,
            next_due=due,
        )


def turn_results(
    requested: Iterable[uuid.UUID], with_new_reports: Collection[uuid.UUID]
) -> dict[uuid.UUID, FetchResult]:
    """A turn is REPORTED only if it brought a report we did not hold: Apple answers the
    newest report again as long as the window includes it, which says nothing new."""
    return {
        i: FetchResult.REPORTED if i in with_new_reports else FetchResult.NO_REPORTS
        for i in requested
    }


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
    """The queue has no record of a rebuild, and none is under way: Redis lost its data;
    rebuild it now."""
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
    capacity: Capacity | None = None
    """The fleet's needs against its accounts' budget, as the fetchers last computed it."""


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: int
    removed: int
    active: int
