"""The devices ports' contract (types, firmware, profiles, devices, rollouts), on the fake
the rollout simulation uses and on PostgreSQL alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.postgres.uow import PostgresUnitOfWorkFactory
from domain.devices import (
    Device,
    DeviceProfile,
    DeviceRolloutState,
    PhaseCounts,
    ProfileScope,
    Rollout,
    RolloutDevice,
    RolloutPolicy,
    RolloutState,
    start_step,
)
from domain.errors import AlreadyExists, NotFound
from domain.firmware import (
    Combination,
    CombinationState,
    DeviceType,
    Release,
    Requirement,
    Step,
    Version,
    VersionRange,
)
from domain.model import SealedSecret
from domain.pagination import PageRequest
from domain.ports.devices import DeviceSelection, RolloutFilter, Visible
from tests.conftest import throwaway_pool
from tests.contract.builders import a_client
from tests.unit.fakes.devices import FakeDevicesUnitOfWorkFactory

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(params=["fake", "postgres"])
async def uows(request: pytest.FixtureRequest, template_database: str) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeDevicesUnitOfWorkFactory()
        return
    async with throwaway_pool(template_database) as pool:
        yield PostgresUnitOfWorkFactory(pool)


async def _client(uows: Any) -> uuid.UUID:
    c = a_client(f"c-{uuid.uuid4().hex[:6]}")
    if isinstance(uows, PostgresUnitOfWorkFactory):
        async with uows() as uow:
            await uow.clients.add(c)
            await uow.commit()
    return c.id


def C(**v: str) -> Combination:
    return Combination.parse(v)


async def _type(uows: Any, client: uuid.UUID, name: str = "G2") -> DeviceType:
    t = DeviceType(uuid.uuid4(), client, name, ("ble", "mcu"))
    async with uows() as uow:
        await uow.device_types.add(t)
        await uow.commit()
    return t


def _device(client: uuid.UUID, t: DeviceType, serial: str, group: str = "cell-1") -> Device:
    return Device(
        id=uuid.uuid4(),
        client_id=client,
        device_type_id=t.id,
        serial=serial,
        group_key=group,
        versions=C(mcu="1.0.0", ble="1.0.0"),
        create_time=NOW,
        update_time=NOW,
    )


async def test_types_and_firmware(uows: Any) -> None:
    client = await _client(uows)
    t = await _type(uows, client)
    async with uows() as uow:
        assert await uow.device_types.get(t.id) == t
        with pytest.raises(AlreadyExists):
            await uow.device_types.add(DeviceType(uuid.uuid4(), client, "G2", ("mcu",)))
    async with uows() as uow:
        with pytest.raises(NotFound):
            await uow.device_types.get(uuid.uuid4())
        page = await uow.device_types.list(Visible(frozenset({client})), PageRequest(10))
        assert page.items == [t]
        assert (await uow.device_types.list(Visible(frozenset()), PageRequest(10))).items == []
        rel = Release(
            "ble", Version.parse("2.0.0"), (Requirement("mcu", VersionRange.parse(">=1.4")),)
        )
        await uow.firmware.add_release(t.id, rel, "notes")
        await uow.firmware.add_release(t.id, Release("mcu", Version.parse("1.4.0")), "")
        await uow.commit()
    async with uows() as uow:
        with pytest.raises(AlreadyExists):
            await uow.firmware.add_release(t.id, Release("ble", Version.parse("2.0.0")), "")
    async with uows() as uow:
        got = sorted(await uow.firmware.releases(t.id), key=lambda r: r.component)
        assert [(r.component, str(r.version)) for r in got] == [("ble", "2.0.0"), ("mcu", "1.4.0")]
        assert str(got[0].requires[0]) == "mcu >=1.4"
        a, b = C(mcu="1.4.0", ble="2.0.0"), C(mcu="1.4.0", ble="1.0.0")
        assert (
            await uow.firmware.set_combinations(
                t.id, [a, b, a], CombinationState.CANDIDATE, True, NOW
            )
            == 2
        )
        assert (
            await uow.firmware.set_combinations(t.id, [a], CombinationState.KNOWN_GOOD, True, NOW)
            == 0
        )
        later = NOW + timedelta(seconds=1)
        assert (
            await uow.firmware.set_combinations(
                t.id, [a], CombinationState.KNOWN_GOOD, False, later
            )
            == 1
        )
        assert (
            await uow.firmware.set_combinations(
                t.id, [a], CombinationState.KNOWN_GOOD, False, later
            )
            == 0
        )
        await uow.commit()
    async with uows() as uow:
        good = await uow.firmware.combinations(t.id, CombinationState.KNOWN_GOOD)
        assert [(g.combination, g.update_time) for g in good] == [(a, later)]
        assert len(await uow.firmware.combinations(t.id, None)) == 2


async def test_profiles(uows: Any) -> None:
    client = await _client(uows)
    t = await _type(uows, client)
    run_id = uuid.uuid4()
    p = DeviceProfile(
        id=uuid.uuid4(),
        client_id=client,
        name="base",
        scope=ProfileScope.CLIENT,
        scope_id=client,
        device_type_id=None,
        values={"a": "1"},
        secrets={"pw": SealedSecret("k1", b"\x00\x01")},
        services={"lte": True},
        version=1,
        create_time=NOW,
        update_time=NOW,
    )
    q = DeviceProfile(
        id=uuid.uuid4(),
        client_id=client,
        name="run",
        scope=ProfileScope.PRODUCTION_RUN,
        scope_id=run_id,
        device_type_id=t.id,
        create_time=NOW,
        update_time=NOW,
    )
    async with uows() as uow:
        await uow.device_profiles.add(p)
        await uow.device_profiles.add(q)
        await uow.commit()
    async with uows() as uow:
        with pytest.raises(AlreadyExists):
            await uow.device_profiles.add(
                DeviceProfile(
                    id=uuid.uuid4(),
                    client_id=client,
                    name="again",
                    scope=ProfileScope.CLIENT,
                    scope_id=client,
                    device_type_id=None,
                    create_time=NOW,
                    update_time=NOW,
                )
            )
    async with uows() as uow:
        assert await uow.device_profiles.get(p.id) == p
        assert {x.id for x in await uow.device_profiles.applicable(client, None, None)} == {p.id}
        assert {x.id for x in await uow.device_profiles.applicable(client, run_id, None)} == {
            p.id,
            q.id,
        }
        p2 = replace(p, version=2, values={"a": "2"})
        await uow.device_profiles.update(p2)
        await uow.commit()
    async with uows() as uow:
        assert (await uow.device_profiles.get(p.id)).values == {"a": "2"}
        page = await uow.device_profiles.list(Visible(None, client), PageRequest(1))
        assert len(page.items) == 1
        assert page.next_after is not None


async def test_devices_and_selection(uows: Any) -> None:
    client = await _client(uows)
    t = await _type(uows, client)
    d1, d2 = _device(client, t, "S1", "cell-1"), _device(client, t, "S2", "cell-2")
    async with uows() as uow:
        await uow.devices.add(d1)
        await uow.devices.add(d2)
        await uow.commit()
    async with uows() as uow:
        with pytest.raises(AlreadyExists):
            await uow.devices.add(_device(client, t, "S1"))
    async with uows() as uow:
        assert await uow.devices.get(d1.id, for_update=True) == d1
        moved = replace(
            d1, versions=C(mcu="1.4.0", ble="1.0.0"), last_check_in=NOW, health={"v": "3.7"}
        )
        await uow.devices.update(moved)
        await uow.commit()
    async with uows() as uow:
        assert await uow.devices.get(d1.id) == moved
        sel = await uow.devices.select(DeviceSelection(client, t.id))
        assert sorted(sel) == sorted([(d1.id, "cell-1"), (d2.id, "cell-2")])
        only = await uow.devices.select(
            DeviceSelection(client, t.id, group_keys=frozenset({"cell-2"}))
        )
        assert only == [(d2.id, "cell-2")]
        assert (
            len((await uow.devices.list(Visible(frozenset({client})), t.id, PageRequest(10))).items)
            == 2
        )
        with pytest.raises(NotFound):
            await uow.devices.get(uuid.uuid4())


async def test_rollout_records_slots_and_counts(uows: Any) -> None:
    client = await _client(uows)
    t = await _type(uows, client)
    devs = [_device(client, t, f"S{i}", f"cell-{i % 2}") for i in range(4)]
    async with uows() as uow:
        for d in devs:
            await uow.devices.add(d)
        await uow.commit()
    r = Rollout(
        id=uuid.uuid4(),
        client_id=client,
        device_type_id=t.id,
        name="r",
        target=C(mcu="2.0.0", ble="2.0.0"),
        policy=RolloutPolicy(phases=(50.0, 100.0)),
        create_time=NOW,
        update_time=NOW,
    )
    recs = [
        RolloutDevice(
            rollout_id=r.id,
            device_id=d.id,
            group_key=d.group_key,
            bucket=10.0 + 25 * i,
            update_time=NOW,
        )
        for i, d in enumerate(devs)
    ]
    async with uows() as uow:
        await uow.rollouts.add(r, recs)
        await uow.commit()
    async with uows() as uow:
        assert await uow.rollouts.get(r.id, for_update=True) == r
        assert await uow.rollouts.active_devices([d.id for d in devs]) == {d.id for d in devs}
        assert await uow.rollouts.of_device(devs[0].id) == recs[0]
        assert await uow.rollouts.phase_counts(r.id, 50.0) == PhaseCounts(2, 0, 0)
        # The throttle: one slot per group here.
        assert await uow.rollouts.acquire_slot(r.id, "cell-0", 1)
        assert not await uow.rollouts.acquire_slot(r.id, "cell-0", 1)
        assert await uow.rollouts.acquire_slot(r.id, "cell-1", 0)
        assert await uow.rollouts.acquire_slot(r.id, "cell-1", 0)
        await uow.rollouts.release_slot(r.id, "cell-0")
        assert await uow.rollouts.acquire_slot(r.id, "cell-0", 1)
        step = Step(
            "mcu", Version.parse("1.0.0"), Version.parse("1.4.0"), C(mcu="1.4.0", ble="1.0.0")
        )
        sent = start_step(recs[0], step, NOW)
        await uow.rollouts.save_device(sent)
        done = replace(recs[1], state=DeviceRolloutState.DONE)
        await uow.rollouts.save_device(done)
        # Read back within the same transaction.
        assert await uow.rollouts.phase_counts(r.id, 50.0) == PhaseCounts(2, 1, 0)
        await uow.commit()
    async with uows() as uow:
        assert await uow.rollouts.of_device(devs[0].id) == sent
        assert await uow.rollouts.expired(r.id, NOW) == []
        assert await uow.rollouts.expired(r.id, NOW + timedelta(minutes=1)) == [sent]
        counts = await uow.rollouts.device_counts(r.id)
        assert counts == {
            DeviceRolloutState.IN_PROGRESS: 1,
            DeviceRolloutState.DONE: 1,
            DeviceRolloutState.PENDING: 2,
        }
        page = await uow.rollouts.devices(
            r.id, Visible(), DeviceRolloutState.PENDING, PageRequest(1)
        )
        assert len(page.items) == 1
        assert page.next_after is not None
        rest = await uow.rollouts.devices(
            r.id, Visible(), DeviceRolloutState.PENDING, PageRequest(1, page.next_after)
        )
        assert rest.items[0].device_id > page.items[0].device_id
        everyone = await uow.rollouts.devices(
            None, Visible(frozenset({client})), None, PageRequest(10)
        )
        assert len(everyone.items) == 4
        hidden = await uow.rollouts.devices(
            None, Visible(frozenset({uuid.uuid4()})), None, PageRequest(10)
        )
        assert hidden.items == []
        # An ended rollout frees its devices for the next one.
        ended = replace(r, state=RolloutState.ABORTED)
        await uow.rollouts.update(ended)
        await uow.commit()
    async with uows() as uow:
        assert await uow.rollouts.active_devices([d.id for d in devs]) == set()
        assert await uow.rollouts.of_device(devs[0].id) is None
        listed = await uow.rollouts.list(
            RolloutFilter(Visible(None, client), RolloutState.ABORTED), PageRequest(5)
        )
        assert [x.id for x in listed.items] == [r.id]
