"""The detectors ports' contract (detectors, links, sightings, travel times), on the fakes
and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest

from domain.detectors import Detector, DetectorStatusReading, Link, Radio
from domain.errors import AlreadyExists
from domain.model import GeoPoint
from domain.pagination import PageRequest
from domain.ports.detectors import (
    DetectorFilter,
    EventFilter,
    SightingRows,
    TravelTimeBin,
    TravelTimeFilter,
)
from domain.reports import to_us
from tests.contract.builders import T0, a_brand, a_client, a_run, a_tracker, raw_key
from tests.contract.conftest import Uows


def a_detector(client_id: uuid.UUID, name: str = "gate") -> Detector:
    return Detector(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        client_id=client_id,
        display_name=name,
        position=GeoPoint(52.5, 13.4),
        radios=(Radio.BLUETOOTH,),
        range_m=25.0,
    )


def a_link(dest: Detector, src: Detector, max_seconds: int = 600) -> Link:
    return Link(
        destination_id=dest.id,
        source_id=src.id,
        client_id=dest.client_id,
        max_seconds=max_seconds,
        create_time=T0,
        update_time=T0,
    )


async def world(uows: Uows, detectors: int = 3) -> tuple[uuid.UUID, list[Detector]]:
    client = a_client()
    made = [a_detector(client.id, f"d{n}") for n in range(detectors)]
    async with uows() as uow:
        await uow.clients.add(client)
        for d in made:
            await uow.detectors.add(d)
        await uow.commit()
    return client.id, made


def rows(detector: Detector, n: int, offset_s: int = 0) -> SightingRows:
    out = SightingRows(detector.id, 1)
    for i in range(n):
        out.device_keys.append(bytes([i]) * 16)
        out.times_us.append(to_us(T0 + timedelta(seconds=offset_s + i)))
        out.rssi.append(None if i % 2 else -60)
        out.radios.append(int(Radio.BLUETOOTH))
    return out


async def test_detectors_are_stored_listed_by_visible_client_and_deleted(uows: Uows) -> None:
    client, made = await world(uows)
    other, theirs = await world(uows, 1)
    async with uows() as uow:
        assert await uow.detectors.get(made[0].id) == made[0]
        assert await uow.detectors.get(uuid.uuid4()) is None
        moved = dataclasses.replace(made[0], display_name="moved", range_m=5.0)
        await uow.detectors.update(moved)
        seen, after = [], None
        while True:
            page = await uow.detectors.list(
                DetectorFilter(visible_clients=frozenset({client})), PageRequest(2, after)
            )
            seen += page.items
            after = page.next_after
            if after is None:
                break
        assert sorted(d.id for d in seen) == sorted(d.id for d in made)
        assert moved in seen
        everyone = await uow.detectors.list(DetectorFilter(), PageRequest(100))
        assert {d.id for d in everyone.items} == {d.id for d in made + theirs}
        await uow.detectors.delete(made[0].id)
        assert await uow.detectors.get(made[0].id) is None
        await uow.commit()
    _ = other


async def test_links_are_unique_per_pair_and_listed_into_a_destination(uows: Uows) -> None:
    _, (a, b, c) = await world(uows)
    async with uows() as uow:
        await uow.links.add(a_link(b, a))
        await uow.links.add(a_link(b, c, 300))
        await uow.links.add(a_link(c, a))
        await uow.commit()
    async with uows() as uow:
        with pytest.raises(AlreadyExists):
            await uow.links.add(a_link(b, a))
    async with uows() as uow:
        into = await uow.links.into(b.id)
        assert sorted((x.source_id, x.max_seconds) for x in into) == sorted(
            [(a.id, 600), (c.id, 300)]
        )
        page = await uow.links.list(b.id, None, PageRequest(1))
        rest = await uow.links.list(b.id, None, PageRequest(5, page.next_after))
        assert len(page.items) + len(rest.items) == 2
        assert rest.next_after is None
        await uow.links.delete(b.id, a.id)
        assert await uow.links.get(b.id, a.id) is None
        assert await uow.links.list(None, frozenset({uuid.uuid4()}), PageRequest(10)) == type(page)(
            [], None
        )


async def test_sightings_are_idempotent_and_read_back_by_range_and_page(uows: Uows) -> None:
    client, (a, b, _) = await world(uows)
    async with uows() as uow:
        assert await uow.sightings.add_rows(rows(a, 10)) == 10
        assert await uow.sightings.add_rows(rows(a, 12)) == 2
        assert await uow.sightings.add_rows(rows(b, 3)) == 3
        await uow.commit()
    async with uows() as uow:
        f = EventFilter((a.id,), T0 + timedelta(seconds=2), T0 + timedelta(seconds=9))
        got, after = [], None
        while True:
            page = await uow.sightings.events(f, PageRequest(3, after))
            got += page.items
            after = page.next_after
            if after is None:
                break
        assert [e.seen_time for e in got] == [T0 + timedelta(seconds=s) for s in range(2, 9)]
        assert {e.rssi_dbm for e in got} == {None, -60}
        assert all(e.key_id == 1 for e in got)
        hidden = EventFilter(visible_clients=frozenset({uuid.uuid4()}))
        assert (await uow.sightings.events(hidden, PageRequest(10))).items == []
        both = await uow.sightings.events(
            EventFilter(visible_clients=frozenset({client})), PageRequest(100)
        )
        assert len(both.items) == 15
        found = await uow.sightings.detections([a.id, b.id], T0, T0 + timedelta(seconds=5))
        assert len(found) == 8
        assert await uow.sightings.earliest(a.id) == T0
        assert await uow.sightings.earliest(uuid.uuid4()) is None


async def test_statuses_are_stored_once_per_time(uows: Uows) -> None:
    _, (a, _, _) = await world(uows)
    reading = DetectorStatusReading(a.id, T0, 3.6, 10, 2)
    async with uows() as uow:
        assert await uow.sightings.add_status(reading)
        assert not await uow.sightings.add_status(reading)
        page = await uow.sightings.statuses(EventFilter((a.id,)), PageRequest(10))
        assert page.items == [reading]


async def test_destinations_are_leased_to_one_worker_at_a_time(uows: Uows) -> None:
    _, (a, b, c) = await world(uows)
    async with uows() as uow:
        await uow.links.add(a_link(b, a))
        await uow.links.add(a_link(c, a))
        await uow.commit()
    now = T0
    async with uows() as uow:
        first = await uow.travel_times.claim("w1", now, 60, 1)
        await uow.commit()
    async with uows() as uow:
        second = await uow.travel_times.claim("w2", now + timedelta(seconds=30), 60, 5)
        nothing = await uow.travel_times.claim("w3", now + timedelta(seconds=30), 60, 5)
        await uow.commit()
    assert len(first) == 1
    assert len(second) == 1
    assert nothing == []
    assert {first[0].destination_id, second[0].destination_id} == {b.id, c.id}
    # w1's lease runs out; w3 takes it over, and w1 learns it lost it.
    later = now + timedelta(seconds=61)
    async with uows() as uow:
        taken = await uow.travel_times.claim("w3", later, 60, 5)
        await uow.commit()
    assert [x.destination_id for x in taken] == [first[0].destination_id]
    async with uows() as uow:
        done = later + timedelta(seconds=1)
        assert not await uow.travel_times.complete("w1", first[0].destination_id, done, done)
        assert await uow.travel_times.complete(
            "w3", first[0].destination_id, done, later + timedelta(seconds=30)
        )
        await uow.commit()
    async with uows() as uow:
        assert await uow.travel_times.claim("w4", later + timedelta(seconds=5), 60, 5) == []
        again = await uow.travel_times.claim("w4", later + timedelta(seconds=31), 60, 5)
    # (w2's lease has run out by now too)
    assert (first[0].destination_id, done) in [(x.destination_id, x.done_until) for x in again]


async def test_bins_are_replaced_listed_and_the_latest_estimate_is_per_source(uows: Uows) -> None:
    client, (a, b, c) = await world(uows)

    def a_bin(src: Detector, minutes: int, estimate: float | None) -> TravelTimeBin:
        return TravelTimeBin(
            b.id, src.id, T0 + timedelta(minutes=minutes), 300, estimate, estimate, estimate,
            1 if estimate else 0, 0, estimate or 0.0, T0,
        )  # fmt: skip

    async with uows() as uow:
        await uow.travel_times.save([a_bin(a, 0, 100.0), a_bin(a, 5, 110.0), a_bin(c, 0, 50.0)])
        await uow.travel_times.save([a_bin(a, 5, 120.0), a_bin(a, 10, None)])
        await uow.commit()
    async with uows() as uow:
        page = await uow.travel_times.list(TravelTimeFilter(b.id, a.id), PageRequest(2))
        rest = await uow.travel_times.list(
            TravelTimeFilter(b.id, a.id), PageRequest(2, page.next_after)
        )
        assert [x.estimate_s for x in page.items + rest.items] == [100.0, 120.0, None]
        latest = await uow.travel_times.latest(b.id)
        assert sorted((x.source_id, x.estimate_s) for x in latest) == sorted(
            [(a.id, 120.0), (c.id, 50.0)]
        )
        hidden = TravelTimeFilter(visible_clients=frozenset({uuid.uuid4()}))
        assert (await uow.travel_times.list(hidden, PageRequest(10))).items == []
        mine = TravelTimeFilter(visible_clients=frozenset({client}))
        assert len((await uow.travel_times.list(mine, PageRequest(10))).items) == 4


async def test_trackers_heard_are_the_clients_own_by_mac(uows: Uows) -> None:
    client = a_client()
    brand = a_brand(client)
    run = a_run(brand)
    tracker = a_tracker(run, raw_key(1))
    async with uows() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.trackers.add(tracker)
        await uow.commit()
    mac = tracker.mac_address.value
    async with uows() as uow:
        assert await uow.detectors.trackers_heard(client.id, [mac, "02:00:00:00:00:01"]) == {
            mac: tracker.id
        }
        assert await uow.detectors.trackers_heard(uuid.uuid4(), [mac]) == {}
