"""Outages (seed ``004_…``): the share of silent trackers per cohort, compared with that
cohort's own recent baseline. A jump of at least ``jump`` (absolute share) with at least
``min_silent`` silent trackers is an outage event naming the cohort and its size.

Cohorts are per client (so an event belongs to one tenant): the whole client, each brand,
each production run, each nearest city (of the last report), and each bin of days since the
tracker's first report, the cohort that named the seed's "dead after ~50 days" firmware bug.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import InvalidArgument

DEFAULT_JUMP = 0.3
DEFAULT_MIN_SILENT = 5
DEFAULT_BASELINE_WINDOW = timedelta(days=1)
DEFAULT_AGE_BIN_DAYS = 10


class Dimension(enum.StrEnum):
    CLIENT = "CLIENT"
    BRAND = "BRAND"
    PRODUCTION_RUN = "PRODUCTION_RUN"
    CITY = "CITY"
    FIRST_REPORT_AGE = "FIRST_REPORT_AGE"
    """Days since the tracker's first report, in bins of ``age_bin_days`` ("50-59")."""
    APPLE_ACCOUNT = "APPLE_ACCOUNT"
    """The Find My account that last fetched the tracker (a banned or logged-out account
    silences exactly its trackers)."""


@dataclass(frozen=True, slots=True)
class OutageRule:
    jump: float = DEFAULT_JUMP
    min_silent: int = DEFAULT_MIN_SILENT
    baseline_window: timedelta = DEFAULT_BASELINE_WINDOW
    age_bin_days: int = DEFAULT_AGE_BIN_DAYS

    def __post_init__(self) -> None:
        if not 0 < self.jump <= 1 or math.isnan(self.jump):
            raise InvalidArgument("outage_jump", "must be within (0, 1]")
        if self.min_silent < 1:
            raise InvalidArgument("outage_min_silent", "must be >= 1")
        if self.baseline_window <= timedelta(0):
            raise InvalidArgument("outage_baseline_window_s", "must be positive")
        if not 1 <= self.age_bin_days <= 365:
            raise InvalidArgument("outage_age_bin_days", "must be within 1..365")


@dataclass(frozen=True, slots=True, order=True)
class Cohort:
    client_id: uuid.UUID
    dimension: Dimension
    key: str
    """The brand, run or client id, the city's name, or the age bin ("50-59")."""


@dataclass(frozen=True, slots=True)
class CohortShare:
    cohort: Cohort
    trackers: int
    silent: int

    @property
    def share(self) -> float:
        return self.silent / self.trackers if self.trackers else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Outage:
    """An outage: a cohort whose silent share jumped above its baseline."""

    id: int = 0
    cohort: Cohort
    trackers: int
    silent: int
    share: float
    baseline: float
    start_time: datetime
    end_time: datetime | None = None


def age_bin(first_report_time: datetime, now: datetime, bin_days: int) -> str:
    """The bin of whole days since the first report: ``"50-59"`` for 10-day bins."""
    days = math.floor((now - first_report_time).total_seconds() / 86400)
    low = (max(days, 0) // bin_days) * bin_days
    return f"{low}-{low + bin_days - 1}"


def jumps(
    shares: Iterable[CohortShare], baseline: Mapping[Cohort, float], rule: OutageRule
) -> list[CohortShare]:
    """Cohorts whose silent share is at least ``rule.jump`` above their own baseline, with at
    least ``rule.min_silent`` silent trackers. A cohort new in the window (an age bin trackers
    just grew into, a city) is held against its client's baseline; without that, not judged."""
    out = []
    for s in shares:
        base = baseline_of(s.cohort, baseline)
        if base is None or s.silent < rule.min_silent:
            continue
        if s.share - base >= rule.jump:
            out.append(s)
    return sorted(out, key=lambda s: (-s.silent, s.cohort))


def has_ended(outage: Outage, current: CohortShare | None, rule: OutageRule) -> bool:
    """An outage ends when its cohort's share falls back below its baseline at the start plus
    half the jump (or the cohort has no silent-eligible tracker left)."""
    if current is None:
        return True
    return current.share < outage.baseline + rule.jump / 2


def baseline_of(cohort: Cohort, baseline: Mapping[Cohort, float]) -> float | None:
    """A cohort's own baseline, else its client's (None: neither has snapshots yet)."""
    own = baseline.get(cohort)
    if own is not None:
        return own
    return baseline.get(Cohort(cohort.client_id, Dimension.CLIENT, str(cohort.client_id)))
