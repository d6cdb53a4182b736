"""The simulator's journeys: in storage, on the road, delivered; irregular, noisy reports."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from simulator.trajectory import Journey, sample_reports

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
J = Journey(
    start=T0, storage=(53.5461, 9.9661), delivery=(52.5219, 13.4132), storage_s=600, travel_s=1200
)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (a[0] - b[0]) * 111_320
    dlon = (a[1] - b[1]) * 111_320 * math.cos(math.radians(a[0]))
    return math.hypot(dlat, dlon)


def test_a_journey_sits_in_storage_travels_and_stays_delivered() -> None:
    assert J.position_at(T0 + timedelta(seconds=599)) == J.storage
    middle = J.position_at(T0 + timedelta(seconds=1200))
    assert metres(middle, J.storage) > 10_000
    assert metres(middle, J.delivery) > 10_000
    assert J.position_at(T0 + timedelta(hours=5)) == J.delivery


@given(st.integers(min_value=0, max_value=10_000))
def test_reports_are_irregular_plausible_and_sometimes_late_or_repeated(seed: int) -> None:
    reports = sample_reports(J, T0, T0 + timedelta(hours=2), random.Random(seed))
    assert 30 <= len(reports) <= 300
    for r in reports:
        assert r["confidence"] in (1, 2, 3)
        assert 0 <= r["accuracy_m"] <= 255
        seen = datetime.fromisoformat(r["time"])
        assert seen <= T0 + timedelta(hours=2)
        truth = J.position_at(seen)
        # Where the tag was when seen, give or take the noise (which scales with accuracy).
        assert metres((r["latitude"], r["longitude"]), truth) < 3 * r["accuracy_m"] + 50


def test_the_same_seed_gives_the_same_reports() -> None:
    a = sample_reports(J, T0, T0 + timedelta(hours=1), random.Random(3))
    b = sample_reports(J, T0, T0 + timedelta(hours=1), random.Random(3))
    assert a == b
    kinds = {(r["confidence"], r["long_form"]) for r in a}
    assert len(kinds) > 2
