"""Fetch scheduling rules as properties: backoff x2..x16 and reset, due times, windows, the
account's pace, and the queue's encoding."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.scheduling import AccountPolicy, FetchPolicy, FetchResult, FetchState, from_ms, to_ms

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
POLICY = FetchPolicy(interval=HOUR)
FAILURES = [r for r in FetchResult if r is not FetchResult.REPORTED]

results = st.lists(st.sampled_from(list(FetchResult)), max_size=40)


def replay(outcomes: list[FetchResult], policy: FetchPolicy = POLICY) -> list[FetchState]:
    state, now, seen = FetchState(), NOW, []
    for result in outcomes:
        state = state.after(result, now, policy)
        seen.append(state)
        assert state.next_due is not None
        now = state.next_due
    return seen


@given(results)
def test_factor_is_two_to_the_failures_in_a_row_capped_at_sixteen(outcomes: list) -> None:
    streak = 0
    for result, state in zip(outcomes, replay(outcomes), strict=True):
        streak = 0 if result is FetchResult.REPORTED else streak + 1
        assert state.factor == min(2**streak, 16)
        assert state.consecutive_failures == streak


@given(results)
def test_next_due_is_the_interval_times_the_factor_never_more_than_sixteen(outcomes: list) -> None:
    for state in replay(outcomes):
        assert state.last_attempt is not None
        assert state.next_due is not None
        wait = state.next_due - state.last_attempt
        assert wait == HOUR * state.factor
        assert HOUR <= wait <= 16 * HOUR


@given(results)
def test_counts_add_up_and_last_success_is_the_last_reported_turn(outcomes: list) -> None:
    states = replay(outcomes)
    if not states:
        return
    last = states[-1]
    assert last.successes == outcomes.count(FetchResult.REPORTED)
    assert last.successes + last.failures == len(outcomes)
    reported = [
        s.last_attempt for r, s in zip(outcomes, states, strict=True) if r.value == "reported"
    ]
    assert last.last_success == (reported[-1] if reported else None)
    assert last.last_result is outcomes[-1]


def test_the_backoff_sequence_is_x2_x4_x8_x16_then_stays() -> None:
    states = replay([FetchResult.NO_REPORTS] * 6 + [FetchResult.REPORTED])
    assert [s.factor for s in states] == [2, 4, 8, 16, 16, 16, 1]


@pytest.mark.parametrize("result", FAILURES)
def test_any_failure_backs_off_and_a_report_resets(result: FetchResult) -> None:
    failed = FetchState(factor=4).after(result, NOW, POLICY)
    assert failed.factor == 8
    assert failed.after(FetchResult.REPORTED, NOW, POLICY).factor == 1


@given(st.sampled_from([1, 2, 4, 8, 32]))
def test_the_cap_is_configurable(cap: int) -> None:
    policy = FetchPolicy(interval=HOUR, max_factor=cap)
    assert max(s.factor for s in replay([FetchResult.NO_REPORTS] * 8, policy)) == cap


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval": timedelta(0)}, "interval"),
        ({"interval": HOUR, "max_factor": 12}, "max_factor"),
        ({"interval": HOUR, "max_factor": 0}, "max_factor"),
        ({"interval": HOUR, "max_report_age": timedelta(0)}, "max_report_age"),
    ],
)
def test_a_policy_checks_itself(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        FetchPolicy(**kwargs)
    assert [v.field for v in err.value.violations] == [field]


@given(st.uuids())
def test_first_turns_spread_over_one_interval(tracker_id: uuid.UUID) -> None:
    due = POLICY.first_due(tracker_id, NOW)
    assert NOW <= due < NOW + HOUR
    assert due == POLICY.first_due(tracker_id, NOW)


def test_first_turns_of_a_fleet_are_spread_evenly() -> None:
    dues = [POLICY.first_due(uuid.uuid4(), NOW) for _ in range(4000)]
    per_quarter = [0, 0, 0, 0]
    for d in dues:
        per_quarter[int((d - NOW) / (HOUR / 4))] += 1
    assert all(800 < n < 1200 for n in per_quarter), per_quarter


@given(st.none() | st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=1)))
def test_window_starts_at_the_latest_report_never_more_than_seven_days_back(
    ago: timedelta | None,
) -> None:
    last = None if ago is None else NOW - ago
    start = POLICY.window_start(last, NOW)
    assert NOW - timedelta(days=7) <= start <= NOW
    if last is not None and NOW - timedelta(days=7) <= last <= NOW:
        assert start == last


@given(st.datetimes(timezones=st.just(UTC)))
def test_queue_scores_are_whole_milliseconds_exactly(t: datetime) -> None:
    ms = to_ms(t)
    assert from_ms(ms) <= t < from_ms(ms + 1)
    assert to_ms(from_ms(ms)) == ms


ACCOUNT = AccountPolicy(min_interval=timedelta(seconds=2), max_cooldown=timedelta(minutes=10))


def test_an_account_waits_its_minimum_interval_after_a_good_request() -> None:
    assert ACCOUNT.next_allowed(NOW, 0) == NOW + timedelta(seconds=2)


@given(st.floats(min_value=0, max_value=10**6))
def test_retry_after_is_honoured_up_to_the_cap_and_never_below_the_pace(after: float) -> None:
    wait = ACCOUNT.next_allowed(NOW, 1, after) - NOW
    assert wait == max(timedelta(seconds=2), min(timedelta(seconds=after), timedelta(minutes=10)))


@given(st.integers(1, 200))
def test_without_retry_after_the_cool_down_doubles_per_failure_capped(failures: int) -> None:
    wait = ACCOUNT.next_allowed(NOW, failures) - NOW
    expected = timedelta(seconds=min(2 ** (failures - 1), 600))
    assert wait == max(expected, timedelta(seconds=2))
    assert ACCOUNT.next_allowed(NOW, failures + 1) >= ACCOUNT.next_allowed(NOW, failures)
