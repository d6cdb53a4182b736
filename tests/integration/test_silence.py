"""Silent trackers on a real database: cadences learned in SQL agree with the domain rule,
and FleetQueryService says which trackers are silent, since when, per run, brand and
client, longest silent first, to the users of their client only."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from adapters.postgres.pool import open_pool
from adapters.postgres.silence import PostgresCadenceRepository
from domain.silence import SilenceRule, learned_cadence
from tests.integration.conftest import Stack
from tests.integration.test_keys import run_of_new_client
from tracker.v1 import fleet_query_service_pb2 as fq
from tracker.v1 import fleet_query_service_pb2_grpc as fq_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s

pytestmark = pytest.mark.integration


async def new_trackers(stack: Stack, run_id: str, n: int) -> list[str]:
    made = await stack.setup.BatchCreateTrackers(
        s.BatchCreateTrackersRequest(
            production_run_id=run_id,
            trackers=[
                pb.Tracker(advertisement_key=uuid.uuid4().bytes + uuid.uuid4().bytes[:12])
                for _ in range(n)
            ],
        )
    )
    return [t.id for t in made.trackers]


async def add_reports(database_url: str, rows: list[tuple[str, datetime]]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7,"
            " confidence, horizontal_accuracy_m, source) VALUES ($1, $2, 0, 0, 2, 10, 'test')"
            " ON CONFLICT DO NOTHING",
            [(uuid.UUID(t), when) for t, when in rows],
        )
    finally:
        await conn.close()


async def learn(stack: Stack) -> None:
    assert stack.container is not None
    turn = await stack.container.learn_cadences.async_()
    while not await turn():
        pass


async def test_sql_cadences_agree_with_the_domain_rule(stack: Stack, database_url: str) -> None:
    _, run = await run_of_new_client(stack, "twin")
    ids = await new_trackers(stack, run.id, 40)
    rng = random.Random(17)
    now = datetime.now(UTC).replace(microsecond=0)
    history: dict[str, list[datetime]] = {}
    for i, t in enumerate(ids):
        step = timedelta(minutes=rng.choice([5, 20, 45, 90, 300, 2000]))
        count = rng.randint(0, 60) if i else 0
        times = [now - step * k - timedelta(seconds=rng.randint(0, 900)) for k in range(count)]
        times += [now - timedelta(days=20)]  # older than the history: no part of the rule
        history[t] = times
    await add_reports(database_url, [(t, w) for t, ws in history.items() for w in ws])
    rule = SilenceRule()
    pool = await open_pool(database_url, max_size=2)
    try:
        repo = PostgresCadenceRepository(pool)
        after = None
        while True:
            after = await repo.refresh(after, 7, rule, now)
            if after is None:
                break
        rows = {str(r["tracker_id"]): r for r in await pool.fetch("SELECT * FROM tracker_cadence")}
    finally:
        await pool.close()
    assert len(rows) == 40
    for t, times in history.items():
        recent = [w for w in times if now - rule.history <= w <= now]
        cadence, gaps = learned_cadence(recent, rule)
        assert rows[t]["gaps"] == gaps, t
        assert rows[t]["cadence_s"] == pytest.approx(cadence.total_seconds()), t
        assert rows[t]["last_report_time"] == max(times)
        assert rows[t]["silent_time"] == max(times) + cadence * rule.factor


async def test_silent_trackers_are_named_with_how_long_per_run_and_client(
    stack: Stack, database_url: str
) -> None:
    _, run = await run_of_new_client(stack, "acme")
    other_client, other_run = await run_of_new_client(stack, "other")
    steady, dark, sparse, never = await new_trackers(stack, run.id, 4)
    (elsewhere,) = await new_trackers(stack, other_run.id, 1)
    now = datetime.now(UTC)
    half_hour = timedelta(minutes=30)
    rows = [(steady, now - half_hour * k) for k in range(48)]  # every 30 min, until now
    rows += [(dark, now - timedelta(hours=10) - half_hour * k) for k in range(48)]  # went dark
    rows += [(sparse, now - timedelta(days=1)), (sparse, now - timedelta(days=2))]
    rows += [(elsewhere, now - timedelta(hours=12) - half_hour * k) for k in range(48)]
    await add_reports(database_url, rows)
    await learn(stack)
    assert stack.query_channel is not None
    fleet = fq_grpc.FleetQueryServiceStub(stack.query_channel)

    async def health(t: str) -> fq.TrackerHealth:
        return (await fleet.GetTrackerHealth(fq.GetTrackerHealthRequest(tracker_id=t))).health

    assert (await health(steady)).state == fq.HEALTH_STATE_REPORTING
    assert (await health(never)).state == fq.HEALTH_STATE_NO_REPORTS
    gone = await health(dark)
    assert gone.state == fq.HEALTH_STATE_SILENT
    assert gone.expected_interval.ToTimedelta() == half_hour  # learned, not the default
    assert (
        gone.silent_since.ToDatetime(UTC) == gone.last_report_time.ToDatetime(UTC) + 3 * half_hour
    )
    assert timedelta(hours=8) < gone.silent_duration.ToTimedelta() < timedelta(hours=9)
    quiet = await health(sparse)
    assert quiet.state == fq.HEALTH_STATE_SILENT
    assert quiet.expected_interval.ToTimedelta() == timedelta(hours=6)  # too little history

    everyone = await fleet.ListSilentTrackers(fq.ListSilentTrackersRequest())
    assert [h.tracker_id for h in everyone.trackers] == [elsewhere, dark, sparse]
    mine = await fleet.ListSilentTrackers(
        fq.ListSilentTrackersRequest(production_run_id=run.id, page_size=1)
    )
    rest = await fleet.ListSilentTrackers(
        fq.ListSilentTrackersRequest(
            production_run_id=run.id, page_size=1, page_token=mine.next_page_token
        )
    )
    assert [h.tracker_id for h in [*mine.trackers, *rest.trackers]] == [dark, sparse]
    assert not rest.next_page_token
    by_client = await fleet.ListSilentTrackers(
        fq.ListSilentTrackersRequest(client_id=other_client.id)
    )
    assert [h.tracker_id for h in by_client.trackers] == [elsewhere]
    by_brand = await fleet.ListSilentTrackers(fq.ListSilentTrackersRequest(brand_id=run.brand_id))
    assert [h.tracker_id for h in by_brand.trackers] == [dark, sparse]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a token is bound to its filters
        await fleet.ListSilentTrackers(
            fq.ListSilentTrackersRequest(page_size=1, page_token=mine.next_page_token)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # a report after the cadence was learned takes it off the list at once
    await add_reports(database_url, [(dark, datetime.now(UTC))])
    again = await fleet.ListSilentTrackers(fq.ListSilentTrackersRequest(production_run_id=run.id))
    assert [h.tracker_id for h in again.trackers] == [sparse]
    assert (await health(dark)).state == fq.HEALTH_STATE_REPORTING


async def test_fleet_statistics_count_status_silence_fetches_and_reports_per_group(
    stack: Stack, database_url: str
) -> None:
    client, run = await run_of_new_client(stack, "acme")
    other, other_run = await run_of_new_client(stack, "other")
    mine = await new_trackers(stack, run.id, 6)
    theirs = await new_trackers(stack, other_run.id, 2)
    now = datetime.now(UTC)
    half_hour = timedelta(minutes=30)
    # mine[0..1]: reporting now; mine[2]: dark for 10 h (silent); the rest never reported
    rows = [(t, now - half_hour * k) for t in mine[:2] for k in range(48)]
    rows += [(mine[2], now - timedelta(hours=10) - half_hour * k) for k in range(48)]
    rows += [(theirs[0], now - half_hour * k) for k in range(3)]
    await add_reports(database_url, rows)
    conn = await asyncpg.connect(database_url)
    try:
        for t, status in [(mine[0], "IN_STORAGE"), (mine[1], "DELIVERED"), (mine[2], "IN_TRANSIT")]:
            await conn.execute(
                "INSERT INTO tracker_status (tracker_id, status, last_report_time,"
                " last_latitude_e7, last_longitude_e7, last_accuracy_m)"
                " VALUES ($1, $2, $3, 0, 0, 5)",
                uuid.UUID(t),
                status,
                now,
            )
        await conn.execute(
            "INSERT INTO fetch_state (tracker_id, factor, last_attempt_time) VALUES"
            " ($1, 1, $3), ($2, 1, $4)",
            uuid.UUID(mine[0]),
            uuid.UUID(mine[1]),
            now - timedelta(minutes=5),
            now - timedelta(hours=3),
        )
    finally:
        await conn.close()
    await learn(stack)
    assert stack.query_channel is not None
    fleet = fq_grpc.FleetQueryServiceStub(stack.query_channel)
    stats = await fleet.GetFleetStatistics(fq.GetFleetStatisticsRequest())
    by_key = {g.key: g for g in stats.groups}
    acme = by_key[client.id]
    assert (acme.tracker_count, acme.in_storage_count, acme.delivered_count) == (6, 1, 1)
    assert (acme.in_transit_count, acme.no_status_count, acme.silent_count) == (1, 3, 1)
    assert acme.fetched_last_hour_count == 1
    assert acme.reports_last_hour == 48 * 3  # every report was stored just now
    assert by_key[other.id].tracker_count == 2
    assert stats.total.tracker_count == sum(g.tracker_count for g in stats.groups)
    per_run = await fleet.GetFleetStatistics(
        fq.GetFleetStatisticsRequest(client_id=client.id, group_by=fq.FLEET_GROUPING_PRODUCTION_RUN)
    )
    assert [g.key for g in per_run.groups] == [run.id]
    per_brand = await fleet.GetFleetStatistics(
        fq.GetFleetStatisticsRequest(group_by=fq.FLEET_GROUPING_BRAND)
    )
    assert sorted(g.key for g in per_brand.groups) == sorted([run.brand_id, other_run.brand_id])


async def test_a_device_check_in_is_a_sign_of_life_of_the_tracker_it_carries(
    stack: Stack, database_url: str
) -> None:
    """Issue 18: a connected device that carries a tracker checks in; that counts as the
    tracker being alive for the silent-tracker rule (and so for outages), reports or not."""
    from tracker.v1 import device_service_pb2 as ds
    from tracker.v1 import device_service_pb2_grpc as ds_grpc
    from tracker.v1 import devices_pb2 as dpb

    client, run = await run_of_new_client(stack, "gateways")
    carried, alone = await new_trackers(stack, run.id, 2)
    now = datetime.now(UTC)
    half_hour = timedelta(minutes=30)
    for t in (carried, alone):  # both went dark 10 h ago
        await add_reports(
            database_url, [(t, now - timedelta(hours=10) - half_hour * k) for k in range(48)]
        )
    assert stack.collector_channel is not None
    devices = ds_grpc.DeviceServiceStub(stack.collector_channel)
    dtype = (
        await devices.CreateDeviceType(
            ds.CreateDeviceTypeRequest(
                device_type=dpb.DeviceType(client_id=client.id, name="LTE tag", components=["mcu"])
            )
        )
    ).device_type
    mcu = [dpb.ComponentVersion(component="mcu", version="1.0.0")]
    device = (
        await devices.RegisterDevice(
            ds.RegisterDeviceRequest(
                device=dpb.Device(
                    client_id=client.id,
                    device_type_id=dtype.id,
                    serial="LTE-1",
                    group_key="cell-9",
                    tracker_id=carried,
                    versions=mcu,
                )
            )
        )
    ).device
    await devices.CheckIn(ds.CheckInRequest(device_id=device.id, versions=mcu))
    assert stack.query_channel is not None
    fleet = fq_grpc.FleetQueryServiceStub(stack.query_channel)

    async def state(t: str) -> int:
        return (await fleet.GetTrackerHealth(fq.GetTrackerHealthRequest(tracker_id=t))).health.state

    assert await state(carried) == fq.HEALTH_STATE_REPORTING  # live, before any pass
    await learn(stack)
    assert await state(carried) == fq.HEALTH_STATE_REPORTING
    assert await state(alone) == fq.HEALTH_STATE_SILENT
    silent = await fleet.ListSilentTrackers(fq.ListSilentTrackersRequest(production_run_id=run.id))
    assert [h.tracker_id for h in silent.trackers] == [alone]
