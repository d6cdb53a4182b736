"""Fetch scheduling rules as properties: backoff x2..x16 and reset, due times, windows, the
account's pace, and the queue's encoding."""

from __future__ import annotations

import bisect
import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.scheduling import (
    AccountPolicy,
    FetchPolicy,
    FetchResult,
    FetchState,
    capacity,
    from_ms,
    to_ms,
    turn_results,
)

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
def test_window_starts_at_the_latest_report_minus_the_overlap_never_seven_days_back(
    ago: timedelta | None,
) -> None:
    last = None if ago is None else NOW - ago
    start = POLICY.window_start(last, NOW)
    assert NOW - timedelta(days=7) <= start <= NOW
    if last is not None and NOW - timedelta(days=7) <= last - POLICY.overlap <= NOW:
        assert start == last - POLICY.overlap


times = st.timedeltas(min_value=timedelta(days=-20), max_value=timedelta(days=20))


@given(st.none() | times, times, times, st.timedeltas(timedelta(0), timedelta(days=2)))
def test_a_window_stays_inside_the_run_and_the_max_age_and_covers_late_uploads(
    last_ago: timedelta | None, start_ago: timedelta, end_in: timedelta, overlap: timedelta
) -> None:
    policy = FetchPolicy(interval=HOUR, overlap=overlap)
    last = None if last_ago is None else NOW - last_ago
    run_start, run_end = NOW - start_ago, NOW + end_in
    w = policy.window(last, NOW, run_start, run_end)
    assert w.since <= w.until <= NOW
    assert w.until <= run_end
    if w.since < w.until:  # else empty: the run ended longer ago than Apple keeps reports
        assert w.since >= run_start
        assert w.since >= NOW - policy.max_report_age
    # Every report dated within the overlap before the newest one we hold is asked for
    # again, as far as the run and Apple's retention allow.
    if last is not None:
        floor = max(run_start, NOW - policy.max_report_age)
        late = last - overlap
        if floor <= late <= min(NOW, run_end):
            assert w.since <= late


@given(times, st.timedeltas(timedelta(0), timedelta(days=3)))
def test_a_run_is_fetched_from_its_start_until_its_end_plus_the_grace(
    offset: timedelta, grace: timedelta
) -> None:
    policy = FetchPolicy(interval=HOUR, end_grace=grace)
    start, end = NOW, NOW + timedelta(days=5)
    t = NOW + offset
    assert policy.active(t, start, end) == (start <= t < end + grace)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40))
def test_a_turn_counts_as_reported_only_with_a_report_we_did_not_hold(
    turns: list[tuple[bool, bool]],
) -> None:
    """(answered, new): Apple answers the newest report again while the window holds it;
    only a report we did not hold resets the factor, anything else backs off x2..x16."""
    tid = uuid.uuid4()
    state, now = FetchState(), NOW
    for answered, new in turns:
        result = turn_results([tid], {tid} if answered and new else set())[tid]
        before = state.factor
        state = state.after(result, now, POLICY)
        if answered and new:
            assert (state.factor, result) == (1, FetchResult.REPORTED)
        else:
            assert result is FetchResult.NO_REPORTS
            assert state.factor == min(before * 2, 16)
        assert state.next_due is not None
        now = state.next_due


@given(st.sampled_from(FAILURES), st.integers(0, 4), times)
def test_a_failed_request_keeps_the_factor_and_the_due_time(
    result: FetchResult, doublings: int, due_in: timedelta
) -> None:
    state = FetchState()
    for _ in range(doublings):
        state = state.after(FetchResult.NO_REPORTS, NOW, POLICY)
    due = NOW + due_in
    after = state.after_failed_request(result, NOW, due)
    assert (after.factor, after.next_due, after.last_result) == (state.factor, due, result)
    assert (after.successes, after.failures) == (state.successes, state.failures + 1)


@given(
    st.sampled_from(list(FetchResult)),
    st.timedeltas(timedelta(0), HOUR / 4),
    st.integers(0, 4),
)
def test_a_tracker_served_early_keeps_its_cadence(
    result: FetchResult, early: timedelta, doublings: int
) -> None:
    """Filling a request with a tracker due soon does not move its schedule forward."""
    state = FetchState()
    for _ in range(doublings):
        state = state.after(FetchResult.NO_REPORTS, NOW, POLICY)
    due = NOW + early
    after = state.after(result, NOW, POLICY, due=due)
    assert after.next_due == due + POLICY.delay(after.factor)
    late = state.after(result, due, POLICY, due=NOW)  # served late: counts from the turn
    assert late.next_due == due + POLICY.delay(late.factor)


@given(st.datetimes(timezones=st.just(UTC)))
def test_queue_scores_are_whole_milliseconds_exactly(t: datetime) -> None:
    ms = to_ms(t)
    assert from_ms(ms) <= t < from_ms(ms + 1)
    assert to_ms(from_ms(ms)) == ms


ACCOUNT = AccountPolicy(
    min_interval=timedelta(seconds=2),
    max_cooldown=timedelta(minutes=10),
    probe_max=timedelta(seconds=60),
)


def test_an_account_waits_its_minimum_interval_after_a_good_request() -> None:
    assert ACCOUNT.next_allowed(NOW, 0) == NOW + timedelta(seconds=2)


@given(st.floats(min_value=0, max_value=10**6))
def test_retry_after_is_honoured_up_to_the_cap_and_never_below_the_pace(after: float) -> None:
    wait = ACCOUNT.next_allowed(NOW, 1, after) - NOW
    assert wait == max(timedelta(seconds=2), min(timedelta(seconds=after), timedelta(minutes=10)))


@given(st.integers(1, 200))
def test_without_retry_after_an_account_probes_again_within_the_probe_cap(failures: int) -> None:
    """A storm costs at most one probe request per ``probe_max``, not a doubled timer."""
    wait = ACCOUNT.next_allowed(NOW, failures) - NOW
    expected = timedelta(seconds=min(2 ** (failures - 1), 60))
    assert wait == max(expected, timedelta(seconds=2))
    assert wait <= ACCOUNT.probe_max
    assert ACCOUNT.next_allowed(NOW, failures + 1) >= ACCOUNT.next_allowed(NOW, failures)


@given(st.floats(0.5, 120) | st.integers(1, 120).map(float), st.floats(0, 600))
def test_an_account_never_exceeds_its_budget_in_any_hour(budget: float, min_s: float) -> None:
    policy = AccountPolicy(min_interval=timedelta(seconds=min_s), budget_per_hour=budget)
    sent, t = [], NOW
    while t < NOW + 3 * HOUR:
        sent.append(t)
        t = policy.next_allowed(t, 0)
    for i, start in enumerate(sent):
        in_hour = bisect.bisect_left(sent, start + HOUR) - i
        assert in_hour <= math.ceil(budget)


@given(
    st.integers(0, 300_000),
    st.integers(1, 50),
    st.integers(1, 64),
    st.floats(0.5, 120),
)
def test_capacity_says_how_many_accounts_the_fleet_needs(
    trackers: int, accounts: int, per_request: int, budget: float
) -> None:
    policy = AccountPolicy(budget_per_hour=budget)
    cap = capacity(trackers, accounts, per_request, HOUR / 4, policy)
    assert cap.needed_per_interval == math.ceil(trackers / per_request)
    assert cap.allowed_per_interval == pytest.approx(accounts * budget / 4)
    assert cap.sufficient == (cap.needed_per_interval <= cap.allowed_per_interval)
    enough = capacity(trackers, cap.accounts_needed, per_request, HOUR / 4, policy)
    assert enough.sufficient
    if cap.accounts_needed > 1:
        fewer = capacity(trackers, cap.accounts_needed - 1, per_request, HOUR / 4, policy)
        assert not fewer.sufficient
