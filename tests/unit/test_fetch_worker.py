"""FetchWorker on the in-memory fakes, on a fake clock: which trackers are queued, what one
turn does, fairness and backoff over many intervals, failures of the source and of PostgreSQL."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import DependencyUnavailable
from domain.fetching import FetchOutcome, SourceError, SourceRateLimited, TrackerKey
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
from usecases.fetching import Account, FetcherConfig, FetchWorker

from .fakes import (
    FakeAccountGate,
    FakeClock,
    FakeFetchQueue,
    FakeUnitOfWork,
    FakeUnitOfWorkFactory,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
INTERVAL = timedelta(minutes=10)


@dataclass
class FakeSource:
    """Answers one report for each 'healthy' key; raises the queued errors first."""

    healthy: set[uuid.UUID]
    clock: FakeClock
    errors: list[SourceError] = field(default_factory=list)
    requests: list[list[uuid.UUID]] = field(default_factory=list)
    windows: list[dict[uuid.UUID, datetime | None]] = field(default_factory=list)

    async def fetch(
        self, keys: Sequence[TrackerKey], since: datetime, until: datetime
    ) -> FetchOutcome:
        self.requests.append([k.tracker_id for k in keys])
        self.windows.append({k.tracker_id: k.since for k in keys})
        if self.errors:
            raise self.errors.pop(0)
        now = self.clock.now()
        return FetchOutcome(
            [
                Report(
                    tracker_id=k.tracker_id,
                    report_time=now - timedelta(seconds=30),
                    position=GeoPoint(52.5, 13.4),
                    confidence=2,
                    horizontal_accuracy_m=20,
                )
                for k in keys
                if k.tracker_id in self.healthy
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


def make_world(n: int = 100, silent: float = 0.3, per_request: int = 16) -> World:
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
    account = Account("a1", source)
    queue, gate = FakeFetchQueue(), FakeAccountGate()
    config = FetcherConfig(
        worker_id="w1",
        policy=FetchPolicy(interval=INTERVAL),
        account_policy=AccountPolicy(min_interval=timedelta(seconds=1)),
        keys_per_request=per_request,
    )
    worker = FetchWorker(uow, queue, gate, [account], clock, config)
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


async def test_the_window_starts_at_the_latest_stored_report() -> None:
    w = make_world(4, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    await w.drain()
    assert set(w.source.windows[0].values()) == {NOW + INTERVAL - timedelta(days=7)}
    w.clock.set(NOW + 3 * INTERVAL)
    await w.drain()
    latest = NOW + INTERVAL - timedelta(seconds=30)
    assert set(w.source.windows[-1].values()) == {latest}


@pytest.mark.parametrize("silent", [0.0, 0.3, 1.0])
async def test_every_due_tracker_is_served_before_any_second_turn(silent: float) -> None:
    """Fairness over 40 intervals: each healthy tracker once per interval, the silent ones
    after 2, 4, 8, 16, 16... intervals; nobody waits more than 16 intervals."""
    w = make_world(300, silent=silent, per_request=32)
    await w.worker.sync("start")
    turns: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    step = INTERVAL / 10
    for i in range(400):
        w.clock.set(NOW + step * i)
        while (await w.worker.turn(w.account)).served:
            for tid in w.source.requests[-1]:
                turns[tid].append(w.clock.now())
    healthy = set(w.source.healthy)
    for tr in w.trackers:
        gaps = [
            round((b - a) / INTERVAL, 1)
            for a, b in zip(turns[tr.id], turns[tr.id][1:], strict=False)
        ]
        assert gaps, tr.id
        if tr.id in healthy:
            assert set(gaps) == {1.0}, gaps
        else:
            assert gaps[:5] == [2.0, 4.0, 8.0, 16.0, 16.0][: len(gaps)], gaps
            assert max(gaps) <= 16.0


async def test_a_rate_limited_request_backs_off_its_trackers_and_the_account() -> None:
    w = make_world(10, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)
    w.source.errors.append(SourceRateLimited("HTTP 429", retry_after_s=120))
    turn = await w.worker.turn(w.account)
    assert turn.requested
    assert turn.served == 10
    assert {s.factor for s in w.uow.committed.fetch_states.values()} == {2}
    assert {s.last_result for s in w.uow.committed.fetch_states.values()} == {
        FetchResult.RATE_LIMITED
    }
    assert w.worker.next_allowed(w.account) == w.clock.now() + timedelta(seconds=120)


async def test_trackers_of_an_ended_run_leave_the_queue_and_an_extended_run_returns() -> None:
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
        if failures[0] and len(w.source.requests) == 1:
            failures[0] -= 1

            async def commit() -> None:
                raise DependencyUnavailable("postgres", "ConnectionResetError")

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


async def test_a_defect_during_a_turn_hands_the_claims_back_with_backoff() -> None:
    w = make_world(4, silent=0)
    await w.worker.sync("start")
    w.clock.set(NOW + INTERVAL)

    class Broken(Exception):
        pass

    async def broken(*args: object) -> FetchOutcome:
        raise Broken

    w.source.fetch = broken  # type: ignore[method-assign]
    with pytest.raises(Broken):
        await w.worker.turn(w.account)
    assert w.queue.leases == {}
    assert set(w.queue.due.values()) == {NOW + INTERVAL + 2 * INTERVAL}
