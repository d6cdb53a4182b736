"""The keys ports' contract (key batches, tag keys and their allocation), on the fakes and
PostgreSQL alike."""

from __future__ import annotations

import uuid

import pytest

from domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
)
from tests.contract.builders import (
    a_batch,
    a_client,
    a_generated,
    raw_key,
)
from tests.contract.conftest import Uows

# -- tag keys --------------------------------------------------------------------------------


async def test_tag_keys_follow_commit_and_rollback(uows: Uows) -> None:
    factory = uows
    batch = a_batch(2)
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(1))], first_seq=0)
    async with factory() as uow:
        with pytest.raises(NotFound):
            await uow.tag_keys.get_batch(batch.id)
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(1))], first_seq=0)
        await uow.commit()
    async with factory() as uow:
        assert await uow.tag_keys.get_batch(batch.id) == batch
        [(seq, key)] = await uow.tag_keys.batch_keys(batch.id, -1, 10)
        await uow.clients.add(client := a_client())
        await uow.tag_keys.allocate([key.id], client.id)
        by_mac = await uow.tag_keys.by_macs([key.mac_address.value])
        assert by_mac[key.mac_address.value].client_id == client.id
    async with factory() as uow:
        by_mac = await uow.tag_keys.by_macs([key.mac_address.value])
        assert by_mac[key.mac_address.value].client_id is None
    assert seq == 0


async def test_missing_key_batch_is_not_found_naming_kind_and_id(uows: Uows) -> None:
    factory = uows
    missing = uuid.uuid4()
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.tag_keys.get_batch(missing)
        assert (exc.value.kind, exc.value.ident) == ("key batch", str(missing))
        assert await uow.tag_keys.batch_keys(missing, -1, 10) == []


async def test_keys_of_a_missing_batch_are_a_missing_parent(uows: Uows) -> None:
    factory = uows
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.tag_keys.add_batch(a_batch(), [a_generated(raw_key(1))], first_seq=0)
        assert exc.value.kind == "parent of tag key"


async def test_batch_header_ids_are_unique(uows: Uows) -> None:
    factory = uows
    batch = a_batch()
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        with pytest.raises(AlreadyExists) as exc:
            await uow.tag_keys.add_batch_header(batch, "k")
        assert exc.value.field == "id"


@pytest.mark.postgres_differs("clash-value")
async def test_tag_key_clashes_name_mac_before_key_and_store_nothing(uows: Uows) -> None:
    factory = uows
    first, second = a_batch(1), a_batch(3)
    taken = raw_key(1)
    same_mac = bytes([0xC1]) + taken[1:6] + b"\x99" * 22  # other key, same MAC
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(first, "k")
        await uow.tag_keys.add_batch_header(second, "k")
        await uow.tag_keys.add_batch(first, [a_generated(taken)], first_seq=0)
        for clash in (taken, same_mac):
            with pytest.raises(AlreadyExists) as exc:
                await uow.tag_keys.add_batch(
                    second, [a_generated(raw_key(2)), a_generated(clash)], first_seq=0
                )
            assert (exc.value.kind, exc.value.field) == ("tag key", "mac_address")
            assert exc.value.value == "C1:01:01:01:01:01"
        # Within one call, a later key clashes with an earlier one.
        with pytest.raises(AlreadyExists):
            await uow.tag_keys.add_batch(
                second, [a_generated(raw_key(2)), a_generated(raw_key(2))], first_seq=0
            )
        assert await uow.tag_keys.batch_keys(second.id, -1, 10) == []
        await uow.tag_keys.add_batch(second, [a_generated(raw_key(2))], first_seq=0)
        with pytest.raises(AlreadyExists) as exc:
            await uow.tag_keys.add_batch(second, [a_generated(raw_key(3))], first_seq=0)
        assert exc.value.field == "seq"


async def test_batch_keys_come_in_seq_order_after_a_seq_up_to_a_limit(uows: Uows) -> None:
    factory = uows
    batch, other = a_batch(6), a_batch(1)
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch_header(other, "k")
        # Chunks stored out of order; another batch's key in between.
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(n)) for n in (4, 5)], 4)
        await uow.tag_keys.add_batch(other, [a_generated(raw_key(9))], 0)
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(n)) for n in range(4)], 0)

        async def seqs(after: int, limit: int) -> list[tuple[int, bytes]]:
            rows = await uow.tag_keys.batch_keys(batch.id, after, limit)
            return [(seq, key.advertisement_key.value) for seq, key in rows]

        assert await seqs(-1, 100) == [(n, raw_key(n)) for n in range(6)]
        assert await seqs(-1, 2) == [(0, raw_key(0)), (1, raw_key(1))]
        assert await seqs(1, 3) == [(n, raw_key(n)) for n in (2, 3, 4)]
        assert await seqs(5, 3) == []
        [(_, key)] = await uow.tag_keys.batch_keys(other.id, -1, 100)
        assert key.batch_id == other.id
        assert key.sealed_private_key == a_generated(raw_key(9)).sealed_private_key


async def test_by_macs_returns_only_the_keys_found(uows: Uows) -> None:
    factory = uows
    batch = a_batch(2)
    keys = [a_generated(raw_key(n)) for n in (1, 2)]
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, keys, 0)
        found = await uow.tag_keys.by_macs([keys[0].mac_address.value, "C0:00:00:00:00:00"])
        assert list(found) == [keys[0].mac_address.value]
        assert found[keys[0].mac_address.value].advertisement_key == keys[0].advertisement_key
        assert await uow.tag_keys.by_macs([]) == {}


async def test_allocation_sets_and_clears_the_client_and_ignores_unknown_ids(uows: Uows) -> None:
    factory = uows
    batch = a_batch(2)
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(n)) for n in (1, 2)], 0)
        rows = await uow.tag_keys.batch_keys(batch.id, -1, 10)
        first, second = (key for _, key in rows)

        async def owners() -> list[uuid.UUID | None]:
            return [key.client_id for _, key in await uow.tag_keys.batch_keys(batch.id, -1, 10)]

        await uow.tag_keys.allocate([first.id, uuid.uuid4()], client.id)
        assert await owners() == [client.id, None]
        with pytest.raises(NotFound) as exc:
            await uow.tag_keys.allocate([second.id], uuid.uuid4())
        assert exc.value.kind == "parent of tag key"
        assert await owners() == [client.id, None]
        await uow.tag_keys.allocate([first.id], None)
        assert await owners() == [None, None]


@pytest.mark.postgres_differs("aborted-transaction")
async def test_a_client_with_allocated_tags_is_deleted_only_cascading_releasing_them(
    uows: Uows,
) -> None:
    # tag_keys.client_id REFERENCES clients without ON DELETE: a plain delete is refused; the
    # cascade returns the tags to the unallocated pool (as the Postgres adapter does).
    factory = uows
    batch = a_batch()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(1))], 0)
        [(_, key)] = await uow.tag_keys.batch_keys(batch.id, -1, 1)
        await uow.tag_keys.allocate([key.id], client.id)
        with pytest.raises(FailedPrecondition):
            await uow.clients.delete(client.id, cascade=False)
        await uow.clients.delete(client.id, cascade=True)
        [(_, released)] = await uow.tag_keys.batch_keys(batch.id, -1, 1)
        assert released.client_id is None
