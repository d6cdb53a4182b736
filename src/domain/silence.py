"""Silent trackers (seed ``004_…``): each tracker's expected report cadence is learned from
its own history (bounded by defaults), and it is silent once it has gone ``factor`` times
that cadence without a report. Health is a field of its own, beside the status: a silent
tracker keeps its last status (IN_STORAGE, IN_TRANSIT or DELIVERED).

Reports come in clusters (several iPhones pass at once), so the history is first cut into
buckets of ``min_cadence``; the cadence is the ``CADENCE_QUANTILE`` quantile (discrete) of the
gaps between consecutive buckets that hold a report: the gap the tracker rarely exceeds. The
PostgreSQL adapter computes the same rule in SQL (``percentile_disc``); a test checks they
agree.
"""

from __future__ import annotations

import enum
import itertools
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import InvalidArgument

CADENCE_QUANTILE = 0.9
"""Which gap between reports counts as the tracker's cadence (0.9: the one it rarely exceeds)."""

DEFAULT_FACTOR = 3.0
DEFAULT_CADENCE = timedelta(hours=6)
MIN_CADENCE = timedelta(minutes=15)
MAX_CADENCE = timedelta(days=2)
MIN_GAPS = 5
"""Gaps needed before a tracker's own cadence replaces the default."""
HISTORY = timedelta(days=14)
"""How far back the history that teaches the cadence goes."""


@dataclass(frozen=True, slots=True)
class SilenceRule:
    factor: float = DEFAULT_FACTOR
    default_cadence: timedelta = DEFAULT_CADENCE
    min_cadence: timedelta = MIN_CADENCE
    max_cadence: timedelta = MAX_CADENCE
    min_gaps: int = MIN_GAPS
    history: timedelta = HISTORY

    def __post_init__(self) -> None:
        if not 1 <= self.factor <= 1000 or math.isnan(self.factor):
            raise InvalidArgument("silence_factor", "must be within 1..1000")
        if not timedelta(seconds=1) <= self.min_cadence <= self.max_cadence:
            raise InvalidArgument("silence_min_cadence_s", "must be >= 1 s and <= the maximum")
        if not self.min_cadence <= self.default_cadence <= self.max_cadence:
            raise InvalidArgument("silence_default_cadence_s", "must lie within min..max")
        if self.min_gaps < 1:
            raise InvalidArgument("silence_min_gaps", "must be >= 1")


def bucket_gaps(report_times: Iterable[datetime], bucket: timedelta) -> list[timedelta]:
    """Gaps between consecutive buckets of ``bucket`` length (from the epoch) holding a report."""
    size = bucket.total_seconds()
    buckets = sorted({math.floor(t.timestamp() / size) for t in report_times})
    return [timedelta(seconds=(b - a) * size) for a, b in itertools.pairwise(buckets)]


def quantile_disc(values: list[timedelta], q: float) -> timedelta:
    """PostgreSQL's ``percentile_disc(q)``: the first value whose cumulative share >= q."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def learned_cadence(report_times: Iterable[datetime], rule: SilenceRule) -> tuple[timedelta, int]:
    """The tracker's expected cadence and the number of gaps it was learned from (fewer than
    ``rule.min_gaps``: the default cadence)."""
    gaps = bucket_gaps(report_times, rule.min_cadence)
    if len(gaps) < rule.min_gaps:
        return rule.default_cadence, len(gaps)
    cadence = quantile_disc(gaps, CADENCE_QUANTILE)
    return min(max(cadence, rule.min_cadence), rule.max_cadence), len(gaps)


class HealthState(enum.StrEnum):
    REPORTING = "REPORTING"
    SILENT = "SILENT"
    NO_REPORTS = "NO_REPORTS"
    """Never reported (yet)."""
    INACTIVE = "INACTIVE"
    """Its production run is not running now: nobody expects reports."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerHealth:
    tracker_id: uuid.UUID
    client_id: uuid.UUID
    production_run_id: uuid.UUID
    brand_id: uuid.UUID
    state: HealthState
    expected_cadence: timedelta
    learned_from_gaps: int
    first_report_time: datetime | None
    last_report_time: datetime | None
    silent_since: datetime | None
    """When it missed its cadence by the factor (None unless SILENT)."""

    def silent_for(self, now: datetime) -> timedelta:
        return now - self.silent_since if self.silent_since is not None else timedelta(0)


def silent_since(last_report_time: datetime, cadence: timedelta, rule: SilenceRule) -> datetime:
    """The moment a tracker whose last report is ``last_report_time`` counts as silent."""
    return last_report_time + cadence * rule.factor


def health_state(
    *,
    now: datetime,
    run_start: datetime,
    run_end: datetime,
    last_report_time: datetime | None,
    cadence: timedelta,
    rule: SilenceRule,
) -> tuple[HealthState, datetime | None]:
    """The state of a tracker, and since when it is silent."""
    if not run_start <= now < run_end:
        return HealthState.INACTIVE, None
    if last_report_time is None:
        return HealthState.NO_REPORTS, None
    since = silent_since(last_report_time, cadence, rule)
    if now >= since:
        return HealthState.SILENT, since
    return HealthState.REPORTING, None
