"""Detector use cases over the fakes: access as for setup resources, sightings keyed (no raw
MAC reaches a repository) and idempotent, our trackers heard become reports, and the
travel-time turn shares destinations between workers through leases."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from domain.access import Principal, Role
from domain.detectors import DeviceIdKind, DeviceKeyRing, Radio
from domain.errors import InvalidArgument, NotFound, PermissionDenied
from domain.model import GeoPoint
from domain.reports import to_us
from servers.parts import DetectorsPart
from tests.contract.builders import a_brand, a_client, a_run, a_tracker, raw_key
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from usecases.detectors import NewDetector
from usecases.sightings import IncomingSightings
from usecases.travel_times import ComputeTravelTimes, TravelTimeSettings

KEYS = DeviceKeyRing({1: b"k" * 32}, 1)


class NoFeed:
    async def start(self) -> str:
        return "now"

    async def events_after(self, position, ids, limit):  # type: ignore[no-untyped-def]
        return [], position

    async def travel_times_after(self, position, destination):  # type: ignore[no-untyped-def]
        return [], position


@pytest.fixture
def world():  # type: ignore[no-untyped-def]
    uows, clock = FakeUnitOfWorkFactory(), FakeClock()
    part = DetectorsPart(uow=uows, clock=clock, keys=KEYS, feed=NoFeed(), live_uow=uows)
    return uows, clock, part


async def with_client(uows: FakeUnitOfWorkFactory):  # type: ignore[no-untyped-def]
    client = a_client()
    async with uows() as uow:
        await uow.clients.add(client)
        await uow.commit()
    return client


def new(client_id: uuid.UUID, name: str = "gate") -> NewDetector:
    return NewDetector(client_id, name, GeoPoint(52.5, 13.4), (Radio.BLUETOOTH,), 30.0)


async def test_only_client_admins_of_its_client_manage_a_detector(world) -> None:  # type: ignore[no-untyped-def]
    uows, _, part = world
    client = await with_client(uows)
    admin = Principal(uuid.uuid4(), memberships={client.id: Role.CLIENT_ADMIN})
    viewer = Principal(uuid.uuid4(), memberships={client.id: Role.VIEWER})
    stranger = Principal(uuid.uuid4(), memberships={uuid.uuid4(): Role.CLIENT_ADMIN})
    created = await part.admin().create(admin, new(client.id))
    with pytest.raises(PermissionDenied):
        await part.admin().create(viewer, new(client.id))
    with pytest.raises(NotFound):
        await part.admin().create(stranger, new(client.id))
    assert await part.queries().get(viewer, created.id) == created
    with pytest.raises(NotFound) as hidden:
        await part.queries().get(stranger, created.id)
    with pytest.raises(NotFound) as missing:
        await part.queries().get(stranger, uuid.UUID(int=5))
    assert str(hidden.value).replace(str(created.id), "x") == str(missing.value).replace(
        str(uuid.UUID(int=5)), "x"
    )
    with pytest.raises(PermissionDenied):
        await part.admin().update(viewer, created.id, {"display_name": "x"})
    with pytest.raises(InvalidArgument):
        await part.admin().update(admin, created.id, {"client_id": uuid.uuid4()})
    other = await part.admin().create(admin, new(client.id, "other"))
    link = await part.admin().create_link(admin, created.id, other.id)
    assert link.max_seconds == 600
    with pytest.raises(InvalidArgument, match="max_seconds"):
        await part.admin().update_link(admin, created.id, other.id, 0)
    with pytest.raises(InvalidArgument, match="source_detector_id"):
        await part.admin().create_link(admin, created.id, created.id)


async def test_a_stream_resumes_from_its_cursor_once_access_is_checked(world) -> None:  # type: ignore[no-untyped-def]
    uows, _, part = world
    client = await with_client(uows)
    admin = Principal(uuid.uuid4(), memberships={client.id: Role.CLIENT_ADMIN})
    stranger = Principal(uuid.uuid4(), memberships={uuid.uuid4(): Role.CLIENT_ADMIN})
    created = await part.admin().create(admin, new(client.id))
    events = part.events()
    assert await events.follow(admin, [created.id]) == "now"
    assert await events.follow(admin, [created.id], "kept") == "kept"
    with pytest.raises(NotFound):  # another client's detector: hidden whatever the cursor
        await events.follow(stranger, [created.id], "kept")


async def test_sightings_are_keyed_and_raw_macs_reach_no_repository(world) -> None:  # type: ignore[no-untyped-def]
    uows, clock, part = world
    client = await with_client(uows)
    gate = await part.admin().create(Principal.system(), new(client.id))
    now = clock.now()
    mac = bytes.fromhex("0200000000AA")
    msg = IncomingSightings(
        str(gate.id),
        times_us=[to_us(now), to_us(now), None, to_us(now)],
        macs=[mac, b"", mac, b"\x01"],
        opaque_ids=[b"", b"opaque-1", b"", b""],
        rssi=[-60, None, None, None],
        radios=[0, int(Radio.WIFI), 0, 0],
    )
    out = await part.ingest()(Principal.system(), msg, offset=10)
    assert (out.received, out.stored, out.rejected_count) == (4, 2, 2)
    assert [v.field for v in out.rejected] == [
        "sightings[12].seen_time",
        "sightings[13].mac_address",
    ]
    stored = list(uows.committed.sightings.values())
    keys = {e.device_key for e in stored}
    assert keys == {KEYS.key(DeviceIdKind.MAC, mac), KEYS.key(DeviceIdKind.OPAQUE, b"opaque-1")}
    assert not any(mac in k for k in keys)
    again = await part.ingest()(Principal.system(), msg)
    assert (again.stored, again.duplicates) == (0, 2)


async def test_a_tracker_heard_by_its_clients_detector_becomes_a_detector_report(world) -> None:  # type: ignore[no-untyped-def]
    uows, clock, part = world
    client = a_client()
    brand = a_brand(client)
    run = a_run(brand)
    tracker = a_tracker(run, raw_key(3))
    async with uows() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.trackers.add(tracker)
        await uow.commit()
    gate = await part.admin().create(Principal.system(), new(client.id))
    raw = bytes.fromhex(tracker.mac_address.value.replace(":", ""))
    msg = IncomingSightings(
        str(gate.id), [to_us(clock.now())], [raw], [b""], [-50], [int(Radio.BLUETOOTH)]
    )
    out = await part.ingest()(Principal.system(), msg)
    assert out.tracker_reports == 1
    (report,) = uows.committed.reports.values()
    assert (report.tracker_id, report.source, report.horizontal_accuracy_m) == (
        tracker.id,
        "detector",
        30,
    )
    assert (report.position.latitude, report.position.longitude) == (52.5, 13.4)
    # Another client's detector hearing it makes no report of it.
    other = await with_client(uows)
    theirs = await part.admin().create(Principal.system(), new(other.id))
    msg.detector_id = str(theirs.id)
    assert (await part.ingest()(Principal.system(), msg)).tracker_reports == 0


async def test_two_workers_share_destinations_and_a_turn_computes_bins(world) -> None:  # type: ignore[no-untyped-def]
    uows, clock, part = world
    client = await with_client(uows)
    admin = Principal.system()
    dets = [await part.admin().create(admin, new(client.id, f"d{n}")) for n in range(3)]
    await part.admin().create_link(admin, dets[1].id, dets[0].id)
    await part.admin().create_link(admin, dets[2].id, dets[0].id)
    start = clock.now() - timedelta(hours=1)
    for n in range(30):
        t = start + timedelta(seconds=60 * n)
        for det, dt in ((dets[0], 0), (dets[1], 100), (dets[2], 200)):
            msg = IncomingSightings(
                str(det.id),
                [to_us(t + timedelta(seconds=dt))],
                [bytes([2, 0, 0, 0, 0, n])],
                [b""],
                [-60],
                [1],
            )
            await part.ingest()(admin, msg)
    settings = TravelTimeSettings(claim=1)
    w1 = ComputeTravelTimes(uows, clock, "w1", settings)
    w2 = ComputeTravelTimes(uows, clock, "w2", settings)
    r1, r2 = await w1(), await w2()
    assert (r1.destinations, r2.destinations) == (1, 1)
    assert (await w1()).destinations == 0  # both due again only after the interval
    bins = list(uows.committed.travel_times.values())
    by_dest = {b.destination_id: b.estimate_s for b in bins if b.estimate_s}
    assert set(by_dest.values()) == {100.0, 200.0}
    clock.advance(timedelta(seconds=settings.interval_s + 1))
    assert (await w2()).destinations == 1
