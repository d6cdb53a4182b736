"""Outage detection on a real database: a fleet in which one cohort goes dark (every tracker
~50 days after its first report, the seed's timer-overflow bug) is named as an outage of the
"days since first report" cohort, and nothing else is; the outage ends when they report
again; the events are listed to the users of their client only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from adapters.postgres.outages import PostgresOutageRepository
from adapters.postgres.pool import open_pool
from adapters.postgres.silence import PostgresCadenceRepository
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from domain.access import Principal, Role
from domain.outages import Dimension, OutageRule, age_bin
from domain.scheduling import FetchState
from domain.silence import SilenceRule
from tests.integration.conftest import Stack
from tests.integration.test_keys import run_of_new_client
from tests.integration.test_silence import new_trackers
from tests.unit.fakes.base import FakeClock
from tracker.v1 import fleet_query_service_pb2 as fq
from tracker.v1 import fleet_query_service_pb2_grpc as fq_grpc
from usecases.access import NewUser
from usecases.outages import DetectOutages
from usecases.silence import LearnCadences

pytestmark = pytest.mark.integration

T0 = datetime(2026, 8, 1, tzinfo=UTC)  # inside the runs' window (2026)
STEP = timedelta(hours=2)
REPORT_COLUMNS = [
    "tracker_id",
    "report_time",
    "latitude_e7",
    "longitude_e7",
    "confidence",
    "horizontal_accuracy_m",
    "source",
]


def reports_of(tracker: str, first: datetime, until: datetime) -> list[tuple[object, ...]]:
    """A first report at ``first``, then one every 2 h over the last 14 days up to ``until``."""
    times = [first]
    t = max(first, until - timedelta(days=14))
    while t <= until:
        times.append(t)
        t += STEP
    return [(uuid.UUID(tracker), w, 0, 0, 2, 10, "test") for w in sorted(set(times))]


async def test_a_cohort_that_goes_dark_fifty_days_after_its_first_report_is_named(
    stack: Stack, database_url: str
) -> None:
    client, run = await run_of_new_client(stack, "acme")
    other, other_run = await run_of_new_client(stack, "other")
    healthy = await new_trackers(stack, run.id, 40)
    doomed = await new_trackers(stack, run.id, 8)
    elsewhere = await new_trackers(stack, other_run.id, 10)
    t1 = T0 + timedelta(hours=12)
    t2 = T0 + timedelta(days=3)
    rows = []
    for i, t in enumerate(healthy):  # first reports 1..40 days back, reporting throughout
        rows += reports_of(t, T0 - timedelta(days=1 + i), t2)
    for i, t in enumerate(doomed):  # first reports 50 days before T0 (give or take hours)
        rows += reports_of(t, T0 - timedelta(days=50, hours=i), T0)
    for i, t in enumerate(elsewhere):
        rows += reports_of(t, T0 - timedelta(days=3 * i + 1), t2)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "reports",
            records=rows,
            columns=REPORT_COLUMNS,
        )
    finally:
        await conn.close()

    clock = FakeClock(T0 - timedelta(hours=2))
    pool = await open_pool(database_url, max_size=2)
    try:
        learn = LearnCadences(PostgresCadenceRepository(pool), clock, SilenceRule(), 1000)
        detect = DetectOutages(PostgresOutageRepository(pool), clock, OutageRule())

        async def turn_at(when: datetime):  # type: ignore[no-untyped-def]
            clock.set(when)
            while not await learn():
                pass
            return await detect()

        before = await turn_at(T0 - timedelta(hours=2))  # everyone reporting: the baseline
        assert before.opened == []
        assert before.cohorts > 0
        dark = await turn_at(t1)  # the doomed went quiet at T0, silent since T0 + 6 h
        [outage] = dark.opened
        assert outage.cohort.client_id == uuid.UUID(client.id)
        assert outage.cohort.dimension is Dimension.FIRST_REPORT_AGE
        assert outage.cohort.key == "50-59" == age_bin(T0 - timedelta(days=50), t1, 10)
        assert (outage.silent, outage.trackers, outage.share, outage.baseline) == (8, 8, 1.0, 0.0)
        assert outage.start_time == t1
        still = await turn_at(t1 + timedelta(hours=1))  # one outage per cohort at a time
        assert still.opened == []
        assert [o.id for o in still.open] == [outage.id]

        # they come back (new firmware): the outage ends
        conn = await asyncpg.connect(database_url)
        try:
            await conn.copy_records_to_table(
                "reports",
                records=[r for t in doomed for r in reports_of(t, t2 - timedelta(days=1), t2)],
                columns=REPORT_COLUMNS,
            )
        finally:
            await conn.close()
        back = await turn_at(t2)
        assert [o.id for o in back.ended] == [outage.id]
        assert back.open == []
    finally:
        await pool.close()

    # the API: the client's users see it, another client's do not
    assert stack.query_channel is not None
    fleet = fq_grpc.FleetQueryServiceStub(stack.query_channel)
    listed = await fleet.ListOutageEvents(fq.ListOutageEventsRequest())
    [event] = listed.events
    assert (event.dimension, event.cohort_key, event.silent_count) == (
        fq.COHORT_DIMENSION_FIRST_REPORT_AGE,
        "50-59",
        8,
    )
    assert event.client_id == client.id
    assert event.HasField("end_time")
    assert not (await fleet.ListOutageEvents(fq.ListOutageEventsRequest(open_only=True))).events
    await stack.access.create_user(
        Principal.system(),
        NewUser(
            email="viewer@other.test",
            password="a-long-enough-password",
            memberships={uuid.UUID(other.id): Role.VIEWER},
        ),
    )
    outsider = stack.as_token(await stack.token_for("viewer@other.test"))
    assert outsider.query_channel is not None
    theirs = fq_grpc.FleetQueryServiceStub(outsider.query_channel)
    assert not (await theirs.ListOutageEvents(fq.ListOutageEventsRequest())).events
    assert not (
        await theirs.ListOutageEvents(fq.ListOutageEventsRequest(client_id=client.id))
    ).events


async def test_the_trackers_of_one_apple_account_going_dark_are_named_by_that_account(
    stack: Stack, database_url: str
) -> None:
    """An account banned or logged out silences exactly the trackers it fetched: the fetcher
    keeps which account last fetched each tracker (fetch_state.last_account, written with
    the fetch states), and the outage names the APPLE_ACCOUNT cohort, not a run or an age."""
    _, run = await run_of_new_client(stack, "accounts")
    trackers = await new_trackers(stack, run.id, 48)
    banned = trackers[::6]  # one in six, spread over every age bin
    t1 = T0 + timedelta(hours=12)
    t2 = T0 + timedelta(days=3)
    rows = []
    for i, t in enumerate(trackers):  # first reports spread over 48 days: no age bin stands out
        until = T0 if t in banned else t2
        rows += reports_of(t, T0 - timedelta(days=1 + i), until)
    pool = await open_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "reports",
                records=rows,
                columns=REPORT_COLUMNS,
            )
        # as the fetcher stores its turns' states: by the account that made the request
        factory = PostgresUnitOfWorkFactory(pool)
        others = [t for t in trackers if t not in banned]
        for name, group in (("acct-b", banned), ("acct-a", others)):
            async with factory() as uow:
                await uow.fetch_states.save_many(
                    [(uuid.UUID(t), FetchState()) for t in group], account=name
                )
                await uow.commit()
        clock = FakeClock(T0 - timedelta(hours=2))
        learn = LearnCadences(PostgresCadenceRepository(pool), clock, SilenceRule(), 1000)
        detect = DetectOutages(PostgresOutageRepository(pool), clock, OutageRule())

        async def turn_at(when: datetime):  # type: ignore[no-untyped-def]
            clock.set(when)
            while not await learn():
                pass
            return await detect()

        assert (await turn_at(T0 - timedelta(hours=2))).opened == []
        dark = await turn_at(t1)
        [outage] = dark.opened
        assert outage.cohort.dimension is Dimension.APPLE_ACCOUNT
        assert outage.cohort.key == "acct-b"
        assert (outage.silent, outage.trackers) == (8, 8)
        # a state saved without an account (e.g. trackerctl) keeps the one it had
        async with factory() as uow:
            await uow.fetch_states.save_many([(uuid.UUID(banned[0]), FetchState())])
            await uow.commit()
        async with pool.acquire() as conn:
            kept = await conn.fetchval(
                "SELECT last_account FROM fetch_state WHERE tracker_id = $1", uuid.UUID(banned[0])
            )
        assert kept == "acct-b"
    finally:
        await pool.close()
