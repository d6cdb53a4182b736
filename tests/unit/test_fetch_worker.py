"""FetchWorker on the in-memory fakes, on a fake clock: which trackers are queued, what one
turn does, fairness and backoff over many intervals, failures of the source and of PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import DependencyUnavailable
from domain.fetching import (
    FetchOutcome,
    SourceError,
    SourceRateLimited,
    SourceUnavailable,
    TrackerKey,
)
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    GeoPoint,
    ProductionRun,
    SealedSecret,
    Tracker,
)
from domain.reports import Report
from domain.scheduling import AccountPolicy, FetchPolicy, FetchResult
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.common import FakeUnitOfWork, FakeUnitOfWorkFactory
from tests.unit.fakes.fetching import FakeAccountGate, FakeFetchQueue
from usecases.fetching import Account, FetcherConfig, FetchWorker

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
INTERVAL = timedelta(minutes=10)


def report(tracker_id: uuid.UUID, at: datetime) -> Report:
    return Report(
        tracker_id=tracker_id,
        report_time=at,
        position=GeoPoint(52.5, 13.4),
        confidence=2,
        horizontal_accuracy_m=20,
    )


@dataclass
class FakeSource:
    """Answers one new report for each 'healthy' key, and for each 'stale' key the same old
    report again (as Apple does while the window includes it); raises the queued errors
    first."""

    healthy: set[uuid.UUID]
    clock: FakeClock
    stale: set[uuid.UUID] = field(default_factory=set)
    errors: list[SourceError] = field(default_factory=list)
    requests: list[list[uuid.UUID]] = field(default_factory=list)
    windows: list[dict[uuid.UUID, tuple[datetime | None, datetime | None]]] = field(
        default_factory=list
    )

    async def fetch(
        self, keys: Sequence[TrackerKey], since: datetime, until: datetime
    ) -> FetchOutcome:
        self.requests.append([k.tracker_id for k in keys])
        self.windows.append({k.tracker_id: (k.since, k.until) for k in keys})
        if self.errors:
            raise self.errors.pop(0)
        now = self.clock.now()
        return FetchOutcome(
            [
                report(k.tracker_id, now - timedelta(seconds=30))
                for k in keys
                if k.tracker_id in self.healthy
            ]
            + [
                report(k.tracker_id, NOW - timedelta(hours=1))
                for k in keys
                if k.tracker_id in self.stale
            ]
        )


@dataclass
class World:
    uow: FakeUnitOfWorkFactory
    clock: FakeClock
    queue: FakeFetchQueue
    gate: FakeAccountGate
    source: FakeSource
    worker: FetchWorker
    account: Account
    run: ProductionRun
    trackers: list[Tracker]

    async def drain(self) -> int:
        """Turns until nothing is due now; returns trackers served."""
        served = 0
        while (turn := await self.worker.turn(self.account)).served:
            served += turn.served
        return served


def make_world(
    n: int = 100,
    silent: float = 0.3,
    per_request: int = 16,
    horizon: float = 0.0,
    stale: bool = False,
    end_grace: timedelta = timedelta(0),
    **config: object,
) -> World:
    """``n`` trackers of one run; the first ``silent`` share never report (``stale``: Apple
    answers their one old report again and again); the others report on every fetch."""
    clock = FakeClock(NOW)
    uow = FakeUnitOfWorkFactory()
    t = uow.committed
    client = Client(id=uuid.uuid4(), create_time=NOW, update_time=NOW, display_name="c")
    brand = Brand(
        id=uuid.uuid4(), create_time=NOW, update_time=NOW, client_id=client.id, display_name="b"
    )
    run = ProductionRun(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        brand_id=brand.id,
        client_id=client.id,
        display_name="r",
        start_time=NOW - timedelta(days=1),
        end_time=NOW + timedelta(days=30),
    )
    t.clients[client.id], t.brands[brand.id], t.production_runs[run.id] = client, brand, run
    trackers = []
    for i in range(n):
        tr = Tracker.in_run(
            run,
            AdvertisementKey(i.to_bytes(28, "big")),
            NOW,
            sealed_private_key=SealedSecret("k", b"x" * 40),
        )
        t.trackers[tr.id] = tr
        trackers.append(tr)
    healthy = {tr.id for tr in trackers[int(n * silent) :]}
    source = FakeSource(healthy, clock)
    if stale:
        source.stale = {tr.id for tr in trackers[: int(n * silent)]}
    account = Account("a1", source)
    queue, gate = FakeFetchQueue(), FakeAccountGate()
    settings = FetcherConfig(
        worker_id="w1",
        policy=FetchPolicy(interval=INTERVAL, fill_horizon=horizon, end_grace=end_grace),
        account_policy=AccountPolicy(min_interval=timedelta(seconds=1)),
        keys_per_request=per_request,
    )
    settings = dataclasses.replace(settings, **config)  # type: ignore[arg-type]
    worker = FetchWorker(uow, queue, gate, [account], clock, settings)
    return World(uow, clock, queue, gate, source, worker, account, run, trackers)


async def test_sync_queues_every_active_tracker_with_a_key_spread_over_one_interval() -> None:
    w = make_world(50)
    keyless = Tracker.in_run(w.run, AdvertisementKey(b"\xff" * 28), NOW)
    w.uow.committed.trackers[keyless.id] = keyless
    result = await w.worker.sync("start")
    assert result is not None
    assert (result.added, result.removed, result.active) == (50, 0, 50)
    assert set(w.queue.due) == {t.id for t in w.trackers}
    assert all(NOW <= d < NOW + INTERVAL for d in w.queue.due.values())
    again = await w.worker.sync("periodic")
    assert again is not None
    assert (again.added, again.removed) == (0, 0)


async def test_a_turn_fetches_due_trackers_in_one_request_and_requeues_them() -> None:
    w = make_world(40, silent=0.5, per_request=64)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    turn = await w.worker.turn(w.account)
    assert (turn.served, turn.requested) == (40, True)
    assert len(w.source.requests) == 1
    assert len(w.source.requests[0]) == 40
    states = w.uow.committed.fetch_states
    assert len(w.uow.committed.reports) == 20
    silent, healthy = w.trackers[:20], w.trackers[20:]
    assert {states[t.id].factor for t in healthy} == {1}
    assert {states[t.id].last_result for t in healthy} == {FetchResult.REPORTED}
    assert {states[t.id].factor for t in silent} == {2}
    assert w.queue.leases == {}
    assert w.queue.due[healthy[0].id] == NOW + 2 * INTERVAL
    assert w.queue.due[silent[0].id] == NOW + 3 * INTERVAL
    # which account fetched them (the Apple-account cohort of outage detection)
    assert set(w.uow.committed.fetch_accounts.values()) == {w.account.name}
    assert set(w.uow.committed.fetch_accounts) == {t.id for t in w.trackers}


async def test_the_window_starts_at_the_run_start_then_at_the_latest_report_minus_overlap() -> None:
    w = make_world(4, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    await w.drain()
    # Never before the run's start (a day ago), although Apple keeps seven days.
    assert set(w.source.windows[0].values()) == {(w.run.start_time, NOW + INTERVAL)}
    w.clock.set(NOW + 3 * INTERVAL)
    await w.drain()
    latest = NOW + INTERVAL - timedelta(seconds=30)
    overlap = w.worker._config.policy.overlap
    assert set(w.source.windows[-1].values()) == {(latest - overlap, NOW + 3 * INTERVAL)}


async def test_after_the_run_ends_its_trackers_are_fetched_for_the_grace_period_up_to_the_end() -> (
    None
):
    w = make_world(3, silent=0, end_grace=timedelta(hours=6))
    end = NOW + 2 * INTERVAL
    w.uow.committed.production_runs[w.run.id] = w.run.with_changes({"end_time": end}, NOW)
    await w.worker.sync("start")
    w.clock.set(end + timedelta(hours=1))
    assert await w.drain() == 3
    assert {u for _, u in w.source.windows[-1].values()} == {end}
    w.clock.set(end + timedelta(hours=7))
    result = await w.worker.sync("periodic")
    assert result is not None
    assert (result.removed, result.active) == (3, 0)


async def served_in_order(w: World, steps: int, step: timedelta) -> dict[uuid.UUID, list[datetime]]:
    """Run the fleet for ``steps`` clock steps; returns each tracker's turns. Checks on the
    way that every claim takes the trackers with the earliest due times: nobody gets a
    second turn while a tracker due before it waits."""
    turns: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    for i in range(steps):
        w.clock.set(NOW + step * i)
        while True:
            waiting_before = dict(w.queue.due)
            if not (await w.worker.turn(w.account)).served:
                break
            served = w.source.requests[-1]
            latest_served = max(waiting_before[t] for t in served)
            left = [d for t, d in waiting_before.items() if t not in set(served)]
            assert all(d >= latest_served for d in left)
            for tid in served:
                turns[tid].append(w.clock.now())
    return turns


@pytest.mark.parametrize("horizon", [0.0, 0.25])
@pytest.mark.parametrize("silent", [0.0, 0.3, 1.0])
async def test_every_due_tracker_is_served_before_any_second_turn(
    silent: float, horizon: float
) -> None:
    """Fairness over 40 intervals: each healthy tracker once per interval, the silent ones
    after 2, 4, 8, 16, 16... intervals; nobody waits more than 16 intervals. Filling
    requests with trackers due within the horizon moves a turn ahead by at most the horizon
    and never shifts the cadence."""
    w = make_world(120, silent=silent, per_request=16, horizon=horizon)
    await w.worker.sync("start")
    turns = await served_in_order(w, 400, INTERVAL / 10)
    healthy = set(w.source.healthy)
    slack = horizon + 0.1  # served early by up to the horizon, late by up to one step
    for tr in w.trackers:
        gaps = [(b - a) / INTERVAL for a, b in zip(turns[tr.id], turns[tr.id][1:], strict=False)]
        assert gaps, tr.id
        expected = [1.0] * len(gaps) if tr.id in healthy else [2.0, 4.0, 8.0] + [16.0] * 40
        for gap, want in zip(gaps, expected, strict=False):
            assert abs(gap - want) <= slack + 1e-9, (gaps, want)
        # and over many turns the cadence does not drift ahead
        total = sum(expected[: len(gaps)])
        assert abs(sum(gaps) - total) <= slack + 1e-9


async def test_a_silent_tracker_whose_old_report_comes_back_again_backs_off() -> None:
    """Apple answers the newest report again while the window includes it: that is no news,
    so the silent trackers back off x2..x16 instead of staying at x1."""
    w = make_world(20, silent=0.5, stale=True, per_request=32)
    await w.worker.sync("start")
    turns = await served_in_order(w, 400, INTERVAL / 10)
    silent = w.source.stale
    states = w.uow.committed.fetch_states
    assert {states[t].factor for t in silent} == {16}
    assert {states[t].factor for t in w.source.healthy} == {1}
    assert {states[t].successes for t in silent} == {1}  # the first fetch brought it
    assert max(len(turns[t]) for t in silent) < min(len(turns[t]) for t in w.source.healthy) / 4


async def test_a_request_is_filled_with_trackers_due_soonest_within_the_horizon() -> None:
    """300 trackers spread over the interval, polled every 10th of it: without a horizon a
    request goes out whenever a few are due; with a quarter of the interval it is full."""
    mean = {}
    for horizon in (0.0, 0.25):
        w = make_world(300, silent=0, per_request=64, horizon=horizon)
        await w.worker.sync("start")
        await served_in_order(w, 100, INTERVAL / 10)
        sizes = [len(r) for r in w.source.requests]
        mean[horizon] = sum(sizes) / len(sizes)
    assert mean[0.0] <= 32
    assert mean[0.25] >= 60


async def test_a_rate_limited_request_pauses_the_account_and_its_trackers_are_served_first() -> (
    None
):
    """A 429 is the account's trouble, not the trackers': they keep their factor and their
    due time, so the next request (another account's, or this one's probe) takes them
    before anyone due later."""
    w = make_world(40, silent=0, per_request=10)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    before = dict(w.queue.due)
    w.source.errors.append(SourceRateLimited("HTTP 429", retry_after_s=120))
    turn = await w.worker.turn(w.account)
    assert (turn.requested, turn.served) == (True, 10)
    assert isinstance(turn.failure, SourceRateLimited)
    failed = w.source.requests[0]
    states = w.uow.committed.fetch_states
    assert {states[t].factor for t in failed} == {1}
    assert {states[t].last_result for t in failed} == {FetchResult.RATE_LIMITED}
    assert {states[t].failures for t in failed} == {1}  # counted, without a backoff
    assert {w.queue.due[t] for t in failed} == {before[t] for t in failed}
    assert w.worker.next_allowed(w.account) == w.clock.now() + timedelta(seconds=120)
    w.clock.set(NOW + INTERVAL + timedelta(seconds=120))
    await w.worker.turn(w.account)
    assert w.source.requests[1] == failed  # re-served first
    assert {states[t].factor for t in failed} == {1}


async def test_without_retry_after_an_account_probes_within_a_minute_not_a_doubled_timer() -> None:
    w = make_world(40, silent=0, per_request=10)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    pauses = []
    for _ in range(12):
        w.source.errors.append(SourceUnavailable("HTTP 503"))
        await w.worker.turn(w.account)
        pauses.append((w.worker.next_allowed(w.account) - w.clock.now()).total_seconds())
    assert pauses[:6] == [1, 2, 4, 8, 16, 32]
    assert set(pauses[6:]) == {60}
    await w.worker.turn(w.account)  # the probe succeeds: the account is back at its pace
    assert w.worker.next_allowed(w.account) == w.clock.now() + timedelta(seconds=1)


async def test_a_request_we_stopped_waiting_for_holds_the_account_until_the_source_is_done() -> (
    None
):
    w = make_world(4, silent=0, source_busy=timedelta(seconds=90))
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    w.source.errors.append(SourceUnavailable("no answer", timed_out=True))
    turn = await w.worker.turn(w.account)
    assert turn.sent_at == NOW + INTERVAL
    assert w.worker.next_allowed(w.account) == NOW + INTERVAL + timedelta(seconds=90)


async def test_a_source_that_never_answers_is_cut_off_by_the_request_timeout() -> None:
    w = make_world(2, silent=0, request_timeout=timedelta(milliseconds=50))
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)

    async def hang(*args: object) -> FetchOutcome:
        await asyncio.Event().wait()
        raise AssertionError

    w.source.fetch = hang  # type: ignore[method-assign]
    turn = await w.worker.turn(w.account)
    assert isinstance(turn.failure, SourceUnavailable)
    assert turn.failure.timed_out
    assert w.worker.next_allowed(w.account) >= NOW + INTERVAL + timedelta(seconds=60)


async def test_the_capacity_figure_says_how_many_accounts_the_fleet_needs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = make_world(
        1000,
        per_request=64,
        account_policy=AccountPolicy(budget_per_hour=4),
    )
    await w.worker.sync("start")
    stats = await w.queue.stats(NOW)
    assert stats.capacity is not None
    # 1,000 trackers / 64 keys = 16 requests per 10-minute interval; one account at 4 an
    # hour sends 0.67 in that time: 24 accounts are needed.
    assert (stats.capacity.needed_per_interval, stats.capacity.accounts_needed) == (16, 24)
    assert not stats.capacity.sufficient
    assert any("capacity short" in r.getMessage() for r in caplog.records)


async def test_trackers_of_an_ended_run_leave_the_queue_and_an_extended_run_returns() -> None:
    """(With no grace period after the end.)"""
    w = make_world(10)
    await w.worker.sync("start")
    ended = w.run.with_changes({"end_time": NOW + timedelta(hours=1)}, NOW)
    w.uow.committed.production_runs[w.run.id] = ended
    w.clock.set(NOW + timedelta(hours=2))
    result = await w.worker.sync("periodic")
    assert result is not None
    assert (result.removed, result.active) == (10, 0)
    assert w.queue.due == {}
    w.uow.committed.production_runs[w.run.id] = ended.with_changes(
        {"end_time": NOW + timedelta(days=9)}, NOW
    )
    result = await w.worker.sync("periodic")
    assert result is not None
    assert result.added == 10


async def test_a_claimed_tracker_whose_run_ended_is_dropped_not_fetched() -> None:
    w = make_world(5)
    await w.worker.sync("start")
    w.uow.committed.production_runs[w.run.id] = w.run.with_changes(
        {"end_time": NOW + timedelta(minutes=1)}, NOW
    )
    w.clock.set(NOW + INTERVAL)
    turn = await w.worker.turn(w.account)
    assert (turn.served, turn.requested) == (5, False)
    assert w.source.requests == []
    assert w.queue.due == {}
    assert w.queue.leases == {}


async def test_a_postgres_outage_while_storing_is_waited_out_and_no_report_is_lost() -> None:
    w = make_world(8, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    failures: list[int] = [3]
    pauses: list[float] = []

    def flaky() -> FakeUnitOfWork:
        uow = w.uow()
        if len(w.source.requests) == 1:
            commit_for_real = uow.commit

            async def commit() -> None:
                if failures[0]:
                    failures[0] -= 1
                    raise DependencyUnavailable("postgres", "ConnectionResetError")
                await commit_for_real()

            uow.commit = commit  # type: ignore[method-assign]
        return uow

    async def sleep(s: float) -> None:
        pauses.append(s)

    worker = FetchWorker(
        flaky, w.queue, w.gate, [w.account], w.clock, w.worker._config, sleep=sleep
    )
    turn = await worker.turn(w.account)
    assert turn.served == 8
    assert len(w.source.requests) == 1
    assert pauses == [1.0, 2.0, 4.0]
    assert len(w.uow.committed.reports) == 8


async def test_a_worker_that_stops_heartbeating_loses_its_claims_to_another() -> None:
    w = make_world(6, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    first = await w.queue.claim("dead", 6, w.clock.now(), timedelta(minutes=2))
    assert len(first.claims) == 6
    w.clock.set(NOW + INTERVAL + timedelta(seconds=16))
    turn = await w.worker.turn(w.account)
    assert turn.served == 6
    assert await w.queue.complete("dead", [(c.tracker_id, NOW) for c in first.claims]) == 0


def second_worker(w: World, worker_id: str = "w2") -> tuple[FetchWorker, Account]:
    """Another fetcher on the same queue and database, with its own account (answering as
    the first one's does)."""
    account = Account("a2", FakeSource(w.source.healthy, w.clock))
    config = dataclasses.replace(w.worker.config, worker_id=worker_id)
    return FetchWorker(w.uow, w.queue, w.gate, [account], w.clock, config), account


async def test_a_stalled_turn_whose_claims_were_taken_over_leaves_them_to_the_new_holder() -> None:
    """Issue 11 (bench at 250,000: 320 trackers ended no_reports): a fetcher stalls past its
    TTL while its request is out; another takes its claims over and serves them. The stalled
    turn must then neither store them nor overwrite the state the other turn saved: one turn
    per tracker in the cycle, and it counts as reported."""
    w = make_world(6, silent=0, per_request=8)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    other, other_account = second_worker(w)
    answer = w.source.fetch

    async def stalled(keys: Sequence[TrackerKey], since: datetime, until: datetime) -> FetchOutcome:
        w.clock.advance(timedelta(seconds=16))  # past the TTL: w1 looks dead
        assert (await other.turn(other_account)).served == 6
        return await answer(keys, since, until)  # the same reports the other turn stored

    w.source.fetch = stalled  # type: ignore[method-assign]
    turn = await w.worker.turn(w.account)
    assert turn.served == 6
    states = w.uow.committed.fetch_states
    assert {states[t.id].last_result for t in w.trackers} == {FetchResult.REPORTED}
    assert {(states[t.id].factor, states[t.id].successes) for t in w.trackers} == {(1, 1)}
    assert len(w.uow.committed.reports) == 6
    assert w.queue.leases == {}
    # requeued once, by the other turn (reclaimed claims are due when taken over)
    assert {w.queue.due[t.id] for t in w.trackers} == {NOW + 2 * INTERVAL + timedelta(seconds=16)}


async def test_a_turn_that_lost_its_claims_before_asking_sends_no_request() -> None:
    """The stall came before the request: the claims are another fetcher's now, so this
    one spends no request of its account on them."""
    w = make_world(6, silent=0, per_request=8)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    other, other_account = second_worker(w)

    async def stall_then_targets(ids: list[uuid.UUID], now: datetime) -> object:
        w.clock.advance(timedelta(seconds=16))
        assert (await other.turn(other_account)).served == 6
        return await targets(ids, now)

    targets = w.worker._targets
    w.worker._targets = stall_then_targets  # type: ignore[method-assign]
    turn = await w.worker.turn(w.account)
    assert (turn.served, turn.requested) == (6, False)
    assert w.source.requests == []  # only the other fetcher asked
    states = w.uow.committed.fetch_states
    assert {(states[t.id].last_result, states[t.id].successes) for t in w.trackers} == {
        (FetchResult.REPORTED, 1)
    }


async def test_a_defect_during_a_turn_hands_the_claims_back_due_as_before() -> None:
    w = make_world(4, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)

    class Broken(Exception):
        pass

    async def broken(*args: object) -> FetchOutcome:
        raise Broken

    w.source.fetch = broken  # type: ignore[method-assign]
    before = dict(w.queue.due)
    with pytest.raises(Broken):
        await w.worker.turn(w.account)
    assert w.queue.leases == {}
    assert w.queue.due == before  # served first again, factor kept


async def test_reports_dated_before_the_run_or_after_its_end_are_dropped_even_if_answered() -> None:
    """Apple has been seen to ignore a request's dates: the run's window holds anyway."""
    w = make_world(2, silent=0, end_grace=timedelta(hours=6))
    end = NOW + INTERVAL
    w.uow.committed.production_runs[w.run.id] = w.run.with_changes({"end_time": end}, NOW)
    await w.worker.sync("start")
    a, b = w.trackers
    w.clock.set(end + timedelta(hours=1))

    async def careless(
        keys: Sequence[TrackerKey], since: datetime, until: datetime
    ) -> FetchOutcome:
        return FetchOutcome(
            [
                report(a.id, w.run.start_time - timedelta(minutes=1)),  # before the start
                report(a.id, end + timedelta(minutes=5)),  # after the end
                report(b.id, end - timedelta(minutes=5)),  # inside: kept
            ]
        )

    w.source.fetch = careless  # type: ignore[method-assign]
    await w.drain()
    stored = list(w.uow.committed.reports.values())
    assert [(r.tracker_id, r.report_time) for r in stored] == [(b.id, end - timedelta(minutes=5))]
    states = w.uow.committed.fetch_states
    assert (states[a.id].last_result, states[b.id].last_result) == (
        FetchResult.NO_REPORTS,
        FetchResult.REPORTED,
    )


async def test_a_report_dated_after_the_claim_is_kept() -> None:
    """A finder's report can be dated a moment after the request left (clocks differ)."""
    w = make_world(1, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    [t] = w.trackers

    async def ahead(keys: Sequence[TrackerKey], since: datetime, until: datetime) -> FetchOutcome:
        return FetchOutcome([report(t.id, w.clock.now() + timedelta(seconds=2))])

    w.source.fetch = ahead  # type: ignore[method-assign]
    await w.drain()
    assert len(w.uow.committed.reports) == 1
    assert w.uow.committed.fetch_states[t.id].last_result is FetchResult.REPORTED


async def test_the_periodic_check_is_one_per_period_for_the_fleet() -> None:
    w = make_world(5)
    assert not await w.worker.synced_lately()  # never rebuilt
    await w.worker.sync("start")
    assert await w.worker.synced_lately()  # another process's timer now finds it fresh
    w.clock.set(NOW + w.worker._config.queue_check)
    assert not await w.worker.synced_lately()
