"""Key batches end to end over gRPC on a real database: generate, export (streamed), allocate,
import as trackers; private keys stay sealed and never appear in any response or log."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import uuid

import grpc
import pytest
from findmy import KeyPair

from adapters.keys import AesGcmSealer
from domain.access import Principal, Role
from domain.model import MacAddress
from servers.config import kek_ring
from tests.integration.conftest import Stack
from tracker.v1 import key_query_service_pb2 as kq
from tracker.v1 import key_query_service_pb2_grpc as kq_grpc
from tracker.v1 import key_service_pb2 as k
from tracker.v1 import key_service_pb2_grpc as k_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s
from usecases.access import NewUser

pytestmark = pytest.mark.integration


def stubs(stack: Stack) -> tuple[k_grpc.KeyServiceStub, kq_grpc.KeyQueryServiceStub]:
    assert stack.collector_channel is not None
    assert stack.query_channel is not None
    return (
        k_grpc.KeyServiceStub(stack.collector_channel),
        kq_grpc.KeyQueryServiceStub(stack.query_channel),
    )


async def export(stack: Stack, batch_id: str, fmt: int) -> str:
    _, query = stubs(stack)
    return "".join(
        [
            r.chunk
            async for r in query.ExportKeyBatch(
                kq.ExportKeyBatchRequest(key_batch_id=batch_id, format=fmt)
            )
        ]
    )


async def run_of_new_client(stack: Stack, name: str) -> tuple[pb.Client, pb.ProductionRun]:
    client = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name=name)))
    ).client
    brand = (
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name=name))
        )
    ).brand
    run = pb.ProductionRun(brand_id=brand.id, display_name=name)
    run.start_time.FromJsonString("2026-01-01T00:00:00Z")
    run.end_time.FromJsonString("2027-01-01T00:00:00Z")
    return client, (
        await stack.setup.CreateProductionRun(s.CreateProductionRunRequest(production_run=run))
    ).production_run


async def test_ten_thousand_keys_round_trip_without_leaking_private_keys(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys, _ = stubs(stack)
    batch = (
        await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=10_000, label="order-7"))
    ).key_batch
    assert batch.size == 10_000
    text = await export(stack, batch.id, kq.KEY_EXPORT_FORMAT_CSV)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 10_000
    assert len({r["mac_address"] for r in rows}) == 10_000
    for r in rows[:500]:
        adv = base64.b64decode(r["advertisement_key"])
        assert base64.b64decode(r["hashed_advertisement_key"]) == hashlib.sha256(adv).digest()
        assert MacAddress.parse(r["mac_address"]).value == r["mac_address"]
    plain = (await export(stack, batch.id, kq.KEY_EXPORT_FORMAT_KEYS)).splitlines()
    assert plain == [r["advertisement_key"] for r in rows]

    # Allocate 300 tags to a client, import 200 of them into its run.
    client, run = await run_of_new_client(stack, "Acme")
    macs = [r["mac_address"] for r in rows[:300]]
    allocated = await keys.AllocateTags(
        k.AllocateTagsRequest(client_id=client.id, mac_addresses=macs)
    )
    assert allocated.allocated_count == 300
    imported = (
        await keys.ImportTrackers(
            k.ImportTrackersRequest(production_run_id=run.id, mac_addresses=macs[:200])
        )
    ).trackers
    assert [t.mac_address for t in imported] == macs[:200]

    # Each tracker's sealed private key opens to the key pair of its advertisement key.
    assert stack.container is not None
    ring, active = kek_ring(stack.container.settings().security)
    sealer = AesGcmSealer(ring, active)
    uow_factory = await stack.container.uow_factory.async_()
    async with uow_factory() as uow:
        stored = [await uow.trackers.get(uuid.UUID(t.id)) for t in imported[:50]]
    privates = []
    for t in stored:
        assert t.sealed_private_key is not None
        private = sealer.unseal(t.sealed_private_key, t.advertisement_key.hashed)
        assert KeyPair(private).adv_key_bytes == t.advertisement_key.value
        privates.append(private)

    # No response, export or log line carries private key material in any encoding.
    listed = await stack.query.ListTrackers(
        q.ListTrackersRequest(production_run_id=run.id, page_size=1000)
    )
    haystack = [
        text.encode(),
        listed.SerializeToString(),
        b"".join(t.SerializeToString() for t in imported),
        caplog.text.encode(),
    ]
    for private in privates:
        for form in (private, base64.b64encode(private), private.hex().encode()):
            assert not any(form in hay for hay in haystack)


async def test_tags_of_another_client_cannot_be_imported_or_reallocated(stack: Stack) -> None:
    keys, _ = stubs(stack)
    batch = (await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=5))).key_batch
    macs = [
        r["mac_address"]
        for r in csv.DictReader(
            io.StringIO(await export(stack, batch.id, kq.KEY_EXPORT_FORMAT_CSV))
        )
    ]
    a_client, a_run = await run_of_new_client(stack, "A")
    b_client, b_run = await run_of_new_client(stack, "B")
    await keys.AllocateTags(k.AllocateTagsRequest(client_id=a_client.id, mac_addresses=macs[:3]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await keys.AllocateTags(
            k.AllocateTagsRequest(client_id=b_client.id, mac_addresses=macs[:1])
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # B's client admin: A's tag and an unallocated tag look like no tag at all.
    await stack.access.create_user(
        Principal.system(),
        NewUser(
            email="b-admin@example.com",
            password="b-admin-password",
            memberships={uuid.UUID(b_client.id): Role.CLIENT_ADMIN},
        ),
    )
    b_keys, _ = stubs(stack.as_token(await stack.token_for("b-admin@example.com")))
    errors = []
    for mac in (macs[0], macs[4], "C0:00:00:00:00:01"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await b_keys.ImportTrackers(
                k.ImportTrackersRequest(production_run_id=b_run.id, mac_addresses=[mac])
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        errors.append(err.value.details().replace(mac, "<mac>"))
    assert len(set(errors)) == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await b_keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=1))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A tag imported once cannot be imported again.
    await keys.ImportTrackers(
        k.ImportTrackersRequest(production_run_id=a_run.id, mac_addresses=macs[:1])
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await keys.ImportTrackers(
            k.ImportTrackersRequest(production_run_id=a_run.id, mac_addresses=macs[:1])
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_external_private_keys_are_sealed_on_arrival(stack: Stack) -> None:
    keys, _ = stubs(stack)
    _, run = await run_of_new_client(stack, "Ext")
    pairs = [KeyPair.new() for _ in range(3)]
    created = (
        await keys.ImportExternalTrackers(
            k.ImportExternalTrackersRequest(
                production_run_id=run.id, private_keys=[p.private_key_bytes for p in pairs]
            )
        )
    ).trackers
    assert [t.mac_address for t in created] == [p.mac_address for p in pairs]
    for t, p in zip(created, pairs, strict=True):
        assert p.private_key_bytes not in t.SerializeToString()
    for bad in (b"short", b"\xff" * 28, b"\x00" * 28):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keys.ImportExternalTrackers(
                k.ImportExternalTrackersRequest(production_run_id=run.id, private_keys=[bad])
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "private_keys[0]" in err.value.details()


async def test_bad_requests_name_their_field(stack: Stack) -> None:
    keys, _ = stubs(stack)
    for count in (0, -1, 2_000_000):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=count))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "count" in err.value.details()
    client, _ = await run_of_new_client(stack, "Bad")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await keys.AllocateTags(k.AllocateTagsRequest(client_id=client.id, mac_addresses=["nope"]))
    assert "mac_addresses[0]" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await export(stack, "00000000-0000-4000-8000-000000000000", kq.KEY_EXPORT_FORMAT_CSV)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_deleting_a_client_with_tags_needs_force_and_releases_them(stack: Stack) -> None:
    keys, _ = stubs(stack)
    batch = (await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=2))).key_batch
    macs = [
        r["mac_address"]
        for r in csv.DictReader(
            io.StringIO(await export(stack, batch.id, kq.KEY_EXPORT_FORMAT_CSV))
        )
    ]
    client = (
        await stack.setup.CreateClient(
            s.CreateClientRequest(client=pb.Client(display_name="Leaving"))
        )
    ).client
    await keys.AllocateTags(k.AllocateTagsRequest(client_id=client.id, mac_addresses=macs))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.setup.DeleteClient(s.DeleteClientRequest(id=client.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stack.setup.DeleteClient(s.DeleteClientRequest(id=client.id, force=True))
    other = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="Next")))
    ).client
    again = await keys.AllocateTags(k.AllocateTagsRequest(client_id=other.id, mac_addresses=macs))
    assert again.allocated_count == 2
