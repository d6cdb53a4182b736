"""Processing against real PostgreSQL/PostGIS and the real gRPC stack: nearest-city
geocoding, the status engine, roll-ups, late reports, concurrent workers, query RPCs."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest

from adapters import prometheus
from adapters.postgres.partitions import PostgresReportPartitions
from domain import evidence
from domain.access import Principal
from domain.model import GeoPoint, LocationKind
from domain.ports.processing import Claim
from domain.reports import Report, e7
from domain.status import Fence, ReportKey, RuleKind, StatusRule, TrackerStatus, classify
from domain.status_batch import replay_columns
from servers.runtime import Process
from servers.worker import WorkerLoop
from tests.integration.conftest import Stack, stack_settings
from tests.integration.proxy import TcpProxy
from tests.integration.test_health import via
from tracker.v1 import status_pb2 as st
from tracker.v1 import status_query_service_pb2 as q
from tracker.v1 import status_query_service_pb2_grpc as q_grpc
from tracker.v1 import status_service_pb2 as ss
from tracker.v1 import status_service_pb2_grpc as s_grpc
from usecases.processing import ProcessNewReports
from usecases.setup import NewBrand, NewClient, NewLocation, NewProductionRun, NewTracker

pytestmark = pytest.mark.integration

SYSTEM = Principal.system()
BERLIN_STORE = (52.5219, 13.4132)
HAMBURG_WAREHOUSE = (53.5461, 9.9661)
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
CONSECUTIVE, EVIDENCE = RuleKind.CONSECUTIVE, RuleKind.EVIDENCE


def east_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` due east on the WGS84 ellipsoid (radius of the parallel)."""
    a, e2 = 6378137.0, 0.00669437999014
    phi = math.radians(lat)
    parallel_radius = a * math.cos(phi) / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    return lat, lon + math.degrees(metres / parallel_radius)


@dataclass
class World:
    stack: Stack
    client_id: uuid.UUID
    run_id: uuid.UUID
    other_run_id: uuid.UUID
    delivery_id: uuid.UUID
    storage_id: uuid.UUID
    fences: list[Fence] = field(default_factory=list)

    async def tracker(self, run_id: uuid.UUID | None = None) -> uuid.UUID:
        assert self.stack.container is not None
        setup = await self.stack.container.setup_usecases.async_()
        key = uuid.uuid4().bytes + uuid.uuid4().bytes[:12]
        t = await setup.create_tracker(SYSTEM, NewTracker(run_id or self.run_id, key))
        return t.id

    async def store(self, reports: list[Report]) -> int:
        assert self.stack.container is not None
        uow_factory = await self.stack.container.uow_factory.async_()
        async with uow_factory() as uow:
            n = await uow.reports.add_many(reports)
            await uow.commit()
        return n

    async def process(self) -> int:
        """Process until the queue is empty; returns the trackers processed."""
        assert self.stack.container is not None
        process: ProcessNewReports = await self.stack.container.process_new_reports.async_()
        total = 0
        while (batch := await process()).claimed:
            total += batch.trackers
        return total

    @property
    def status_stub(self) -> q_grpc.StatusQueryServiceStub:
        assert self.stack.query_channel is not None
        return q_grpc.StatusQueryServiceStub(self.stack.query_channel)


async def make_world(stack: Stack, name: str = "P") -> World:
    assert stack.container is not None
    setup = await stack.container.setup_usecases.async_()
    client = await setup.create_client(SYSTEM, NewClient(name))
    brand = await setup.create_brand(SYSTEM, NewBrand(client.id, name))
    runs = [
        await setup.create_production_run(
            SYSTEM,
            NewProductionRun(
                brand.id, f"{name}{i}", T0 - timedelta(days=30), T0 + timedelta(days=90)
            ),
        )
        for i in range(2)
    ]
    delivery = await setup.create_location(
        SYSTEM,
        NewLocation(runs[0].id, LocationKind.DELIVERY, "store", GeoPoint(*BERLIN_STORE), 150),
    )
    # A storage geofence around the store too: inside both is DELIVERED.
    storage = await setup.create_location(
        SYSTEM,
        NewLocation(runs[0].id, LocationKind.STORAGE, "backroom", GeoPoint(*BERLIN_STORE), 400),
    )
    hub = await setup.create_location(
        SYSTEM,
        NewLocation(runs[0].id, LocationKind.STORAGE, "hub", GeoPoint(*HAMBURG_WAREHOUSE), 400),
    )
    # The other run delivers to the Hamburg warehouse: that must not count for run 0.
    await setup.create_location(
        SYSTEM,
        NewLocation(runs[1].id, LocationKind.DELIVERY, "other", GeoPoint(*HAMBURG_WAREHOUSE), 800),
    )
    # Most tests here are about the plain rule (each report decides); new runs weigh evidence.
    repo = await stack.container.status_repository.async_()
    for run in runs:
        await repo.set_status_rule(run.id, StatusRule.plain())
    fences = [Fence(x.id, x.kind, x.center, x.radius_m) for x in (delivery, storage, hub)]
    return World(stack, client.id, runs[0].id, runs[1].id, delivery.id, storage.id, fences)


def rep(
    tracker: uuid.UUID,
    t: datetime,
    where: tuple[float, float],
    accuracy: int = 10,
    confidence: int = 3,
) -> Report:
    return Report(
        tracker_id=tracker,
        report_time=t,
        position=GeoPoint(*where),
        confidence=confidence,
        horizontal_accuracy_m=accuracy,
    )


async def status_of(w: World, tracker: uuid.UUID) -> st.TrackerStatusInfo:
    return (
        await w.status_stub.GetTrackerStatus(q.GetTrackerStatusRequest(tracker_id=str(tracker)))
    ).status


async def history_of(w: World, tracker: uuid.UUID) -> list[tuple[str, str]]:
    page = await w.status_stub.ListStatusHistory(
        q.ListStatusHistoryRequest(tracker_id=str(tracker), page_size=1000)
    )
    return [(st.TrackerStatus.Name(c.status), c.report_time.ToJsonString()) for c in page.changes]


@pytest.fixture
async def database_url(geo_database_url: str) -> str:
    """Every test here gets the cities too (the stack fixture builds on database_url)."""
    return geo_database_url


@pytest.fixture
async def world(stack: Stack) -> World:
    return await make_world(stack)


async def test_nearest_city_of_central_berlin_and_of_a_point_at_sea(stack: Stack) -> None:
    assert stack.container is not None
    geocoder = await stack.container.geocoder.async_()
    berlin, sea, again = await geocoder.nearest(
        [GeoPoint(52.5200, 13.4050), GeoPoint(54.5, 4.0), GeoPoint(52.5201, 13.4051)]
    )
    assert berlin is not None
    assert berlin.city.name == "Berlin"
    assert berlin.city.country_code == "DE"
    assert berlin.distance_m < 2000
    assert again is not None
    assert again.city == berlin.city
    # In the North Sea, 150 km from any shore: the nearest coastal town, far away.
    assert sea is not None
    assert sea.city.country_code == "NL"
    assert 100_000 < sea.distance_m < 200_000
    assert geocoder.hits >= 1  # the second Berlin point came from the cache


async def test_inside_delivery_and_storage_is_delivered_other_runs_fences_ignored(
    world: World,
) -> None:
    a, b = await world.tracker(), await world.tracker()
    await world.store(
        [
            rep(a, T0, BERLIN_STORE),
            # Inside run 1's delivery fence (800 m round the Hamburg warehouse), 600 m off
            # the warehouse: outside run 0's 400 m storage fence there -> IN_TRANSIT.
            rep(b, T0, east_of(*HAMBURG_WAREHOUSE, 600)),
        ]
    )
    assert await world.process() == 2
    sa, sb = await status_of(world, a), await status_of(world, b)
    assert sa.status == st.TRACKER_STATUS_DELIVERED
    assert sa.location_id == str(world.delivery_id)
    assert sa.last_nearest_city.city.name == "Berlin"
    assert sb.status == st.TRACKER_STATUS_IN_TRANSIT
    assert sb.last_nearest_city.city.name == "Hamburg"


async def test_radius_edges_at_high_latitude_are_geodesic_metres(stack: Stack) -> None:
    assert stack.container is not None
    setup = await stack.container.setup_usecases.async_()
    client = await setup.create_client(SYSTEM, NewClient("Svalbard"))
    brand = await setup.create_brand(SYSTEM, NewBrand(client.id, "S"))
    run = await setup.create_production_run(
        SYSTEM, NewProductionRun(brand.id, "S", T0 - timedelta(days=1), T0 + timedelta(days=9))
    )
    repo = await stack.container.status_repository.async_()
    await repo.set_status_rule(run.id, StatusRule.plain())  # each report decides
    depot = (78.2232, 15.6267)  # Longyearbyen: a degree of longitude is ~23 km here
    await setup.create_location(
        SYSTEM, NewLocation(run.id, LocationKind.STORAGE, "depot", GeoPoint(*depot), 100)
    )
    w = World(stack, client.id, run.id, run.id, uuid.uuid4(), uuid.uuid4())
    inside, outside = await w.tracker(), await w.tracker()
    await w.store([rep(inside, T0, east_of(*depot, 98)), rep(outside, T0, east_of(*depot, 102))])
    await w.process()
    assert (await status_of(w, inside)).status == st.TRACKER_STATUS_IN_STORAGE
    assert (await status_of(w, outside)).status == st.TRACKER_STATUS_IN_TRANSIT


async def test_stored_positions_are_the_e7_coordinates_divided_as_the_readings_do(
    world: World,
) -> None:
    """The status step classifies ``latitude_e7 / 1e7`` in numpy rather than reading the
    stored geography: the two are the same doubles, at the poles, the antimeridian and
    anywhere between."""
    assert world.stack.container is not None
    a = await world.tracker()
    rng = random.Random(7)
    places = [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (1e-7, -1e-7), (52.5200066, 13.404954)]
    places += [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(500)]
    await world.store([rep(a, T0 + timedelta(seconds=n), p) for n, p in enumerate(places)])
    pool = await world.stack.container.db_pool.async_()
    rows = await pool.fetch(
        """SELECT latitude_e7, longitude_e7, ST_Y(position::geometry) AS lat,
                  ST_X(position::geometry) AS lon FROM reports WHERE tracker_id = $1""",
        a,
    )
    assert len(rows) == len(places)
    lat_e7 = np.array([r["latitude_e7"] for r in rows], dtype=np.int64)
    lon_e7 = np.array([r["longitude_e7"] for r in rows], dtype=np.int64)
    assert (lat_e7 / 1e7).tolist() == [r["lat"] for r in rows]
    assert (lon_e7 / 1e7).tolist() == [r["lon"] for r in rows]


@pytest.mark.parametrize(("accuracy_rule", "kind"), [(False, CONSECUTIVE), (True, CONSECUTIVE),
                                                   (False, EVIDENCE)])  # fmt: skip
async def test_database_classification_agrees_with_the_domain_rule(
    world: World, accuracy_rule: bool, kind: RuleKind
) -> None:
    """PostGIS classifies reports in bulk; domain.status.classify is the same rule (for the
    evidence rule also: the same fences within reach, at the same distances)."""
    assert world.stack.container is not None
    rule = StatusRule(require_accuracy_within_radius=accuracy_rule, min_confidence=1, kind=kind)
    repo = await world.stack.container.status_repository.async_()
    await repo.set_status_rule(world.run_id, rule)
    a = await world.tracker()
    rng = random.Random(61)
    reports = []
    for n in range(300):
        fence = rng.choice(world.fences)
        metres = rng.choice([rng.uniform(0, 1000), fence.radius_m * rng.uniform(0.9, 1.1)])
        accuracy = rng.choice([0, 10, 60, 200])
        edge = {
            abs(metres - f.radius_m + s)
            for f in world.fences
            for s in (0, accuracy, -accuracy, -evidence.REACH_M)
        }
        if min(edge) < 2:  # the sphere and float rounding may differ at the very edge
            continue
        lat, lon = fence.center.latitude, fence.center.longitude
        bearing = rng.uniform(0, 2 * math.pi)
        lat += metres * math.cos(bearing) / 111_195.0
        lon += metres * math.sin(bearing) / (111_195.0 * math.cos(math.radians(lat)))
        reports.append(rep(a, T0 + timedelta(seconds=n), (lat, lon), accuracy, 1))
    await world.store(reports)
    uow_factory = await world.stack.container.processing_uow.async_()
    async with uow_factory() as uow:
        readings = (await uow.readings({a: None})).readings(0)
    by_key = {
        ReportKey(r.report_time, *map(e7, (r.position.latitude, r.position.longitude))): r
        for r in reports
    }
    assert len(readings) == len(reports)
    for reading in readings:
        r = by_key[reading.key]
        expected = classify(r.position, r.horizontal_accuracy_m, world.fences, rule)
        got = reading.observation
        assert (got.status, got.location_id) == (expected.status, expected.location_id), r
        assert [(f.location_id, f.kind, f.radius_m) for f in got.near] == [
            (f.location_id, f.kind, f.radius_m) for f in expected.near
        ]
        for f, g in zip(got.near, expected.near, strict=True):
            assert f.distance_m == pytest.approx(g.distance_m, abs=0.05)
    seen = {x.observation.status for x in readings}
    assert {TrackerStatus.DELIVERED, TrackerStatus.IN_STORAGE, TrackerStatus.IN_TRANSIT} <= seen
    assert (None in seen) is accuracy_rule
    assert any(x.observation.near for x in readings) is (kind is EVIDENCE)


async def test_readings_span_partitions_in_key_order_from_the_start_key(world: World) -> None:
    """A tracker's reports in several monthly partitions and the default one come in key
    order (the scan gives them partition by partition, the default last), and only those
    after the start key are read."""
    assert world.stack.container is not None
    pool = await world.stack.container.db_pool.async_()
    await PostgresReportPartitions(pool).ensure(
        [datetime(2026, m, 1, tzinfo=UTC) for m in (10, 11, 12)]
    )
    a, b = await world.tracker(), await world.tracker()
    times = [
        datetime(2026, 12, 2, tzinfo=UTC),
        datetime(2026, 10, 5, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC),  # default partition
        datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC),  # same time, east of it
        datetime(2027, 6, 1, tzinfo=UTC),  # default partition
    ]
    reports = [
        rep(t, when, east_of(*BERLIN_STORE, 10.0 * n))
        for t in (a, b)
        for n, when in enumerate(times)
    ]
    await world.store(reports)
    expected = sorted(
        ReportKey(r.report_time, *map(e7, (r.position.latitude, r.position.longitude)))
        for r in reports
        if r.tracker_id == a
    )
    start = expected[2]  # 2026-10-05: readings after it only
    uow_factory = await world.stack.container.processing_uow.async_()
    async with uow_factory() as uow:
        columns = await uow.readings({b: None, a: start})
    assert columns.trackers == (b, a)
    assert [r.key for r in columns.readings(1)] == expected[3:]
    assert [r.key for r in columns.readings(0)] == expected  # (b's keys are a's)


async def test_reports_are_empty_from_the_first_of_the_trailing_empty_months(
    world: World,
) -> None:
    """``reports_empty_since()`` (migration 0036) bounds the readings' probes: the start of
    the earliest month from which on every monthly partition is empty, infinity while the
    default partition holds a row or a partition is not a monthly one; never at or before a
    stored report."""
    assert world.stack.container is not None
    pool = await world.stack.container.db_pool.async_()
    partitions = PostgresReportPartitions(pool)
    await partitions.ensure([datetime(2026, m, 1, tzinfo=UTC) for m in (10, 11, 12)])
    await partitions.ensure([datetime(2027, m, 1, tzinfo=UTC) for m in (1, 2, 3)])
    a = await world.tracker()

    async def since() -> datetime:
        bound = await pool.fetchval("SELECT reports_empty_since()")
        newest = await pool.fetchval("SELECT max(report_time) FROM reports")
        assert newest is None or bound == datetime.max or newest < bound
        return bound

    assert await since() == datetime(2026, 10, 1, tzinfo=UTC)  # nothing stored
    await world.store([rep(a, datetime(2026, 11, 30, 23, 59, tzinfo=UTC), BERLIN_STORE)])
    assert await since() == datetime(2026, 12, 1, tzinfo=UTC)
    await world.store([rep(a, datetime(2027, 2, 3, tzinfo=UTC), BERLIN_STORE)])
    assert await since() == datetime(2027, 3, 1, tzinfo=UTC)  # (January is empty: no bound)
    await world.store([rep(a, datetime(2027, 3, 31, 23, 59, tzinfo=UTC), BERLIN_STORE)])
    assert await since() == datetime.max  # infinity: the last month holds a row
    await pool.execute("DELETE FROM reports WHERE report_time >= '2027-03-01'")
    await pool.execute(
        "CREATE TABLE reports_spare PARTITION OF reports "
        "FOR VALUES FROM ('2031-01-01') TO ('2031-01-02')"
    )
    assert await since() == datetime.max  # a partition the bound does not understand
    await pool.execute("DROP TABLE reports_spare")
    assert await since() == datetime(2027, 3, 1, tzinfo=UTC)
    uow_factory = await world.stack.container.processing_uow.async_()

    async def read() -> list[datetime]:
        async with uow_factory() as uow:
            return [r.key.report_time for r in (await uow.readings({a: None})).readings(0)]

    assert [t.month for t in await read()] == [11, 2]  # under the bound: all there is
    await world.store([rep(a, datetime(2024, 1, 1, tzinfo=UTC), BERLIN_STORE)])  # default
    assert await since() == datetime.max
    assert [(t.year, t.month) for t in await read()] == [(2024, 1), (2026, 11), (2027, 2)]


async def test_status_state_without_the_lock_reads_runs_and_rules_itself(world: World) -> None:
    """The worker's lock hands the status step each tracker's run; without it (a caller that
    did not lock) the step reads them itself: each tracker under its own run's rule, and a
    tracker that no longer exists left out."""
    assert world.stack.container is not None
    repo = await world.stack.container.status_repository.async_()
    await repo.set_status_rule(world.other_run_id, StatusRule(kind=EVIDENCE, min_confidence=3))
    setup = await world.stack.container.setup_usecases.async_()
    a, b, gone = (
        await world.tracker(),
        await world.tracker(world.other_run_id),
        await world.tracker(),
    )
    await world.store(
        [
            rep(t, T0 + timedelta(minutes=m), BERLIN_STORE, 10, c)
            for t in (a, b, gone)
            for m, c in ((0, 2), (10, 3))
        ]
    )
    await setup.delete_tracker(SYSTEM, gone, force=True)
    since = T0 - timedelta(days=1)
    claims = [Claim(t, since, (), 1, T0, 0) for t in (gone, b, a)]
    uow_factory = await world.stack.container.processing_uow.async_()
    async with uow_factory() as uow:
        state = await uow.status_state(claims)
        assert state.trackers == tuple(sorted((b, a)))  # in key order, as the queue hands out
        i, j = state.trackers.index(b), state.trackers.index(a)
        assert state.evidence[[i, j]].tolist() == [True, False]  # run 1 evidence, run 0 plain
        assert state.min_confidence[[i, j]].tolist() == [3, 2]
        assert state.run is not None
        assert [state.run_ids[k] for k in state.run[[i, j]].tolist()] == [
            world.other_run_id,
            world.run_id,
        ]
        readings = await uow.readings_after(state)
        assert [r.confidence for r in readings.readings(i)] == [3]
        assert [r.confidence for r in readings.readings(j)] == [2, 3]


async def test_checkpoints_are_updated_in_place_inserted_and_rewritten_if_gone(
    world: World,
) -> None:
    """The save updates the checkpoints that were stored when the batch read them, inserts
    the first ones, and writes a checkpoint again whose row went missing between the read
    and the save (a caller that did not lock its trackers)."""
    assert world.stack.container is not None
    kept, gone, new = await world.tracker(), await world.tracker(), await world.tracker()
    await world.store([rep(t, T0, BERLIN_STORE) for t in (kept, gone)])
    await world.process()
    later = T0 + timedelta(minutes=10)
    await world.store([rep(t, later, HAMBURG_WAREHOUSE) for t in (kept, gone, new)])
    claims = [Claim(t, later, (), 1, later, 0) for t in (kept, gone, new)]
    uow_factory = await world.stack.container.processing_uow.async_()
    async with uow_factory() as uow:
        state = await uow.status_state(claims)
        assert state.stored is not None
        stored = dict(zip(state.trackers, state.stored.tolist(), strict=True))
        assert stored == {kept: True, gone: True, new: False}
        await uow._c.execute("DELETE FROM tracker_status WHERE tracker_id = $1", gone)
        readings = await uow.readings_after(state)
        await uow.save_results(state, readings, replay_columns(state, readings))
        await uow.commit()
    for t in (kept, gone, new):
        info = await status_of(world, t)
        assert info.status == st.TRACKER_STATUS_IN_STORAGE, t  # the Hamburg hub
        assert info.last_report_time.ToDatetime(UTC) == later


async def test_history_records_only_changes_with_report_time_position_and_cause(
    world: World,
) -> None:
    a = await world.tracker()
    road = (53.0, 11.5)
    await world.store(
        [
            rep(a, T0, HAMBURG_WAREHOUSE),
            rep(a, T0 + timedelta(minutes=15), HAMBURG_WAREHOUSE),
            rep(a, T0 + timedelta(hours=2), road),
            rep(a, T0 + timedelta(hours=3), road),
            rep(a, T0 + timedelta(hours=5), BERLIN_STORE, confidence=1),  # does not count
            rep(a, T0 + timedelta(hours=6), BERLIN_STORE),
        ]
    )
    await world.process()
    page = await world.status_stub.ListStatusHistory(q.ListStatusHistoryRequest(tracker_id=str(a)))
    got = [
        (c.status, c.previous_status, c.report_time.ToDatetime(tzinfo=UTC)) for c in page.changes
    ]
    assert got == [
        (st.TRACKER_STATUS_IN_STORAGE, st.TRACKER_STATUS_UNSPECIFIED, T0),
        (st.TRACKER_STATUS_IN_TRANSIT, st.TRACKER_STATUS_IN_STORAGE, T0 + timedelta(hours=2)),
        (st.TRACKER_STATUS_DELIVERED, st.TRACKER_STATUS_IN_TRANSIT, T0 + timedelta(hours=6)),
    ]
    last = page.changes[-1]
    assert (last.position.latitude, last.position.longitude) == pytest.approx(BERLIN_STORE)
    assert last.location_id == str(world.delivery_id)
    assert last.nearest_city.city.name == "Berlin"
    assert page.changes[1].location_id == ""


async def test_late_report_yields_in_order_history_and_rerolls_only_its_bucket(
    world: World,
) -> None:
    a = await world.tracker()
    road = (53.0, 11.5)
    await world.store(
        [
            rep(a, T0, HAMBURG_WAREHOUSE),
            rep(a, T0 + timedelta(hours=4), road),
            rep(a, T0 + timedelta(hours=8), BERLIN_STORE),
        ]
    )
    await world.process()
    assert [s for s, _ in await history_of(world, a)] == [
        "TRACKER_STATUS_IN_STORAGE",
        "TRACKER_STATUS_IN_TRANSIT",
        "TRACKER_STATUS_DELIVERED",
    ]
    assert world.stack.container is not None
    process: ProcessNewReports = await world.stack.container.process_new_reports.async_()
    # A late report: it was at the store already at T0+3h (then on the road again).
    await world.store([rep(a, T0 + timedelta(hours=3), BERLIN_STORE)])
    batch = await process()
    assert (batch.trackers, batch.buckets) == (1, 1)
    assert [s for s, _ in await history_of(world, a)] == [
        "TRACKER_STATUS_IN_STORAGE",
        "TRACKER_STATUS_DELIVERED",
        "TRACKER_STATUS_IN_TRANSIT",
        "TRACKER_STATUS_DELIVERED",
    ]


async def changes_of(w: World, tracker: uuid.UUID) -> list[bytes]:
    """The whole recorded history of a tracker (evidence included), without its id."""
    page = await w.status_stub.ListStatusHistory(
        q.ListStatusHistoryRequest(tracker_id=str(tracker), page_size=1000)
    )
    for c in page.changes:
        c.tracker_id = ""
    return [c.SerializeToString(deterministic=True) for c in page.changes]


@pytest.mark.parametrize("kind", [CONSECUTIVE, EVIDENCE])
async def test_any_arrival_order_gives_the_same_history_and_rollups(
    world: World, kind: RuleKind
) -> None:
    """Property: the same reports, split into batches in random orders, each processed as
    it arrives, give exactly the history and roll-ups of in-order arrival; and re-evaluating
    the run's whole history gives it again."""
    assert world.stack.container is not None
    repo = await world.stack.container.status_repository.async_()
    await repo.set_status_rule(world.run_id, StatusRule(kind=kind))
    rng = random.Random(6)
    everyone = []
    places = [HAMBURG_WAREHOUSE, BERLIN_STORE, (53.0, 11.5), east_of(*BERLIN_STORE, 300)]
    for _ in range(4):
        plan = sorted(
            (
                T0 + timedelta(minutes=rng.randrange(0, 3 * 24 * 60)),
                rng.choice(places),
                rng.choice([5, 20, 80]),
                rng.choice([1, 2, 3]),
            )
            for _ in range(rng.randrange(5, 25))
        )
        trackers = [await world.tracker() for _ in range(3)]
        everyone.append(trackers)
        for n, tracker in enumerate(trackers):
            reports = [rep(tracker, t, p, acc, conf) for t, p, acc, conf in plan]
            if n:
                rng.shuffle(reports)
            cut = sorted(rng.sample(range(1, len(reports)), k=min(3, len(reports) - 1)))
            for chunk in (reports[i:j] for i, j in zip([0, *cut], [*cut, None], strict=True)):
                await world.store(chunk)
                await world.process()
        results = []
        for tracker in trackers:
            locations = []
            for g in (st.GRANULARITY_RAW, st.GRANULARITY_HOURLY, st.GRANULARITY_DAILY):
                page = await world.status_stub.ListLocationHistory(
                    q.ListLocationHistoryRequest(
                        tracker_id=str(tracker), granularity=g, min_confidence=1, page_size=1000
                    )
                )
                for p in page.points:
                    p.tracker_id = ""
                locations.append([p.SerializeToString(deterministic=True) for p in page.points])
            now = await status_of(world, tracker)
            now.tracker_id = ""
            now.ClearField("update_time")
            results.append(
                (await changes_of(world, tracker), locations, now.SerializeToString(True))
            )
        assert results[1] == results[0]
        assert results[2] == results[0]
    before = {t: await changes_of(world, t) for trackers in everyone for t in trackers}
    assert any(before.values())
    await repo.reevaluate_run(world.run_id)
    await world.process()
    assert {t: await changes_of(world, t) for t in before} == before


async def test_a_belief_stored_as_arrays_before_0035_resumes_as_the_columns_do(
    world: World,
) -> None:
    """Checkpoints written before migration 0035 hold the belief in the arrays only; the
    status step reads them as it reads the fixed columns: the history and status go on as
    those of a twin tracker whose checkpoint is in the new form."""
    assert world.stack.container is not None
    repo = await world.stack.container.status_repository.async_()
    await repo.set_status_rule(world.run_id, StatusRule(kind=EVIDENCE))
    old, new = await world.tracker(), await world.tracker()
    road = (53.0, 11.5)
    plan = [road, road, HAMBURG_WAREHOUSE, HAMBURG_WAREHOUSE, east_of(*BERLIN_STORE, 300)]
    plan += [BERLIN_STORE] * 3
    converted = 0
    for n, where in enumerate(plan):
        await world.store([rep(t, T0 + timedelta(minutes=40 * n), where, 30) for t in (old, new)])
        await world.process()
        uow_factory = await world.stack.container.uow_factory.async_()
        async with uow_factory() as uow:
            conn = uow._conn
            assert conn is not None
            moved = await conn.execute(
                """UPDATE tracker_status SET
                       belief_ids = CASE WHEN belief_transit IS NULL THEN NULL
                           ELSE ARRAY[NULL::uuid]
                                || CASE WHEN belief_elsewhere IS NULL THEN '{}'::uuid[]
                                        ELSE ARRAY['00000000-0000-0000-0000-000000000000'::uuid] END
                                || CASE WHEN belief_fence_id IS NULL THEN '{}'::uuid[]
                                        ELSE ARRAY[belief_fence_id] END END,
                       belief_kinds = CASE WHEN belief_transit IS NULL THEN NULL
                           ELSE ARRAY[NULL::text]
                                || CASE WHEN belief_elsewhere IS NULL THEN '{}'::text[]
                                        ELSE ARRAY[NULL::text] END
                                || CASE WHEN belief_fence_id IS NULL THEN '{}'::text[]
                                        ELSE ARRAY[belief_fence_kind] END END,
                       belief_probabilities = CASE WHEN belief_transit IS NULL THEN NULL
                           ELSE ARRAY[belief_transit]
                                || CASE WHEN belief_elsewhere IS NULL THEN '{}'::float8[]
                                        ELSE ARRAY[belief_elsewhere] END
                                || CASE WHEN belief_fence_id IS NULL THEN '{}'::float8[]
                                        ELSE ARRAY[belief_fence_p] END END,
                       belief_transit = NULL, belief_elsewhere = NULL, belief_fence_id = NULL,
                       belief_fence_kind = NULL, belief_fence_p = NULL
                   WHERE tracker_id = $1 AND belief_ids IS NULL""",
                old,
            )
            await uow.commit()
        converted += moved == "UPDATE 1"  # (a wide belief is in the arrays already)
    assert converted >= 4
    assert await changes_of(world, old) == await changes_of(world, new)
    assert len(await changes_of(world, new)) >= 2
    before, after = await status_of(world, old), await status_of(world, new)
    for s in (before, after):
        s.tracker_id = ""
        s.ClearField("update_time")
    assert before == after


async def test_dwell_rule_ignores_one_noisy_report(world: World) -> None:
    assert world.stack.collector_channel is not None
    rules = s_grpc.StatusServiceStub(world.stack.collector_channel)
    await rules.UpdateStatusRule(
        ss.UpdateStatusRuleRequest(
            status_rule=st.StatusRule(
                production_run_id=str(world.run_id), min_consecutive_reports=2, min_dwell_s=600
            )
        )
    )
    got = await world.status_stub.GetStatusRule(
        q.GetStatusRuleRequest(production_run_id=str(world.run_id))
    )
    assert got.status_rule.min_consecutive_reports == 2
    assert got.status_rule.min_confidence == 2
    a = await world.tracker()
    road = (53.0, 11.5)
    await world.store(
        [
            rep(a, T0, HAMBURG_WAREHOUSE),
            rep(a, T0 + timedelta(minutes=10), HAMBURG_WAREHOUSE),  # the first status too
            rep(a, T0 + timedelta(minutes=15), road),  # one stray fix: ignored
            rep(a, T0 + timedelta(minutes=20), HAMBURG_WAREHOUSE),
            rep(a, T0 + timedelta(minutes=30), road),
            rep(a, T0 + timedelta(minutes=35), road),  # two in a row, but only 5 minutes
            rep(a, T0 + timedelta(minutes=50), road),  # 20 minutes: now IN_TRANSIT
        ]
    )
    await world.process()
    assert await history_of(world, a) == [
        ("TRACKER_STATUS_IN_STORAGE", "2026-11-20T08:10:00Z"),
        ("TRACKER_STATUS_IN_TRANSIT", "2026-11-20T08:50:00Z"),
    ]
    page = await world.status_stub.ListStatusHistory(
        q.ListStatusHistoryRequest(tracker_id=str(a), page_size=10)
    )
    # since when: the first report of the run that met the rule; no probability
    assert [c.evidence_time.ToJsonString() for c in page.changes] == [
        "2026-11-20T08:00:00Z",
        "2026-11-20T08:30:00Z",
    ]
    assert [c.probability for c in page.changes] == [0, 0]
    # Back to the plain rule, for the whole history: the stray fix counts again.
    await rules.UpdateStatusRule(
        ss.UpdateStatusRuleRequest(
            status_rule=st.StatusRule(production_run_id=str(world.run_id)),
            reevaluate_history=True,
        )
    )
    await world.process()
    assert [t for _, t in await history_of(world, a)] == [
        "2026-11-20T08:00:00Z",
        "2026-11-20T08:15:00Z",
        "2026-11-20T08:20:00Z",
        "2026-11-20T08:30:00Z",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rules.UpdateStatusRule(
            ss.UpdateStatusRuleRequest(
                status_rule=st.StatusRule(production_run_id=str(world.run_id), min_dwell_s=-1)
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "status_rule.min_dwell_s" in (err.value.details() or "")


async def test_evidence_rule_says_how_sure_and_since_when(world: World) -> None:
    assert world.stack.collector_channel is not None
    rules = s_grpc.StatusServiceStub(world.stack.collector_channel)
    await rules.UpdateStatusRule(
        ss.UpdateStatusRuleRequest(
            status_rule=st.StatusRule(
                production_run_id=str(world.run_id), kind=st.STATUS_RULE_KIND_EVIDENCE
            )
        )
    )
    got = (
        await world.status_stub.GetStatusRule(
            q.GetStatusRuleRequest(production_run_id=str(world.run_id))
        )
    ).status_rule
    assert (got.kind, got.min_probability, got.outlier_share) == (
        st.STATUS_RULE_KIND_EVIDENCE,
        0.99,
        0.02,
    )
    a = await world.tracker()
    road = (53.0, 11.5)
    hub = east_of(*HAMBURG_WAREHOUSE, 100)
    await world.store(
        [rep(a, T0 + timedelta(minutes=m), hub, 30) for m in (0, 30, 60)]
        + [rep(a, T0 + timedelta(minutes=m), road, 30) for m in (600, 630, 660)]
        # arriving, as vague reports: "delivered at" the first of them, not the last
        + [rep(a, T0 + timedelta(minutes=m), BERLIN_STORE, 700, 2) for m in (900, 915, 930)]
        + [rep(a, T0 + timedelta(minutes=945), east_of(*BERLIN_STORE, 3000), 20, 2)]  # outlier
        + [rep(a, T0 + timedelta(minutes=m), BERLIN_STORE, 30) for m in (960, 990)]
    )
    await world.process()
    page = await world.status_stub.ListStatusHistory(
        q.ListStatusHistoryRequest(tracker_id=str(a), page_size=10)
    )
    got_changes = [
        (
            st.TrackerStatus.Name(c.status),
            c.report_time.ToDatetime(UTC) - T0,
            c.evidence_time.ToDatetime(UTC) - T0,
        )
        for c in page.changes
    ]
    assert [s for s, _, _ in got_changes] == [
        "TRACKER_STATUS_IN_STORAGE",
        "TRACKER_STATUS_IN_TRANSIT",
        "TRACKER_STATUS_DELIVERED",
    ]
    delivered = got_changes[-1]
    assert delivered[2] == timedelta(minutes=900)
    assert delivered[1] > delivered[2]
    assert all(c.probability >= 0.99 for c in page.changes)
    assert page.changes[-1].location_id == str(world.delivery_id)
    now = await status_of(world, a)
    assert now.status == st.TRACKER_STATUS_DELIVERED
    assert now.status_probability == page.changes[-1].probability
    assert now.status_evidence_time == page.changes[-1].evidence_time
    assert now.status_time == page.changes[-1].report_time


async def test_several_workers_share_the_queue_without_double_work(world: World) -> None:
    trackers = [await world.tracker() for _ in range(60)]
    await world.store(
        [
            rep(t, T0 + timedelta(minutes=m), BERLIN_STORE if m % 2 else (53.0, 11.5))
            for t in trackers
            for m in range(3)
        ]
    )
    assert world.stack.container is not None
    c = world.stack.container
    workers = [await c.process_new_reports.async_(batch_size=7) for _ in range(4)]

    async def drain(p: ProcessNewReports) -> int:
        done = 0
        while (b := await p()).claimed:
            done += b.trackers
        return done

    done = await asyncio.gather(*(drain(p) for p in workers))
    assert sum(done) == len(trackers)  # each exactly once
    assert all(d > 0 for d in done)
    statuses = await world.status_stub.BatchGetTrackerStatuses(
        q.BatchGetTrackerStatusesRequest(tracker_ids=[str(t) for t in trackers])
    )
    assert [s.tracker_id for s in statuses.statuses] == [str(t) for t in trackers]
    assert {s.status for s in statuses.statuses} == {st.TRACKER_STATUS_IN_TRANSIT}


async def test_location_history_granularities_and_confidence(world: World) -> None:
    a = await world.tracker()
    await world.store(
        [
            rep(a, T0 + timedelta(minutes=1), HAMBURG_WAREHOUSE, accuracy=50),
            rep(a, T0 + timedelta(minutes=2), east_of(*HAMBURG_WAREHOUSE, 50), accuracy=5),
            rep(a, T0 + timedelta(minutes=3), BERLIN_STORE, accuracy=1, confidence=1),
            rep(a, T0 + timedelta(hours=1), BERLIN_STORE, accuracy=30),
            rep(a, T0 + timedelta(days=1), BERLIN_STORE, accuracy=30),
        ]
    )
    await world.process()

    async def points(g: int, **kw: object) -> list[st.LocationPoint]:
        page = await world.status_stub.ListLocationHistory(
            q.ListLocationHistoryRequest(tracker_id=str(a), granularity=g, **kw)  # type: ignore[arg-type]
        )
        return list(page.points)

    raw = await points(st.GRANULARITY_RAW)
    assert len(raw) == 4  # confidence >= 2 by default
    assert len(await points(st.GRANULARITY_RAW, min_confidence=1)) == 5
    hourly = await points(st.GRANULARITY_HOURLY)
    assert [p.report_count for p in hourly] == [2, 1, 1]
    first = hourly[0]
    assert first.horizontal_accuracy_m == 5  # the most accurate report represents the hour
    assert first.position.longitude == pytest.approx(east_of(*HAMBURG_WAREHOUSE, 50)[1])
    assert first.nearest_city.city.name == "Hamburg"
    assert first.first_report_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=1)
    assert first.end_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(hours=1)
    with_low = await points(st.GRANULARITY_HOURLY, min_confidence=1)
    assert with_low[0].report_count == 3
    assert with_low[0].horizontal_accuracy_m == 1
    daily = await points(st.GRANULARITY_DAILY)
    assert [p.report_count for p in daily] == [3, 1]
    assert daily[0].horizontal_accuracy_m == 5
    # Paging over the raw reports.
    page1 = await world.status_stub.ListLocationHistory(
        q.ListLocationHistoryRequest(tracker_id=str(a), granularity=st.GRANULARITY_RAW, page_size=3)
    )
    page2 = await world.status_stub.ListLocationHistory(
        q.ListLocationHistoryRequest(
            tracker_id=str(a),
            granularity=st.GRANULARITY_RAW,
            page_size=3,
            page_token=page1.next_page_token,
        )
    )
    assert [p.start_time for p in [*page1.points, *page2.points]] == [p.start_time for p in raw]
    assert not page2.next_page_token


async def test_auto_granularity_is_hourly_for_recent_days_and_daily_before(world: World) -> None:
    a = await world.tracker()
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    await world.store(
        [
            rep(a, now - timedelta(days=30), BERLIN_STORE),
            rep(a, now - timedelta(days=30, minutes=20), BERLIN_STORE),
            rep(a, now - timedelta(hours=3), HAMBURG_WAREHOUSE),
            rep(a, now - timedelta(hours=1), HAMBURG_WAREHOUSE),
        ]
    )
    await world.process()
    page = await world.status_stub.ListLocationHistory(
        q.ListLocationHistoryRequest(tracker_id=str(a))  # UNSPECIFIED: AUTO
    )
    assert [(p.granularity, p.report_count) for p in page.points] == [
        (st.GRANULARITY_DAILY, 2),
        (st.GRANULARITY_HOURLY, 1),
        (st.GRANULARITY_HOURLY, 1),
    ]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (q.ListLocationHistoryRequest(tracker_id="nope"), "tracker_id"),
        (q.ListLocationHistoryRequest(min_confidence=4), "min_confidence"),
        (q.ListLocationHistoryRequest(page_size=-1), "page_size"),
        (q.ListLocationHistoryRequest(granularity=99), "granularity"),
    ],
)
async def test_bad_history_requests_name_the_field(
    stack: Stack, request_: q.ListLocationHistoryRequest, field: str
) -> None:
    assert stack.query_channel is not None
    stub = q_grpc.StatusQueryServiceStub(stack.query_channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListLocationHistory(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field)


async def test_batch_get_is_all_or_nothing(world: World) -> None:
    a = await world.tracker()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.status_stub.BatchGetTrackerStatuses(
            q.BatchGetTrackerStatusesRequest(tracker_ids=[str(a), str(uuid.uuid4())])
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.status_stub.BatchGetTrackerStatuses(
            q.BatchGetTrackerStatusesRequest(tracker_ids=[str(a), "x"])
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("tracker_ids[1]")
    none_yet = await status_of(world, a)
    assert none_yet.status == st.TRACKER_STATUS_UNSPECIFIED


async def test_worker_process_carries_on_after_a_database_outage(world: World) -> None:
    """The worker loop (as tracker-worker runs it) backs off while PostgreSQL is cut off and
    processes what arrived meanwhile once it is back."""
    assert world.stack.container is not None
    real_url = world.stack.container.settings().database.dsn
    target = urlsplit(real_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.open()
    settings = stack_settings(via(real_url, proxy.port), worker_idle_s=0.05)
    process = Process(settings, [], [WorkerLoop(settings)])
    await process.start()
    a = await world.tracker()
    try:
        await world.store([rep(a, T0, HAMBURG_WAREHOUSE)])
        async with asyncio.timeout(10):
            while (await status_of(world, a)).status != st.TRACKER_STATUS_IN_STORAGE:
                await asyncio.sleep(0.05)
        errors = prometheus.WORKER_ERRORS.labels("unavailable")._value.get()
        await proxy.cut()
        await world.store([rep(a, T0 + timedelta(hours=5), BERLIN_STORE)])
        async with asyncio.timeout(10):
            while prometheus.WORKER_ERRORS.labels("unavailable")._value.get() == errors:
                await asyncio.sleep(0.05)
        await proxy.open()
        async with asyncio.timeout(45):  # the back-off doubles from 0.05 s
            while (await status_of(world, a)).status != st.TRACKER_STATUS_DELIVERED:
                await asyncio.sleep(0.1)
    finally:
        await process.stop(0)
        if proxy._server is not None:
            await proxy.cut()


async def test_deleting_a_tracker_removes_what_was_derived_and_its_queued_work(
    world: World,
) -> None:
    assert world.stack.container is not None
    setup = await world.stack.container.setup_usecases.async_()
    kept, gone, early = await world.tracker(), await world.tracker(), await world.tracker()
    await world.store([rep(t, T0, BERLIN_STORE) for t in (kept, gone)])
    await world.process()
    await world.store([rep(early, T0, BERLIN_STORE)])
    await setup.delete_tracker(SYSTEM, gone, force=True)
    await setup.delete_tracker(SYSTEM, early, force=True)  # before the worker got to it
    assert await world.process() == 0
    uow_factory = await world.stack.container.uow_factory.async_()
    async with uow_factory() as uow:
        conn = uow._conn
        assert conn is not None
        for table in ("tracker_status", "status_history", "location_hourly", "location_daily"):
            rows = await conn.fetch(f"SELECT DISTINCT tracker_id FROM {table}")
            assert {r["tracker_id"] for r in rows} == {kept}, table
        assert await conn.fetchval("SELECT count(*) FROM processing_queue") == 0
