"""The setup ports' contract (clients, brands, runs, locations, trackers and their unit of
work), on the in-memory fakes and the PostgreSQL adapters alike."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
)
from domain.model import (
    SealedSecret,
)
from domain.pagination import PageRequest
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)
from tests.contract.builders import (
    T0,
    a_brand,
    a_client,
    a_location,
    a_run,
    a_tracker,
    two_clients_with_everything,
)
from tests.contract.conftest import Uows


async def test_committed_changes_are_visible_to_later_units_of_work(uows: Uows) -> None:
    factory = uows
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.commit()
    async with factory() as uow:
        assert await uow.clients.get(client.id) == client


async def test_uncommitted_changes_are_discarded_on_exit(uows: Uows) -> None:
    factory = uows
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        assert await uow.clients.get(client.id) == client
    async with factory() as uow:
        with pytest.raises(NotFound):
            await uow.clients.get(client.id)


async def test_changes_are_invisible_to_another_unit_of_work_until_commit(uows: Uows) -> None:
    factory = uows
    client = a_client()
    async with factory() as writer:
        await writer.clients.add(client)
        async with factory() as reader:
            with pytest.raises(NotFound):
                await reader.clients.get(client.id)
        await writer.commit()
        async with factory() as reader:
            assert await reader.clients.get(client.id) == client


async def test_error_inside_a_unit_of_work_rolls_back(uows: Uows) -> None:
    factory = uows

    async def add_then_fail() -> None:
        async with factory() as uow:
            await uow.clients.add(a_client())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await add_then_fail()
    async with factory() as uow:
        assert (await uow.clients.list(ClientFilter(), PageRequest())).items == []


async def test_repositories_refuse_use_outside_their_unit_of_work(uows: Uows) -> None:
    factory = uows
    async with factory() as uow:
        pass
    with pytest.raises(Exception):  # noqa: B017, PT011 (each implementation its own)
        await uow.clients.get(uuid.uuid4())


@pytest.mark.postgres_differs("aborted-transaction")
async def test_add_with_a_missing_parent_is_not_found(uows: Uows) -> None:
    factory = uows
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


async def test_add_of_an_existing_id_already_exists(uows: Uows) -> None:
    factory = uows
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        with pytest.raises(AlreadyExists) as exc:
            await uow.clients.add(client)
        assert exc.value.field == "id"


@pytest.mark.postgres_differs("aborted-transaction")
async def test_tracker_clashes_name_mac_before_key_like_postgres(uows: Uows) -> None:
    factory = uows
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


@pytest.mark.postgres_differs("aborted-transaction")
async def test_delete_refuses_parents_with_children_unless_cascading(uows: Uows) -> None:
    factory = uows
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(a_brand(client))
        with pytest.raises(FailedPrecondition):
            await uow.clients.delete(client.id, cascade=False)
        await uow.clients.delete(client.id, cascade=True)
        with pytest.raises(NotFound):
            await uow.clients.delete(client.id, cascade=True)


async def test_list_pages_in_id_text_order(uows: Uows) -> None:
    factory = uows
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


# -- visible_clients -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "make_filter"),
    [
        ("clients", ClientFilter),
        ("brands", BrandFilter),
        ("production_runs", ProductionRunFilter),
        ("locations", LocationFilter),
        ("trackers", TrackerFilter),
    ],
)
async def test_every_list_returns_only_rows_of_the_visible_clients(
    repo: str, make_filter: Any, uows: Uows
) -> None:
    factory = uows
    a, b = await two_clients_with_everything(factory)
    every = PageRequest(size=100)
    async with factory() as uow:
        repository = getattr(uow, repo)

        async def owners(visible: frozenset[uuid.UUID] | None) -> list[uuid.UUID]:
            page = await repository.list(make_filter(visible_clients=visible), every)
            return sorted(e.owner_client_id for e in page.items)

        assert await owners(None) == sorted([a.id, b.id])
        assert await owners(frozenset({a.id})) == [a.id]
        assert await owners(frozenset({b.id, uuid.uuid4()})) == [b.id]
        assert await owners(frozenset()) == []


async def test_a_location_whose_client_differs_from_its_runs_is_a_missing_parent(
    uows: Uows,
) -> None:
    factory = uows
    a, b = await two_clients_with_everything(factory)
    async with factory() as uow:
        runs = await uow.production_runs.list(ProductionRunFilter(client_id=a.id), PageRequest())
        run = runs.items[0]
        with pytest.raises(NotFound) as exc:
            await uow.locations.add(a_location(run, client_id=b.id))
        assert exc.value.kind == "parent of location"


# -- trackers with sealed private keys -------------------------------------------------------


async def test_trackers_keep_their_sealed_private_key(uows: Uows) -> None:
    factory = uows
    client = a_client()
    brand = a_brand(client)
    run = a_run(brand)
    sealed = SealedSecret("kek-1", b"ciphertext")
    one = dataclasses.replace(a_tracker(run, b"\x01" * 28), sealed_private_key=sealed)
    two = dataclasses.replace(a_tracker(run, b"\x02" * 28), sealed_private_key=sealed)
    plain = a_tracker(run, b"\x03" * 28)
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.trackers.add(one)
        await uow.trackers.add_many([two, plain])
        await uow.trackers.update(one.with_changes({"display_name": "renamed"}, T0))
        await uow.commit()
    async with factory() as uow:
        assert (await uow.trackers.get(one.id)).sealed_private_key == sealed
        page = await uow.trackers.list(TrackerFilter(), PageRequest())
        by_id = {t.id: t.sealed_private_key for t in page.items}
        assert by_id == {one.id: sealed, two.id: sealed, plain.id: None}


# -- trackers by hashed key ------------------------------------------------------------------


async def test_by_hashed_keys_returns_only_the_trackers_found_including_uncommitted(
    uows: Uows,
) -> None:
    factory = uows
    a, b = await two_clients_with_everything(factory)
    async with factory() as uow:
        page = await uow.trackers.list(TrackerFilter(), PageRequest())
        one, two = sorted(page.items, key=lambda t: t.client_id == b.id)
        assert one.client_id == a.id
        found = await uow.trackers.by_hashed_keys(
            [one.hashed_advertisement_key, b"\x00" * 32, one.hashed_advertisement_key]
        )
        assert found == {one.hashed_advertisement_key: one}
        # Not narrowed to any client: the use case decides what the caller may see.
        both = await uow.trackers.by_hashed_keys(
            [two.hashed_advertisement_key, one.hashed_advertisement_key]
        )
        assert both == {one.hashed_advertisement_key: one, two.hashed_advertisement_key: two}
        assert await uow.trackers.by_hashed_keys([]) == {}
        # The raw advertisement key is not its hash.
        assert await uow.trackers.by_hashed_keys([one.advertisement_key.value]) == {}
        run = await uow.production_runs.get(one.production_run_id)
        await uow.trackers.add(fresh := a_tracker(run, b"\x07" * 28))
        found = await uow.trackers.by_hashed_keys([fresh.hashed_advertisement_key])
        assert found == {fresh.hashed_advertisement_key: fresh}
    async with factory() as uow:
        assert await uow.trackers.by_hashed_keys([fresh.hashed_advertisement_key]) == {}
