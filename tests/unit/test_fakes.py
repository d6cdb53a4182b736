"""The fakes keep the ports' contracts, so use-case tests on them mean something."""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain import ports
from domain.errors import AlreadyExists, FailedPrecondition, NotFound
from domain.model import AdvertisementKey, Brand, Client, ProductionRun, Tracker
from domain.pagination import PageRequest
from domain.ports import ClientFilter, TrackerFilter

from .fakes import (
    FakeBrandRepository,
    FakeClientRepository,
    FakeClock,
    FakeLocationRepository,
    FakeProductionRunRepository,
    FakeTrackerRepository,
    FakeUnitOfWork,
    FakeUnitOfWorkFactory,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def a_client(name: str = "Acme") -> Client:
    return Client(id=uuid.uuid4(), create_time=T0, update_time=T0, display_name=name)


def a_brand(client: Client) -> Brand:
    return Brand(
        id=uuid.uuid4(), create_time=T0, update_time=T0, client_id=client.id, display_name="B"
    )


def a_run(brand: Brand, client_id: uuid.UUID | None = None) -> ProductionRun:
    return ProductionRun(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        brand_id=brand.id,
        client_id=client_id or brand.client_id,
        display_name="R",
        start_time=T0,
        end_time=T0 + timedelta(days=1),
    )


def a_tracker(run: ProductionRun, raw: bytes) -> Tracker:
    return Tracker(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        client_id=run.client_id,
        production_run_id=run.id,
        advertisement_key=AdvertisementKey(raw),
    )


@pytest.mark.parametrize(
    ("port", "fake"),
    [
        (ports.ClientRepository, FakeClientRepository),
        (ports.BrandRepository, FakeBrandRepository),
        (ports.ProductionRunRepository, FakeProductionRunRepository),
        (ports.LocationRepository, FakeLocationRepository),
        (ports.TrackerRepository, FakeTrackerRepository),
        (ports.UnitOfWork, FakeUnitOfWork),
        (ports.Clock, FakeClock),
    ],
)
def test_fake_has_every_method_of_its_port_with_the_same_parameters(port: type, fake: type) -> None:
    for name, member in inspect.getmembers(port, inspect.isfunction):
        if name.startswith("_") and name not in {"__aenter__", "__aexit__"}:
            continue
        ours = getattr(fake, name)
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(member), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(member).parameters
        ), name
    for attribute in getattr(port, "__annotations__", {}):
        assert attribute in fake.__annotations__, attribute


async def test_committed_changes_are_visible_to_later_units_of_work() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.commit()
    async with factory() as uow:
        assert await uow.clients.get(client.id) == client


async def test_uncommitted_changes_are_discarded_on_exit() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        assert await uow.clients.get(client.id) == client
    async with factory() as uow:
        with pytest.raises(NotFound):
            await uow.clients.get(client.id)
    assert factory.commits == 0


async def test_changes_are_invisible_to_another_unit_of_work_until_commit() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as writer:
        await writer.clients.add(client)
        async with factory() as reader:
            with pytest.raises(NotFound):
                await reader.clients.get(client.id)
        await writer.commit()
        async with factory() as reader:
            assert await reader.clients.get(client.id) == client


async def test_a_unit_of_work_does_not_see_commits_made_after_it_began() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as early:
        async with factory() as writer:
            await writer.clients.add(client)
            await writer.commit()
        with pytest.raises(NotFound):
            await early.clients.get(client.id)


async def test_error_inside_a_unit_of_work_rolls_back() -> None:
    factory = FakeUnitOfWorkFactory()

    async def add_then_fail() -> None:
        async with factory() as uow:
            await uow.clients.add(a_client())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await add_then_fail()
    assert factory.committed.clients == {}


async def test_repositories_refuse_use_outside_their_unit_of_work() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        pass
    with pytest.raises(RuntimeError):
        await uow.clients.get(uuid.uuid4())


async def test_add_with_a_missing_parent_is_not_found() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.brands.add(a_brand(client))
        assert exc.value.kind == "parent of brand"
        await uow.clients.add(client)
        brand = a_brand(client)
        await uow.brands.add(brand)
        with pytest.raises(NotFound):
            await uow.production_runs.add(a_run(brand, client_id=uuid.uuid4()))


async def test_add_of_an_existing_id_already_exists() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        with pytest.raises(AlreadyExists) as exc:
            await uow.clients.add(client)
        assert exc.value.field == "id"


async def test_tracker_clashes_name_mac_before_key_like_postgres() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    brand = a_brand(client)
    run = a_run(brand)
    raw = bytes(range(28))
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.trackers.add(a_tracker(run, raw))
        with pytest.raises(AlreadyExists) as exc:
            await uow.trackers.add_many([a_tracker(run, bytes(28)), a_tracker(run, raw)])
        assert (exc.value.field, exc.value.value) == ("mac_address", "C0:01:02:03:04:05")
        page = await uow.trackers.list(TrackerFilter(), PageRequest())
        assert len(page.items) == 1


async def test_delete_refuses_parents_with_children_unless_cascading() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(a_brand(client))
        with pytest.raises(FailedPrecondition):
            await uow.clients.delete(client.id, cascade=False)
        await uow.clients.delete(client.id, cascade=True)
        with pytest.raises(NotFound):
            await uow.clients.delete(client.id, cascade=True)


async def test_list_pages_in_id_text_order() -> None:
    factory = FakeUnitOfWorkFactory()
    clients = [a_client(f"C{i}") for i in range(5)]
    async with factory() as uow:
        for c in clients:
            await uow.clients.add(c)
        first = await uow.clients.list(ClientFilter(), PageRequest(size=3))
        rest = await uow.clients.list(ClientFilter(), PageRequest(size=3, after=first.next_after))
    ids = [str(c.id) for c in first.items + rest.items]
    assert ids == sorted(str(c.id) for c in clients)
    assert first.next_after == ids[2]
    assert rest.next_after is None


def test_fake_clock_is_settable_and_always_utc() -> None:
    clock = FakeClock(datetime(2025, 6, 1, 14, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    assert clock.advance(timedelta(minutes=5)) == datetime(2025, 6, 1, 12, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2025, 1, 1))
