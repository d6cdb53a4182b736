"""Which instants the system accepts: one rule for every time a caller sends.

PostgreSQL's ``timestamptz`` reaches far beyond Python's ``datetime`` (4713 BC .. 294276 AD,
plus ``±infinity``), and Python's beyond what means anything here; a value at either edge
once stored (``0001-01-01`` became ``-infinity``) broke every reader of it. So every time
is checked against a bound that is well inside both ranges before it is stored or sent to
SQL:

- Report times: from ``REPORT_TIME_FLOOR`` (2019-01-01, the year Apple's Find My offline
  finding network launched with iOS 13: no Find My report can be older, and pushed history
  from before the product's era is out of scope) to ``now`` plus a small clock skew
  (configurable; a report from the future is a broken clock or a forgery).
- Production runs: start and end within ``RUN_TIME_FLOOR`` .. ``RUN_TIME_CEILING``
  (years 2000..2100), end after start.
- Query filters (history ranges): within ``QUERY_TIME_FLOOR`` .. ``TIME_CEILING``
  (1970..2100), so "from the epoch" works and nothing reaches SQL unbounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.errors import InvalidArgument

REPORT_TIME_FLOOR = datetime(2019, 1, 1, tzinfo=UTC)
"""The oldest acceptable report time (inclusive)."""
TIME_CEILING = datetime(2100, 1, 1, tzinfo=UTC)
"""No time at or after this is accepted anywhere (exclusive)."""
RUN_TIME_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
"""The earliest start (and end) of a production run (inclusive)."""
RUN_TIME_CEILING = TIME_CEILING
"""The latest end (and start) of a production run (inclusive: an end is exclusive itself)."""
QUERY_TIME_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest time a query filter may name (inclusive)."""
DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a report may be, by default (clocks of sources drift)."""
MAX_CLOCK_SKEW_LIMIT = timedelta(hours=1)
"""The largest skew an operator may configure."""


def _text(t: datetime) -> str:
    try:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):  # at the very edge of datetime's range
        return t.isoformat()


def check_aware(value: datetime, field: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(field, "must be timezone-aware")


def check_within(
    value: datetime, field: str, floor: datetime, ceiling: datetime, *, ceiling_inclusive: bool
) -> None:
    """``floor <= value < ceiling`` (``<=`` when ``ceiling_inclusive``), else a violation
    naming the field and the bounds."""
    check_aware(value, field)
    above = value > ceiling if ceiling_inclusive else value >= ceiling
    if value < floor or above:
        closing = "]" if ceiling_inclusive else ")"
        raise InvalidArgument(
            field, f"must be within [{_text(floor)}, {_text(ceiling)}{closing}, got {_text(value)}"
        )


def check_stored_report_time(value: datetime, field: str = "report_time") -> None:
    """The bound every stored report time respects, whatever its source (no clock needed)."""
    check_within(value, field, REPORT_TIME_FLOOR, TIME_CEILING, ceiling_inclusive=False)


def latest_report_time(now: datetime, skew: timedelta = DEFAULT_MAX_CLOCK_SKEW) -> datetime:
    return min(now + skew, TIME_CEILING - timedelta(microseconds=1))


def check_report_time(
    value: datetime,
    now: datetime,
    skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    field: str = "report_time",
) -> None:
    """A report (or its publication) time a source may send: not before the floor, not
    after ``now + skew``."""
    check_aware(value, field)
    latest = latest_report_time(now, skew)
    if value > latest:
        raise InvalidArgument(
            field, f"in the future (after {_text(latest)}: now plus {skew.total_seconds():g} s)"
        )
    check_stored_report_time(value, field)


def check_run_time(value: datetime, field: str) -> None:
    check_within(value, field, RUN_TIME_FLOOR, RUN_TIME_CEILING, ceiling_inclusive=True)


def check_query_time(value: datetime, field: str) -> None:
    check_within(value, field, QUERY_TIME_FLOOR, TIME_CEILING, ceiling_inclusive=True)


def check_clock_skew(skew: timedelta) -> None:
    """An operator's configured skew: 0..1 hour."""
    if not timedelta(0) <= skew <= MAX_CLOCK_SKEW_LIMIT:
        raise InvalidArgument("max_clock_skew", f"must be within 0..{MAX_CLOCK_SKEW_LIMIT}")


def clamp_run_time(value: datetime) -> datetime:
    """A stored run time brought into the run bounds (rows from before the rule, read
    tolerantly: a naive ``datetime.min``/``max`` is how ``-infinity``/``infinity`` arrive)."""
    if value.tzinfo is None:
        if value == datetime.min:
            return RUN_TIME_FLOOR
        if value == datetime.max:
            return RUN_TIME_CEILING
        value = value.replace(tzinfo=UTC)
    return max(RUN_TIME_FLOOR, min(value, RUN_TIME_CEILING))


def clamp_run_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """A stored run window brought into the bounds, as migration 0008 does: a window
    wholly outside them becomes one day at the nearer bound."""
    start = min(clamp_run_time(start), RUN_TIME_CEILING - timedelta(days=1))
    end = clamp_run_time(end)
    return start, end if end > start else start + timedelta(days=1)


def month_start(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    """The first instant of the month ``n`` months after ``month`` (a month start)."""
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
