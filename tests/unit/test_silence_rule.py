"""The silent-tracker rule: a cadence learned from a tracker's own report gaps, bounded by
the defaults; silent once it misses that cadence by the factor; health apart from status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.silence import (
    HealthState,
    SilenceRule,
    bucket_gaps,
    health_state,
    learned_cadence,
    quantile_disc,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC)
RULE = SilenceRule()


def every(step: timedelta, n: int, end: datetime = T0) -> list[datetime]:
    return [end - step * k for k in range(n)]


def test_a_regular_tracker_learns_its_own_cadence() -> None:
    assert learned_cadence(every(timedelta(hours=1), 30), RULE) == (timedelta(hours=1), 29)


def test_clustered_reports_count_once_per_bucket() -> None:
    # five iPhones passing within a minute are one sighting, not four tiny gaps
    times = [t + timedelta(seconds=s) for t in every(timedelta(hours=2), 10) for s in range(5)]
    assert learned_cadence(times, RULE) == (timedelta(hours=2), 9)


def test_too_little_history_keeps_the_default() -> None:
    assert learned_cadence(every(timedelta(minutes=30), 3), RULE) == (RULE.default_cadence, 2)
    assert learned_cadence([], RULE) == (RULE.default_cadence, 0)


def test_the_cadence_is_the_gap_rarely_exceeded() -> None:
    gaps = [timedelta(minutes=m) for m in (30,) * 9 + (600,)]
    assert quantile_disc(gaps, 0.9) == timedelta(minutes=30)
    assert quantile_disc([*gaps, timedelta(minutes=600)], 0.9) == timedelta(minutes=600)


@given(st.lists(st.integers(0, 14 * 24 * 3600), max_size=80))
def test_a_learned_cadence_stays_within_its_bounds(offsets: list[int]) -> None:
    times = [T0 - timedelta(seconds=o) for o in offsets]
    cadence, gaps = learned_cadence(times, RULE)
    assert RULE.min_cadence <= cadence <= RULE.max_cadence
    assert gaps == len(bucket_gaps(times, RULE.min_cadence))


@given(st.integers(0, 10**6), st.integers(1, 10**5))
def test_silence_starts_at_factor_times_the_cadence(after_s: int, cadence_s: int) -> None:
    cadence = timedelta(seconds=cadence_s)
    now = T0 + timedelta(seconds=after_s)
    state, since = health_state(
        now=now,
        run_start=T0 - timedelta(days=1),
        run_end=T0 + timedelta(days=365),
        last_report_time=T0,
        cadence=cadence,
        rule=RULE,
    )
    if now >= T0 + cadence * RULE.factor:
        assert (state, since) == (HealthState.SILENT, T0 + cadence * RULE.factor)
    else:
        assert (state, since) == (HealthState.REPORTING, None)


def test_no_report_and_a_stopped_run_are_no_silence() -> None:
    common = {"cadence": timedelta(hours=1), "rule": RULE, "run_start": T0}
    assert health_state(
        now=T0 + timedelta(days=2), run_end=T0 + timedelta(days=1), last_report_time=T0, **common
    ) == (HealthState.INACTIVE, None)
    assert health_state(
        now=T0 + timedelta(hours=5), run_end=T0 + timedelta(days=9), last_report_time=None, **common
    ) == (HealthState.NO_REPORTS, None)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"factor": 0.5}, "silence_factor"),
        ({"min_cadence": timedelta(0)}, "silence_min_cadence_s"),
        ({"default_cadence": timedelta(days=30)}, "silence_default_cadence_s"),
    ],
)
def test_a_bad_rule_names_its_setting(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        SilenceRule(**kw)  # type: ignore[arg-type]
    assert err.value.violations[0].field == field
