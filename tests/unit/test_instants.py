"""The time rule of domain/instants.py: which instants reports, runs and queries accept,
and the months whose report partitions are made ahead."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.history import check_time_range
from domain.instants import (
    DEFAULT_MAX_CLOCK_SKEW,
    QUERY_TIME_FLOOR,
    REPORT_TIME_FLOOR,
    RUN_TIME_CEILING,
    RUN_TIME_FLOOR,
    TIME_CEILING,
    add_months,
    check_clock_skew,
    check_report_time,
    clamp_run_window,
    month_start,
)
from domain.model import GeoPoint, ProductionRun
from domain.reports import Report, partition_months

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
EXTREMES = [
    datetime.min.replace(tzinfo=UTC),
    datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC),
    datetime(1969, 12, 31, tzinfo=UTC),
    datetime(2018, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2100, 1, 1, tzinfo=UTC),
    datetime.max.replace(tzinfo=UTC),
]
any_instant = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


def run(start: datetime, end: datetime) -> ProductionRun:
    return ProductionRun(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        brand_id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        display_name="R",
        start_time=start,
        end_time=end,
    )


def report(when: datetime, published: datetime | None = None) -> Report:
    return Report(
        tracker_id=uuid.uuid4(),
        report_time=when,
        position=GeoPoint(52.5, 13.4),
        confidence=2,
        horizontal_accuracy_m=10,
        published_time=published,
    )


@given(any_instant)
def test_a_report_time_is_accepted_exactly_within_floor_and_now_plus_skew(t: datetime) -> None:
    if REPORT_TIME_FLOOR <= t <= NOW + DEFAULT_MAX_CLOCK_SKEW:
        check_report_time(t, NOW)
    else:
        with pytest.raises(InvalidArgument) as err:
            check_report_time(t, NOW)
        assert [v.field for v in err.value.violations] == ["report_time"]


def test_the_edges_of_the_report_rule() -> None:
    check_report_time(REPORT_TIME_FLOOR, NOW)
    check_report_time(NOW + DEFAULT_MAX_CLOCK_SKEW, NOW)
    with pytest.raises(InvalidArgument, match="in the future"):
        check_report_time(NOW + DEFAULT_MAX_CLOCK_SKEW + timedelta(microseconds=1), NOW)
    with pytest.raises(InvalidArgument, match=r"\[2019-01-01T00:00:00Z"):
        check_report_time(REPORT_TIME_FLOOR - timedelta(microseconds=1), NOW)
    # The skew is the caller's (configured), within 0..1 hour.
    check_report_time(NOW + timedelta(minutes=30), NOW, timedelta(minutes=30))
    for bad in (timedelta(seconds=-1), timedelta(hours=2)):
        with pytest.raises(InvalidArgument):
            check_clock_skew(bad)


@pytest.mark.parametrize("t", EXTREMES)
def test_no_report_can_hold_an_extreme_time(t: datetime) -> None:
    with pytest.raises(InvalidArgument) as err:
        report(t)
    assert [v.field for v in err.value.violations] == ["report_time"]
    with pytest.raises(InvalidArgument) as err:
        report(NOW, published=t)
    assert [v.field for v in err.value.violations] == ["published_time"]


def test_naive_times_are_refused_everywhere() -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        report(naive)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        run(naive, NOW)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        check_time_range(naive, None)


@given(any_instant, any_instant)
def test_a_run_exists_only_within_its_bounds_and_ends_after_it_starts(
    start: datetime, end: datetime
) -> None:
    if RUN_TIME_FLOOR <= start < end <= RUN_TIME_CEILING:
        assert run(start, end).end_time > start
    else:
        with pytest.raises(InvalidArgument) as err:
            run(start, end)
        assert {v.field for v in err.value.violations} <= {"start_time", "end_time"}


def test_both_bad_run_times_are_named() -> None:
    with pytest.raises(InvalidArgument) as err:
        run(EXTREMES[0], EXTREMES[-1])
    assert [v.field for v in err.value.violations] == ["start_time", "end_time"]


@given(any_instant, any_instant)
def test_query_ranges_are_bounded_and_ordered(start: datetime, end: datetime) -> None:
    if QUERY_TIME_FLOOR <= start < end <= TIME_CEILING:
        check_time_range(start, end)
    else:
        with pytest.raises(InvalidArgument):
            check_time_range(start, end)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # -infinity .. infinity as asyncpg reads them: the whole bounded window.
        (datetime.min, datetime.max, (RUN_TIME_FLOOR, RUN_TIME_CEILING)),
        (
            datetime(1990, 1, 1, tzinfo=UTC),
            datetime(1995, 1, 1, tzinfo=UTC),
            (RUN_TIME_FLOOR, RUN_TIME_FLOOR + timedelta(days=1)),
        ),
        (
            datetime(2200, 1, 1, tzinfo=UTC),
            datetime.max,
            (RUN_TIME_CEILING - timedelta(days=1), RUN_TIME_CEILING),
        ),
        (NOW, NOW + timedelta(hours=1), (NOW, NOW + timedelta(hours=1))),
    ],
)
def test_stored_run_windows_are_read_clamped_into_a_valid_run(
    start: datetime, end: datetime, expected: tuple[datetime, datetime]
) -> None:
    window = clamp_run_window(start, end)
    assert window == expected
    run(*window)  # a valid run


def test_months_are_utc_calendar_months() -> None:
    plus14 = timezone(timedelta(hours=14))
    assert month_start(datetime(2027, 1, 1, 5, tzinfo=plus14)) == datetime(2026, 12, 1, tzinfo=UTC)
    assert add_months(datetime(2026, 12, 1, tzinfo=UTC), 1) == datetime(2027, 1, 1, tzinfo=UTC)
    assert add_months(datetime(2026, 1, 1, tzinfo=UTC), -13) == datetime(2024, 12, 1, tzinfo=UTC)


def test_partitions_are_made_for_the_previous_current_and_next_months() -> None:
    assert partition_months(NOW, 1, 3) == [
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2027, 2, 1, tzinfo=UTC),
        datetime(2027, 3, 1, tzinfo=UTC),
    ]
    # Never before the oldest acceptable report, never at the ceiling.
    assert partition_months(datetime(2019, 1, 15, tzinfo=UTC), 5, 1)[0] == REPORT_TIME_FLOOR
    assert partition_months(datetime(2099, 12, 15, tzinfo=UTC), 0, 3) == [
        datetime(2099, 12, 1, tzinfo=UTC)
    ]
    with pytest.raises(InvalidArgument):
        partition_months(NOW, 1, 0)


@given(any_instant)
def test_every_acceptable_report_time_has_a_partition_made_ahead(t: datetime) -> None:
    """Whatever month the maintenance last ran in (at most one month ago), a report the
    rule accepts now has its month's partition."""
    for last_run in (NOW, NOW - timedelta(days=31)):
        months = partition_months(last_run, 1, 3)
        try:
            check_report_time(t, NOW)
        except InvalidArgument:
            continue
        if t >= NOW - timedelta(days=7):  # what a fetch can return, and late pushes
            assert month_start(t) in months
