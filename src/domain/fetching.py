"""Fetching reports from a location source (Find My): what is asked, what comes back, and
the typed failures a scheduler acts on (retry now, later, or give up)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from domain.errors import DomainError
from domain.model import AdvertisementKey, SealedSecret
from domain.reports import Report
from domain.scheduling import FetchState


@dataclass(frozen=True, slots=True)
class TrackerKey:
    """What a fetch needs of one tracker: its key pair, the private half sealed."""

    tracker_id: uuid.UUID
    advertisement_key: AdvertisementKey
    sealed_private_key: SealedSecret = field(repr=False)
    since: datetime | None = None
    """Ask for this key's reports from here (the newest one we hold minus the overlap);
    None: the request's."""
    until: datetime | None = None
    """Up to here (the run's end, if it is over); None: the request's."""
    held: tuple[datetime, ...] = field(default=(), repr=False)
    """Times of the reports we hold from the newest minus the overlap on, one per report:
    what the overlap asks for again. A payload dated at one of them is not decrypted (as
    many as we hold at that time; see ``FetchOutcome.held``)."""


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """A claimed tracker as PostgreSQL knows it: its key, the newest report we hold, its
    saved state, and its run's window (fetches stay inside it)."""

    key: TrackerKey
    last_report: datetime | None
    state: FetchState | None
    run_start: datetime
    run_end: datetime


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    reports: list[Report]
    malformed: int = 0
    """Payloads that did not parse, decrypt or validate: skipped, never fatal."""
    foreign: int = 0
    """Payloads for a key that was not asked for."""
    outside: int = 0
    """Reports dated outside their tracker's run (or older than Apple keeps): dropped."""
    held: int = 0
    """Payloads dated at a time we hold a report for, and no more of them than we hold
    there: reports we hold, answered again (the overlap, the newest one), not decrypted."""


class SourceError(DomainError):
    """A fetch failed as a whole. ``retry_after_s``: when to try again, if the source said."""

    retryable = True
    kind = "error"

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class SourceRateLimited(SourceError):
    kind = "rate_limited"


class SourceUnavailable(SourceError):
    """5xx, timeouts, connection failures, empty answers, Anisette failures.
    ``timed_out``: we stopped waiting, but the source may still be working on the request
    (the account is not free before that work must be over)."""

    kind = "unavailable"

    def __init__(
        self, detail: str, retry_after_s: float | None = None, *, timed_out: bool = False
    ) -> None:
        self.timed_out = timed_out
        super().__init__(detail, retry_after_s)


class SourceProtocolError(SourceError):
    """An answer we cannot read (not JSON, wrong shape, status not 200)."""

    kind = "protocol"


class SourceUnauthorized(SourceError):
    """Credentials refused even after signing in again: an operator must act."""

    retryable = False
    kind = "unauthorized"
