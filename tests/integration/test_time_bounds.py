"""Every time a request carries is in range (issue 10): the Timestamp extremes, sent to
every field of type google.protobuf.Timestamp of every request message (found from the
descriptors), give INVALID_ARGUMENT naming the field or a normal answer, never INTERNAL or
UNKNOWN, and nothing out of range is stored. Rows stored before the rule are cleaned by
migration 0008 and read tolerantly."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor, field_mask_pb2, message_factory, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.postgres.migrator import bundled_migrations, migrate
from domain.instants import (
    DEFAULT_MAX_CLOCK_SKEW,
    QUERY_TIME_FLOOR,
    REPORT_TIME_FLOOR,
    RUN_TIME_CEILING,
    RUN_TIME_FLOOR,
    TIME_CEILING,
)
from tests.conftest import create_database, drop_database, url_for
from tests.integration.conftest import Stack
from tracker.v1 import (
    auth_service_pb2,
    detector_pb2,
    detector_query_service_pb2,
    detector_service_pb2,
    detector_service_pb2_grpc,
    fetch_query_service_pb2,
    key_query_service_pb2,
    key_service_pb2,
    report_service_pb2,
    setup_query_service_pb2,
    setup_service_pb2,
    status_query_service_pb2,
    status_service_pb2,
    user_query_service_pb2,
    user_service_pb2,
)
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s

pytestmark = pytest.mark.integration

FILES = [
    auth_service_pb2,
    fetch_query_service_pb2,
    key_query_service_pb2,
    key_service_pb2,
    report_service_pb2,
    setup_query_service_pb2,
    setup_service_pb2,
    status_query_service_pb2,
    status_service_pb2,
    user_query_service_pb2,
    user_service_pb2,
    detector_service_pb2,
    detector_query_service_pb2,
]
TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
MIN_SECONDS, MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31T23:59:59


def timestamp_paths(d: descriptor.Descriptor, prefix: str = "", seen: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Dotted paths (``[0]`` for a repeated field's first element) of every Timestamp
    field of a message, recursively."""
    for f in d.fields:
        if f.message_type is None:
            continue
        path = prefix + f.name + ("[0]" if f.is_repeated else "")
        if f.message_type.full_name == TIMESTAMP:
            yield path
        elif f.message_type.full_name not in seen:
            yield from timestamp_paths(f.message_type, path + ".", (*seen, d.full_name))


METHODS = {
    m.name: m for f in FILES for svc in f.DESCRIPTOR.services_by_name.values() for m in svc.methods
}
TARGETS = sorted(
    (name, path) for name, m in METHODS.items() for path in timestamp_paths(m.input_type)
)

# Fields a server reads (the rest, create_time/update_time of resources, are output only).
READ = {
    ("IngestReports", "reports[0].report_time"): "report",
    ("IngestReports", "reports[0].published_time"): "report",
    ("CreateProductionRun", "production_run.start_time"): "run",
    ("CreateProductionRun", "production_run.end_time"): "run",
    ("UpdateProductionRun", "production_run.start_time"): "run",
    ("UpdateProductionRun", "production_run.end_time"): "run",
    ("ListStatusHistory", "start_time"): "query",
    ("ListStatusHistory", "end_time"): "query",
    ("ListLocationHistory", "start_time"): "query",
    ("ListLocationHistory", "end_time"): "query",
    ("IngestSightings", "sightings[0].seen_time"): "report",
    ("IngestSightings", "status.report_time"): "report",
    ("ListDetectorEvents", "start_time"): "query",
    ("ListDetectorEvents", "end_time"): "query",
    ("ListBatteryReadings", "start_time"): "query",
    ("ListBatteryReadings", "end_time"): "query",
    ("ListTravelTimes", "start_time"): "query",
    ("ListTravelTimes", "end_time"): "query",
}

EXTREMES = [
    timestamp_pb2.Timestamp(seconds=MIN_SECONDS),  # 0001-01-01T00:00:00Z
    timestamp_pb2.Timestamp(seconds=MAX_SECONDS, nanos=999_999_999),  # 9999-12-31T23:59:59.9..
    timestamp_pb2.Timestamp(seconds=MIN_SECONDS - 1),
    timestamp_pb2.Timestamp(seconds=MAX_SECONDS + 1),
    timestamp_pb2.Timestamp(seconds=2**63 - 1, nanos=2**31 - 1),
    timestamp_pb2.Timestamp(seconds=-(2**63), nanos=-(2**31)),
    timestamp_pb2.Timestamp(seconds=0, nanos=-1),
    timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=1_000_000_000),
    timestamp_pb2.Timestamp(seconds=0),  # 1970-01-01
    timestamp_pb2.Timestamp(seconds=int(REPORT_TIME_FLOOR.timestamp()) - 1),
    timestamp_pb2.Timestamp(seconds=int(TIME_CEILING.timestamp())),
]
timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.one_of(
        st.integers(MIN_SECONDS - 10, MAX_SECONDS + 10),
        st.integers(int(RUN_TIME_FLOOR.timestamp()), int(RUN_TIME_CEILING.timestamp())),
        st.integers(-(2**63), 2**63 - 1),
    ),
    nanos=st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1)),
)


@dataclass
class World:
    client: str
    brand: str
    run: str
    location: str
    tracker: str
    detector: str = ""
    source_detector: str = ""


def _key() -> bytes:
    return uuid.uuid4().bytes + uuid.uuid4().bytes[:12]


def _report(w: World) -> Any:
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return report_service_pb2.ReportInput(
        tracker_id=w.tracker,
        latitude=52.5,
        longitude=13.4,
        confidence=2,
        horizontal_accuracy_m=10,
        report_time=when,
    )


def _run(w: World) -> pb.ProductionRun:
    run = pb.ProductionRun(brand_id=w.brand, display_name="T")
    run.start_time.FromJsonString("2026-01-01T00:00:00Z")
    run.end_time.FromJsonString("2027-12-01T00:00:00Z")
    return run


def _detector(w: World) -> detector_pb2.Detector:
    return detector_pb2.Detector(
        client_id=w.client,
        display_name="T",
        position=pb.GeoPoint(latitude=52.5, longitude=13.4),
        radios=[detector_pb2.RADIO_BLUETOOTH],
    )


def _sighting(w: World) -> Any:
    s = detector_pb2.Sighting(mac_address=b"\x02\x00\x00\x00\x00\x01")
    s.seen_time.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return s


def _link(w: World) -> detector_pb2.Link:
    return detector_pb2.Link(
        destination_detector_id=w.detector, source_detector_id=w.source_detector, max_seconds=600
    )


# A valid request per method that carries a Timestamp (before the field under test is set).
BASE: dict[str, Callable[[World], dict[str, Any]]] = {
    "IngestReports": lambda w: {"reports": [_report(w)]},
    "CreateClient": lambda w: {"client": pb.Client(display_name="T")},
    "UpdateClient": lambda w: {"client": pb.Client(id=w.client, display_name="T2")},
    "CreateBrand": lambda w: {"brand": pb.Brand(client_id=w.client, display_name="T")},
    "UpdateBrand": lambda w: {"brand": pb.Brand(id=w.brand, display_name="T2")},
    "CreateProductionRun": lambda w: {"production_run": _run(w)},
    "UpdateProductionRun": lambda w: {"production_run": pb.ProductionRun(id=w.run)},
    "CreateLocation": lambda w: {
        "location": pb.Location(
            production_run_id=w.run,
            kind=pb.LOCATION_KIND_STORAGE,
            display_name="T",
            center=pb.GeoPoint(latitude=52.5, longitude=13.4),
            radius_m=100,
        )
    },
    "UpdateLocation": lambda w: {"location": pb.Location(id=w.location, display_name="T2")},
    "CreateTracker": lambda w: {
        "tracker": pb.Tracker(production_run_id=w.run, advertisement_key=_key())
    },
    "UpdateTracker": lambda w: {"tracker": pb.Tracker(id=w.tracker, display_name="T2")},
    "BatchCreateTrackers": lambda w: {
        "production_run_id": w.run,
        "trackers": [pb.Tracker(advertisement_key=_key())],
    },
    "ListStatusHistory": lambda w: {"tracker_id": w.tracker},
    "ListLocationHistory": lambda w: {"tracker_id": w.tracker},
    "CreateDetector": lambda w: {"detector": _detector(w)},
    "UpdateDetector": lambda w: {
        "detector": detector_pb2.Detector(id=w.detector, display_name="T2")
    },
    # The world holds this link already: a create answers ALREADY_EXISTS (see check_one).
    "CreateLink": lambda w: {"link": _link(w)},
    "UpdateLink": lambda w: {"link": _link(w)},
    "IngestSightings": lambda w: {
        "detector_id": w.detector,
        "sightings": [_sighting(w)],
        "status": detector_pb2.DetectorStatus(
            report_time=_sighting(w).seen_time, battery_voltage=3.7
        ),
    },
    "ListDetectorEvents": lambda w: {"detector_ids": [w.detector]},
    "ListBatteryReadings": lambda w: {"detector_id": w.detector},
    "ListTravelTimes": lambda w: {"destination_detector_id": w.detector},
    "CreateUser": lambda w: {
        "user": pb.User(email=f"{uuid.uuid4().hex}@time.test"),
        "password": "a long enough password",
    },
}


def test_every_request_timestamp_is_covered() -> None:
    """A new RPC (or field) taking a time joins this suite, or this test fails."""
    assert {name for name, _ in TARGETS} == set(BASE)
    assert set(READ) <= set(TARGETS)


def request_with(method: descriptor.MethodDescriptor, w: World, path: str, value: Any) -> Message:
    msg = message_factory.GetMessageClass(method.input_type)(**BASE[method.name](w))
    *parents, leaf = path.split(".")
    node: Any = msg
    for part in parents:
        name, _, index = part.partition("[")
        node = getattr(node, name)[0] if index else getattr(node, name)
    if method.name == "UpdateProductionRun":
        read = leaf in ("start_time", "end_time")
        msg.production_run.display_name = "T2"  # type: ignore[attr-defined]
        msg.update_mask.paths.append(leaf if read else "display_name")  # type: ignore[attr-defined]
    getattr(node, leaf).CopyFrom(value)
    return msg


async def invoke(stack: Stack, method: descriptor.MethodDescriptor, request: Message) -> Any:
    query = method.containing_service.full_name.endswith("QueryService")
    channel = stack.query_channel if query else stack.collector_channel
    assert channel is not None
    out = message_factory.GetMessageClass(method.output_type)
    make = channel.stream_unary if method.client_streaming else channel.unary_unary
    rpc = make(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=out.FromString,
    )
    return await (rpc(iter([request])) if method.client_streaming else rpc(request))


def as_datetime(value: timestamp_pb2.Timestamp) -> datetime | None:
    """The instant, or None where it is not a valid Timestamp."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def acceptable(kind: str, when: datetime | None) -> bool:
    if when is None:
        return False
    if kind == "run":
        return RUN_TIME_FLOOR <= when <= RUN_TIME_CEILING
    if kind == "query":
        return QUERY_TIME_FLOOR <= when <= TIME_CEILING
    return REPORT_TIME_FLOOR <= when <= datetime.now(UTC) + DEFAULT_MAX_CLOCK_SKEW


async def check_one(stack: Stack, w: World, name: str, path: str, value: Any) -> None:
    method = METHODS[name]
    kind = READ.get((name, path))
    request = request_with(method, w, path, value)
    failure: grpc.aio.AioRpcError | None = None
    try:
        response = await invoke(stack, method, request)
    except grpc.aio.AioRpcError as err:
        failure = err
    if failure is not None and failure.code() == grpc.StatusCode.ALREADY_EXISTS:
        assert kind is None, (name, path)  # a repeated create: the time was not even read
        return
    if failure is not None:
        assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, path, value, failure)
        details = failure.details() or ""
        assert kind is not None, f"{name} rejected output-only {path}: {details}"
        if acceptable(kind, as_datetime(value)):
            # Only a run's window can be refused for a good time: the other end is wrong.
            assert kind == "run", (name, path, value, details)
            assert "production_run.end_time: must be after start_time" in details, details
        else:
            assert path in details, (path, details)
        return
    when = as_datetime(value)
    if kind == "report":
        if acceptable(kind, when):
            assert response.rejected_count == 0, response
        else:
            assert response.rejected_count == 1, (path, value)
            assert [e.field for e in response.errors] == [path], response.errors
    elif kind is not None:
        assert acceptable(kind, when), (name, path, value)


async def make_world(stack: Stack) -> World:
    client = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="T")))
    ).client
    brand = (
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="T"))
        )
    ).brand
    w = World(client.id, brand.id, "", "", "")
    run = (
        await stack.setup.CreateProductionRun(s.CreateProductionRunRequest(production_run=_run(w)))
    ).production_run
    w.run = run.id
    w.location = (
        await stack.setup.CreateLocation(s.CreateLocationRequest(**BASE["CreateLocation"](w)))
    ).location.id
    w.tracker = (
        await stack.setup.CreateTracker(s.CreateTrackerRequest(**BASE["CreateTracker"](w)))
    ).tracker.id
    assert stack.collector_channel is not None
    detectors = detector_service_pb2_grpc.DetectorServiceStub(stack.collector_channel)
    w.detector, w.source_detector = [
        (
            await detectors.CreateDetector(
                detector_service_pb2.CreateDetectorRequest(detector=_detector(w))
            )
        ).detector.id
        for _ in range(2)
    ]
    await detectors.CreateLink(detector_service_pb2.CreateLinkRequest(link=_link(w)))
    return w


async def nothing_out_of_range_is_stored(stack: Stack) -> None:
    assert stack.container is not None
    conn = await asyncpg.connect(stack.container.settings().database.dsn)
    try:
        assert not await conn.fetchval(
            "SELECT count(*) FROM production_runs WHERE NOT (start_time >= $1 AND "
            "end_time <= $2 AND start_time < end_time)",
            RUN_TIME_FLOOR,
            RUN_TIME_CEILING,
        )
        assert not await conn.fetchval(
            "SELECT count(*) FROM reports WHERE NOT (report_time >= $1 AND report_time <= $2) "
            "OR NOT coalesce(published_time >= $1 AND published_time <= $2, true)",
            REPORT_TIME_FLOOR,
            datetime.now(UTC) + DEFAULT_MAX_CLOCK_SKEW,
        )
    finally:
        await conn.close()


def cases() -> Iterator[tuple[str, str, timestamp_pb2.Timestamp]]:
    for name, path in TARGETS:
        for value in EXTREMES:
            if name == "CreateUser" and value is not EXTREMES[0]:
                continue  # each call hashes a password (64 MiB Argon2): one value is enough
            yield name, path, value


async def test_timestamp_extremes_on_every_rpc_are_refused_or_harmless(stack: Stack) -> None:
    w = await make_world(stack)
    for name, path, value in cases():
        await check_one(stack, w, name, path, value)
    await nothing_out_of_range_is_stored(stack)


@settings(
    max_examples=int(os.environ.get("TRACKER_TIME_EXAMPLES", "120")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=st.sampled_from([t for t in TARGETS if t[0] != "CreateUser"]),
    value=timestamps,
)
async def test_any_timestamp_on_any_rpc_is_refused_or_harmless(
    stack: Stack, target: tuple[str, str], value: timestamp_pb2.Timestamp
) -> None:
    world = getattr(stack, "_time_world", None)
    if world is None:
        world = await make_world(stack)
        stack._time_world = world  # type: ignore[attr-defined]
    await check_one(stack, world, *target, value)
    await nothing_out_of_range_is_stored(stack)


async def test_migration_0008_clamps_runs_and_removes_unreadable_reports() -> None:
    """Rows a caller could store before the rule: runs from -infinity to infinity or
    wholly in the past, reports at -infinity or year 1, and what processing made of them."""
    name = f"tracker_test_m8_{uuid.uuid4().hex[:10]}"
    await create_database(name)
    conn = await asyncpg.connect(url_for(name))
    try:
        await migrate(conn, [m for m in bundled_migrations() if m.version < 8])
        client, brand, tracker = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        runs = {"forever": uuid.uuid4(), "past": uuid.uuid4(), "fine": uuid.uuid4()}
        await conn.execute("INSERT INTO clients VALUES ($1, 'C', now(), now())", client)
        await conn.execute("INSERT INTO brands VALUES ($1, $2, 'B', now(), now())", brand, client)
        for key, (start, end) in {
            "forever": ("-infinity", "infinity"),
            "past": ("1990-01-01", "1995-01-01"),
            "fine": ("2026-01-01", "2027-01-01"),
        }.items():
            await conn.execute(
                "INSERT INTO production_runs VALUES ($1, $2, $3, 'R', $4::text::timestamptz, "
                "$5::text::timestamptz, now(), now())",
                runs[key],
                brand,
                client,
                start,
                end,
            )
        # As the old on-demand code did: a partition for year 1; -infinity went to default.
        await conn.execute(
            "CREATE TABLE reports_0001_01 PARTITION OF reports "
            "FOR VALUES FROM ('0001-01-01+00') TO ('0001-02-01+00')"
        )
        await conn.execute(
            "CREATE TABLE reports_2026_11 PARTITION OF reports "
            "FOR VALUES FROM ('2026-11-01+00') TO ('2026-12-01+00')"
        )
        insert = (
            "INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7, "
            "confidence, horizontal_accuracy_m, source, published_time) "
            "VALUES ($1, $2::text::timestamptz, 0, 0, 2, 1, 'test', $3::text::timestamptz)"
        )
        await conn.execute(insert, tracker, "-infinity", None)
        await conn.execute(insert, tracker, "0001-01-01 00:00:01+00", None)
        await conn.execute(insert, tracker, "2026-11-05 10:00+00", "infinity")
        await conn.execute(
            "INSERT INTO status_history VALUES ($1, '-infinity', 0, 0, 'IN_TRANSIT', NULL, "
            "NULL, 1, 2, NULL), ($1, '2026-11-05 10:00+00', 0, 0, 'IN_TRANSIT', NULL, NULL, "
            "1, 2, NULL)",
            tracker,
        )
        await conn.execute(
            "INSERT INTO location_hourly VALUES ($1, '0001-01-01+00', 2, 1, '0001-01-01+00', "
            "'0001-01-01+00', 1, '0001-01-01+00', 0, 0, NULL)",
            tracker,
        )
        await conn.execute(
            "INSERT INTO tracker_status (tracker_id, last_report_time, last_latitude_e7, "
            "last_longitude_e7, last_accuracy_m) VALUES ($1, '-infinity', 0, 0, 1)",
            tracker,
        )
        await conn.execute(
            "UPDATE processing_queue SET hours = hours || '{-infinity}'::timestamptz[]"
        )

        assert (await migrate(conn))[0] == 8  # then the later ones

        window = {
            r["id"]: (r["start_time"], r["end_time"])
            for r in await conn.fetch("SELECT id, start_time, end_time FROM production_runs")
        }
        assert window[runs["forever"]] == (RUN_TIME_FLOOR, RUN_TIME_CEILING)
        assert window[runs["past"]] == (RUN_TIME_FLOOR, RUN_TIME_FLOOR + timedelta(days=1))
        assert window[runs["fine"]] == (
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        )
        rows = await conn.fetch("SELECT report_time, published_time FROM reports")
        assert [(r["report_time"], r["published_time"]) for r in rows] == [
            (datetime(2026, 11, 5, 10, tzinfo=UTC), None)
        ]
        assert await conn.fetchval("SELECT count(*) FROM status_history") == 1
        assert await conn.fetchval("SELECT count(*) FROM location_hourly") == 0
        assert await conn.fetchval("SELECT count(*) FROM tracker_status") == 0
        # New reports wait in the inbox (0007) until a worker folds them into the queue.
        queue = await conn.fetch("SELECT since, hours FROM processing_inbox ORDER BY id")
        assert queue, "the reports' work is still noted"
        assert all(q["since"] >= REPORT_TIME_FLOOR for q in queue)
        assert sorted({h for q in queue for h in q["hours"]}) == [
            datetime(2026, 11, 5, 10, tzinfo=UTC)
        ]
        # And the schema keeps it so.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE production_runs SET end_time = 'infinity' WHERE id = $1", runs["fine"]
            )
    finally:
        await conn.close()
        await drop_database(name)


async def test_runs_stored_at_infinity_stay_readable_updatable_and_deletable(
    stack: Stack,
) -> None:
    """Issue 10 finding 2: Get/Update/Delete/List of such a run answered INVALID_ARGUMENT
    "must be timezone-aware". Readers now read it clamped (as the migration clamps)."""
    w = await make_world(stack)
    assert stack.container is not None
    conn = await asyncpg.connect(stack.container.settings().database.dsn)
    try:
        await conn.execute(
            "ALTER TABLE production_runs DROP CONSTRAINT production_runs_time_bounds"
        )
        await conn.execute(
            "UPDATE production_runs SET start_time = '-infinity', end_time = 'infinity' "
            "WHERE id = $1",
            uuid.UUID(w.run),
        )
    finally:
        await conn.close()
    got = (await stack.query.GetProductionRun(q.GetProductionRunRequest(id=w.run))).production_run
    assert got.start_time.ToDatetime(tzinfo=UTC) == RUN_TIME_FLOOR
    assert got.end_time.ToDatetime(tzinfo=UTC) == RUN_TIME_CEILING
    listed = await stack.query.ListProductionRuns(q.ListProductionRunsRequest(page_size=1000))
    assert w.run in [r.id for r in listed.production_runs]
    updated = await stack.setup.UpdateProductionRun(
        s.UpdateProductionRunRequest(
            production_run=pb.ProductionRun(id=w.run, display_name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    assert updated.production_run.display_name == "renamed"
    assert updated.production_run.end_time.ToDatetime(tzinfo=UTC) == RUN_TIME_CEILING
    await stack.setup.DeleteProductionRun(s.DeleteProductionRunRequest(id=w.run, force=True))
