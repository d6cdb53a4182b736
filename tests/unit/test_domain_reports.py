"""Reports: what a valid one is, positions in 1e-7 degrees, and when two are the same."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.model import GeoPoint
from domain.reports import (
    MAX_ACCURACY_M,
    MAX_TIME_US,
    MIN_TIME_US,
    Report,
    e7,
    from_us,
    report_problems,
    suspects,
)

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
TRACKER = uuid.UUID(int=7)


def a_report(**kw: Any) -> Report:
    fields: dict[str, Any] = dict(
        tracker_id=TRACKER,
        report_time=T0,
        position=GeoPoint(52.5, 13.4),
        confidence=2,
        horizontal_accuracy_m=25,
    )
    fields.update(kw)
    return Report(**fields)


def violations(**kw: Any) -> list[str]:
    with pytest.raises(InvalidArgument) as exc:
        a_report(**kw)
    return [v.field for v in exc.value.violations]


def test_defaults() -> None:
    report = a_report()
    assert (report.status, report.published_time, report.source) == (0, None, "findmy")


@pytest.mark.parametrize(
    "fields",
    [
        {"confidence": 1},
        {"confidence": 3},
        {"horizontal_accuracy_m": 0},
        {"horizontal_accuracy_m": MAX_ACCURACY_M},
        {"status": 0},
        {"status": 255},
        {"source": "x"},
        {"source": "s" * 64},
        {"source": "push ünïcode"},
        {"report_time": datetime(2025, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))},
        {"published_time": T0 + timedelta(days=1)},
        {"position": GeoPoint(-90.0, -180.0)},
        {"position": GeoPoint(90.0, 180.0)},
    ],
)
def test_valid_reports(fields: dict[str, Any]) -> None:
    report = a_report(**fields)
    for name, value in fields.items():
        assert getattr(report, name) == value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"confidence": 0}, "confidence"),
        ({"confidence": 4}, "confidence"),
        ({"confidence": -1}, "confidence"),
        ({"horizontal_accuracy_m": -1}, "horizontal_accuracy_m"),
        ({"horizontal_accuracy_m": MAX_ACCURACY_M + 1}, "horizontal_accuracy_m"),
        ({"status": -1}, "status"),
        ({"status": 256}, "status"),
        ({"report_time": datetime(2025, 1, 1, 12)}, "report_time"),
        ({"source": ""}, "source"),
        ({"source": "s" * 65}, "source"),
        ({"source": "find\x00my"}, "source"),
    ],
)
def test_invalid_field_is_named(fields: dict[str, Any], field: str) -> None:
    assert violations(**fields) == [field]


def test_every_violation_is_reported_together_in_field_order() -> None:
    assert violations(
        report_time=datetime(2025, 1, 1),
        confidence=0,
        horizontal_accuracy_m=-5,
        status=1000,
        source="",
    ) == ["report_time", "confidence", "horizontal_accuracy_m", "status", "source"]


def test_reports_are_immutable() -> None:
    report = a_report()
    with pytest.raises(AttributeError):
        report.confidence = 3  # type: ignore[misc]


# -- e7 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("degrees", "expected"),
    [
        (0.0, 0),
        (1e-7, 1),
        (-1e-7, -1),
        (52.5, 525_000_000),
        (13.4, 134_000_000),
        (-33.8688197, -338_688_197),
        (90.0, 900_000_000),
        (-90.0, -900_000_000),
        (180.0, 1_800_000_000),
        (-180.0, -1_800_000_000),
        (0.12345674, 1_234_567),
        (0.12345676, 1_234_568),
        (-0.12345676, -1_234_568),
    ],
)
def test_e7_rounds_to_the_nearest_1e7_degree(degrees: float, expected: int) -> None:
    assert e7(degrees) == expected
    assert isinstance(e7(degrees), int)


@given(st.floats(min_value=-180.0, max_value=180.0, allow_nan=False, allow_infinity=False))
@example(5e-8)
@example(-5e-8)
@example(179.99999995)
@example(-179.99999995)
def test_e7_is_within_half_a_unit(degrees: float) -> None:
    # e7(x) / 1e7 is within 5e-8 of x, measured exactly. The only slack is the rounding of
    # the float product x * 1e7 (half an ulp: at most 1.2e-7 units, 1.2e-14 degrees), by
    # which a float just below a half-unit boundary may round up (179.99999995 does).
    slack = Fraction(math.ulp(degrees * 1e7)) / 2
    assert abs(Fraction(e7(degrees)) - Fraction(degrees) * 10**7) <= Fraction(1, 2) + slack
    assert abs(e7(degrees) / 1e7 - degrees) <= 5e-8 + 1e-13


@given(st.integers(min_value=-1_800_000_000, max_value=1_800_000_000))
def test_e7_of_an_e7_value_gives_it_back(units: int) -> None:
    assert e7(units / 1e7) == units


@given(
    st.floats(min_value=-180.0, max_value=180.0, allow_nan=False),
    st.floats(min_value=-180.0, max_value=180.0, allow_nan=False),
)
def test_e7_is_monotonic(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert e7(low) <= e7(high)


# -- identity -------------------------------------------------------------------------------


def test_identity_is_tracker_time_and_position_in_e7() -> None:
    assert a_report().identity == (TRACKER, T0, 525_000_000, 134_000_000)


@pytest.mark.parametrize(
    "fields",
    [
        {"confidence": 3},
        {"horizontal_accuracy_m": 1},
        {"status": 9},
        {"published_time": T0},
        {"source": "push"},
        {"report_time": T0.astimezone(timezone(timedelta(hours=-5)))},
        {"position": GeoPoint(52.5 + 4e-8, 13.4 - 4e-8)},
    ],
)
def test_identity_ignores_everything_but_tracker_time_and_position(
    fields: dict[str, Any],
) -> None:
    assert a_report(**fields).identity == a_report().identity
    assert hash(a_report(**fields).identity) == hash(a_report().identity)


@pytest.mark.parametrize(
    "fields",
    [
        {"tracker_id": uuid.UUID(int=8)},
        {"report_time": T0 + timedelta(microseconds=1)},
        {"position": GeoPoint(52.5 + 1e-7, 13.4)},
        {"position": GeoPoint(52.5, 13.4 - 1e-7)},
        # Latitude and longitude are not interchangeable.
        {"position": GeoPoint(13.4, 52.5)},
    ],
)
def test_identity_tells_other_reports_apart(fields: dict[str, Any]) -> None:
    assert a_report(**fields).identity != a_report().identity


# -- the bulk path's rules agree with the entities' --------------------------------------------

_times = st.one_of(
    st.none(),
    st.integers(MIN_TIME_US - 10, MAX_TIME_US + 10),
    st.sampled_from(
        [MIN_TIME_US, MAX_TIME_US, 0, 1_750_000_000_000_000, 1_546_300_800_000_000 - 1]
    ),
    st.integers(1_546_300_800_000_000 - 10, 1_546_300_800_000_000 + 10),  # 2019-01-01
)


@settings(max_examples=400, deadline=None)
@given(
    t=_times,
    lat=st.one_of(st.floats(-91, 91), st.sampled_from([math.nan, math.inf, 90.0, -90.0])),
    lon=st.one_of(st.floats(-181, 181), st.sampled_from([math.nan, -math.inf, 180.0])),
    conf=st.integers(-1, 4),
    acc=st.integers(-2, MAX_ACCURACY_M + 2),
    status=st.integers(-1, 256),
    pub=_times,
    src=st.sampled_from(["", "push", "a\x00b", "s" * 64, "s" * 65]),
)
def test_column_rules_agree_with_report_and_geopoint(
    t: int | None,
    lat: float,
    lon: float,
    conf: int,
    acc: int,
    status: int,
    pub: int | None,
    src: str,
) -> None:
    latest = 1_800_000_000_000_000
    problems = report_problems(t, latest, lat, lon, conf, acc, status, pub, src)
    flagged = suspects([t], latest, [lat], [lon], [conf], [acc], [status], [pub], [src])
    assert (flagged == [0]) == bool(problems)
    if t is None or not MIN_TIME_US <= t <= latest:
        return  # times out of range cannot become a datetime to compare with
    if pub is not None and not MIN_TIME_US <= pub <= latest:
        return  # likewise; and "in the future" needs a clock, which Report has not

    def build() -> None:
        Report(
            tracker_id=uuid.uuid4(),
            report_time=from_us(t),
            position=GeoPoint(lat, lon),
            confidence=conf,
            horizontal_accuracy_m=acc,
            status=status,
            published_time=None if pub is None else from_us(pub),
            source=src,
        )

    if problems:
        with pytest.raises(InvalidArgument) as err:
            build()
        assert list(err.value.violations) == problems
    else:
        build()
