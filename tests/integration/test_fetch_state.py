"""The fetcher's PostgreSQL side (active fleet, keys with the latest report, saved states) and
FetchQueryService over gRPC: what an administrator sees of one tracker and of the queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from findmy.reports.account import AsyncAppleAccount

from adapters.findmy.source import FindMyLocationSource
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from domain.access import Principal, Role
from domain.model import GeoPoint
from domain.reports import Report
from domain.scheduling import FetchPolicy, FetchResult, FetchState
from servers.config import Settings
from simulator.server import FETCH_PATH, Simulator, start
from tests.integration.conftest import Stack, stack_settings
from tests.integration.fleet import report, seed_fleet
from tracker.v1 import fetch_query_service_pb2 as fq
from tracker.v1 import fetch_query_service_pb2_grpc as fq_grpc
from tracker.v1 import setup_query_service_pb2 as q
from usecases.access import NewUser
from usecases.fetching import Account, FetcherConfig

pytestmark = pytest.mark.integration


async def test_the_active_fleet_is_trackers_with_a_key_in_a_run_active_now(
    pool: asyncpg.Pool, database_url: str
) -> None:
    fleet = await seed_fleet(database_url, 3)
    uow = PostgresUnitOfWorkFactory(pool)
    async with uow() as u:
        active = dict(await u.fetch_states.active_targets(datetime.now(UTC)))
        later = await u.fetch_states.active_targets(datetime.now(UTC) + timedelta(days=60))
    assert set(active) == set(fleet.trackers)
    assert set(active.values()) == {None}
    assert later == []
    # The same rule as FetchPolicy.active: still fetched for the grace period after the end.
    async with uow() as u:
        run_end = await pool.fetchval("SELECT max(end_time) FROM production_runs")
        policy = FetchPolicy(timedelta(minutes=5), end_grace=timedelta(hours=24))
        for after_end in (timedelta(hours=-1), timedelta(hours=23), timedelta(hours=25)):
            at = run_end + after_end
            graced = await u.fetch_states.active_targets(at, policy.end_grace)
            start = await pool.fetchval("SELECT min(start_time) FROM production_runs")
            assert bool(graced) == policy.active(at, start, run_end), after_end


async def test_keys_come_with_the_latest_report_and_states_are_saved(
    pool: asyncpg.Pool, database_url: str
) -> None:
    fleet = await seed_fleet(database_url, 2)
    a, b = fleet.trackers
    now = datetime.now(UTC)
    uow = PostgresUnitOfWorkFactory(pool)
    async with uow() as u:
        await u.reports.add_many(
            [
                Report(
                    tracker_id=a,
                    report_time=now - timedelta(hours=h),
                    position=GeoPoint(52.5, 13.4),
                    confidence=2,
                    horizontal_accuracy_m=10,
                )
                for h in (1, 3, 200)
            ]
        )
        state = FetchState().after(FetchResult.NO_REPORTS, now, FetchPolicy(timedelta(minutes=5)))
        await u.fetch_states.save_many([(b, state), (uuid.uuid4(), state)])  # 2nd: no tracker
        await u.commit()
    async with uow() as u:
        targets = await u.fetch_states.keys_for([a, b, uuid.uuid4()], now, now - timedelta(days=7))
        found = {t.key.tracker_id: (t.last_report, t.state) for t in targets}
        saved = await u.fetch_states.get(b)
        active = dict(await u.fetch_states.active_targets(now))
        run = await pool.fetchrow("SELECT start_time, end_time FROM production_runs")
        assert {(t.run_start, t.run_end) for t in targets} == {(run["start_time"], run["end_time"])}
        held = Report(
            tracker_id=a,
            report_time=now - timedelta(hours=1),
            position=GeoPoint(52.5, 13.4),
            confidence=2,
            horizontal_accuracy_m=10,
        )
        fresh = Report(
            tracker_id=b,
            report_time=now,
            position=GeoPoint(52.5, 13.4),
            confidence=2,
            horizontal_accuracy_m=10,
        )
        # A report we hold is no news; an unknown one is (same identity as add_many's key).
        assert await u.fetch_states.with_new_reports([held]) == set()
        assert await u.fetch_states.with_new_reports([held, fresh]) == {b}
        assert await u.fetch_states.with_new_reports([]) == set()
        # The times held from the latest minus the overlap on: what the overlap asks again.
        overlapping = await u.fetch_states.keys_for(
            [a, b], now, now - timedelta(days=7), overlap=timedelta(hours=2, minutes=30)
        )
        held_times = {t.key.tracker_id: t.key.held for t in overlapping}
        assert held_times[b] == ()
        assert sorted(held_times[a]) == [now - timedelta(hours=3), now - timedelta(hours=1)]
        assert {len(t.key.held) for t in targets} == {0, 1}  # no overlap: the latest only
    async with uow() as u:
        # The insert tells which trackers got news: the tracker of each new report.
        assert await u.reports.add_new([held, fresh, fresh]) == [b]
        assert await u.reports.add_new([held, fresh]) == []
    assert set(found) == {a, b}
    last_a, state_a = found[a]
    assert last_a is not None
    assert abs(last_a - (now - timedelta(hours=1))) < timedelta(milliseconds=1)
    assert state_a is None
    assert found[b] == (None, saved)
    assert saved is not None
    assert (saved.factor, saved.failures, saved.last_result) == (2, 1, FetchResult.NO_REPORTS)
    assert active[b] == saved.next_due


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(keep=5)
    runner = await start(simulator)
    yield simulator
    await runner.cleanup()


async def test_an_admin_sees_a_trackers_fetch_state_and_the_queue(
    stack: Stack, database_url: str, sim: Simulator
) -> None:
    assert stack.container is not None
    fleet = await seed_fleet(database_url, 3)
    reporting, silent, _ = fleet.trackers
    sim.add_reports(fleet.adv_keys[reporting], [report(5)])
    source = FindMyLocationSource(
        AsyncAppleAccount.from_json(sim.account_json()),
        stack.container.sealer(),
        fetch_url=sim.base_url + FETCH_PATH,
    )
    queue = await stack.container.fetch_queue.async_()
    account = Account("sim", source)
    worker = await stack.container.fetch_worker.async_(
        accounts=[account],
        config=FetcherConfig(
            worker_id="test", policy=FetchPolicy(interval=timedelta(milliseconds=50))
        ),
    )
    fetch = fq_grpc.FetchQueryServiceStub(stack.query_channel)
    try:
        assert await worker.sync("start") is not None
        before = await fetch.GetFetchState(fq.GetFetchStateRequest(tracker_id=str(silent)))
        assert before.fetch_state.queue_state == fq.FETCH_QUEUE_STATE_WAITING
        assert before.fetch_state.backoff_factor == 1
        await asyncio.sleep(0.1)
        # One turn serves all three (all due by now): looping until nothing is due could
        # serve a tracker twice on a slow machine, as its 50 ms interval passes again.
        assert (await worker.turn(account)).served == 3
    finally:
        await source.close()
    got = {
        t: (await fetch.GetFetchState(fq.GetFetchStateRequest(tracker_id=str(t)))).fetch_state
        for t in (reporting, silent)
    }
    assert got[reporting].backoff_factor == 1
    assert (got[reporting].success_count, got[reporting].failure_count) == (1, 0)
    assert got[reporting].last_result == "reported"
    assert got[reporting].HasField("last_success_time")
    assert (got[silent].backoff_factor, got[silent].failure_count) == (2, 1)
    assert got[silent].last_result == "no_reports"
    assert not got[silent].HasField("last_success_time")
    assert got[silent].next_due_time.ToDatetime(UTC) > got[silent].last_attempt_time.ToDatetime(UTC)
    whole = await fetch.GetFetchQueue(fq.GetFetchQueueRequest())
    assert (whole.queued_count, whole.claimed_count) == (3, 0)
    # The capacity figure of the last rebuild: 3 trackers fit one request; an account
    # without a budget allows any number.
    cap = whole.capacity
    assert (cap.tracker_count, cap.account_count, cap.needed_requests_per_interval) == (3, 1, 1)
    assert (cap.accounts_needed, cap.sufficient) == (1, True)
    # Out of the queue (e.g. being rebuilt): the saved state is still shown.
    await queue.remove([silent])
    gone = (await fetch.GetFetchState(fq.GetFetchStateRequest(tracker_id=str(silent)))).fetch_state
    assert gone.queue_state == fq.FETCH_QUEUE_STATE_NOT_QUEUED
    assert (gone.backoff_factor, gone.failure_count) == (2, 1)


@pytest.mark.parametrize(
    ("tracker_id", "code"),
    [
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT),
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_bad_and_unknown_trackers(
    stack: Stack, tracker_id: str, code: grpc.StatusCode
) -> None:
    fetch = fq_grpc.FetchQueryServiceStub(stack.query_channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fetch.GetFetchState(fq.GetFetchStateRequest(tracker_id=tracker_id))
    assert err.value.code() == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert "tracker_id" in (err.value.details() or "")


async def test_only_admins_read_fetch_state(stack: Stack, database_url: str) -> None:
    fleet = await seed_fleet(database_url, 1)
    email = "viewer@example.com"
    clients = (await stack.query.ListClients(q.ListClientsRequest())).clients
    await stack.access.create_user(
        Principal.system(),
        NewUser(
            email=email,
            password="a-long-password-1",
            memberships={uuid.UUID(clients[0].id): Role.CLIENT_ADMIN},
        ),
    )
    caller = stack.as_token(await stack.token_for(email))
    fetch = fq_grpc.FetchQueryServiceStub(caller.query_channel)
    for call in (
        fetch.GetFetchState(fq.GetFetchStateRequest(tracker_id=str(fleet.trackers[0]))),
        fetch.GetFetchQueue(fq.GetFetchQueueRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_without_redis_the_queue_view_is_unavailable(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    stack = await stack_for(stack_settings(database_url, redis_url="redis://127.0.0.1:1/0"))
    fetch = fq_grpc.FetchQueryServiceStub(stack.query_channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fetch.GetFetchQueue(fq.GetFetchQueueRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
