"""The setup API over real gRPC on loopback, on a real database: flows and precise errors."""

from __future__ import annotations

import base64
import hashlib

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.integration.conftest import Stack
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s

pytestmark = pytest.mark.integration


def ts(text: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromJsonString(text)
    return out


def adv_key(n: int) -> bytes:
    return hashlib.sha256(f"key-{n}".encode()).digest()[:28]


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


async def make_run(stack: Stack) -> tuple[pb.Client, pb.Brand, pb.ProductionRun]:
    client = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="Acme")))
    ).client
    brand = (
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="Outdoor"))
        )
    ).brand
    run = (
        await stack.setup.CreateProductionRun(
            s.CreateProductionRunRequest(
                production_run=pb.ProductionRun(
                    brand_id=brand.id,
                    display_name="Winter",
                    start_time=ts("2026-11-01T00:00:00Z"),
                    end_time=ts("2027-02-01T00:00:00Z"),
                )
            )
        )
    ).production_run
    return client, brand, run


async def test_setup_flow_reads_back_through_the_query_server(stack: Stack) -> None:
    client, _, run = await make_run(stack)
    assert run.client_id == client.id
    for kind, name in ((pb.LOCATION_KIND_DELIVERY, "Store"), (pb.LOCATION_KIND_STORAGE, "DC")):
        await stack.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=run.id,
                    kind=kind,
                    display_name=name,
                    center=pb.GeoPoint(latitude=53.55, longitude=9.99),
                    radius_m=200,
                )
            )
        )
    created = (
        await stack.setup.BatchCreateTrackers(
            s.BatchCreateTrackersRequest(
                production_run_id=run.id,
                trackers=[pb.Tracker(advertisement_key=adv_key(n)) for n in range(3)],
            )
        )
    ).trackers
    assert [t.hashed_advertisement_key for t in created] == [
        hashlib.sha256(adv_key(n)).digest() for n in range(3)
    ]
    listed = (await stack.query.ListTrackers(q.ListTrackersRequest(client_id=client.id))).trackers
    assert sorted(t.id for t in listed) == sorted(t.id for t in created)
    locs = (
        await stack.query.ListLocations(
            q.ListLocationsRequest(production_run_id=run.id, kind=pb.LOCATION_KIND_STORAGE)
        )
    ).locations
    assert [loc.display_name for loc in locs] == ["DC"]
    got = (await stack.query.GetProductionRun(q.GetProductionRunRequest(id=run.id))).production_run
    assert got == run


async def test_out_of_range_coordinates_and_radius_name_each_field(stack: Stack) -> None:
    _, _, run = await make_run(stack)
    err = await expect_error(
        stack.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=run.id,
                    kind=pb.LOCATION_KIND_DELIVERY,
                    display_name="x",
                    center=pb.GeoPoint(latitude=91, longitude=-181),
                    radius_m=10,
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(violations(err)) == {"location.center.latitude", "location.center.longitude"}
    for radius in (0, -5):
        err = await expect_error(
            stack.setup.CreateLocation(
                s.CreateLocationRequest(
                    location=pb.Location(
                        production_run_id=run.id,
                        kind=pb.LOCATION_KIND_DELIVERY,
                        display_name="x",
                        center=pb.GeoPoint(),
                        radius_m=radius,
                    )
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "location.radius_m" in violations(err)
    err = await expect_error(
        stack.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=run.id, display_name="x", center=pb.GeoPoint(), radius_m=5
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "location.kind" in violations(err)


async def test_end_before_start_is_invalid(stack: Stack) -> None:
    _, brand, _ = await make_run(stack)
    err = await expect_error(
        stack.setup.CreateProductionRun(
            s.CreateProductionRunRequest(
                production_run=pb.ProductionRun(
                    brand_id=brand.id,
                    display_name="bad",
                    start_time=ts("2027-01-01T00:00:00Z"),
                    end_time=ts("2026-01-01T00:00:00Z"),
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "production_run.end_time" in violations(err)
    err = await expect_error(
        stack.setup.CreateProductionRun(
            s.CreateProductionRunRequest(
                production_run=pb.ProductionRun(brand_id=brand.id, display_name="bad")
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "production_run.start_time" in violations(err)


async def test_malformed_or_mismatched_mac_is_invalid(stack: Stack) -> None:
    _, _, run = await make_run(stack)
    for mac in ("zz:zz", "AA:BB:CC:DD:EE", "AA:BB:CC:DD:EE:FF:00", "AA:BB-CC:DD:EE:FF"):
        err = await expect_error(
            stack.setup.CreateTracker(
                s.CreateTrackerRequest(
                    tracker=pb.Tracker(
                        production_run_id=run.id, advertisement_key=adv_key(1), mac_address=mac
                    )
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "tracker.mac_address" in violations(err), mac
    err = await expect_error(
        stack.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(
                    production_run_id=run.id,
                    advertisement_key=adv_key(1),
                    mac_address="C0:00:00:00:00:01",
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "does not match" in violations(err)["tracker.mac_address"]
    err = await expect_error(
        stack.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(production_run_id=run.id, advertisement_key=b"short")
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "tracker.advertisement_key" in violations(err)


async def test_unknown_parents_are_not_found(stack: Stack) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    await expect_error(
        stack.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=missing, display_name="x"))
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stack.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=missing,
                    kind=pb.LOCATION_KIND_STORAGE,
                    display_name="x",
                    center=pb.GeoPoint(),
                    radius_m=1,
                )
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stack.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(production_run_id=missing, advertisement_key=adv_key(1))
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stack.query.GetClient(q.GetClientRequest(id=missing)), grpc.StatusCode.NOT_FOUND
    )
    err = await expect_error(
        stack.query.GetClient(q.GetClientRequest(id="not-a-uuid")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "id" in violations(err)


async def test_duplicate_mac_is_already_exists_and_batch_stores_nothing(stack: Stack) -> None:
    _, _, run = await make_run(stack)
    await stack.setup.CreateTracker(
        s.CreateTrackerRequest(
            tracker=pb.Tracker(production_run_id=run.id, advertisement_key=adv_key(1))
        )
    )
    await expect_error(
        stack.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(production_run_id=run.id, advertisement_key=adv_key(1))
            )
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await expect_error(
        stack.setup.BatchCreateTrackers(
            s.BatchCreateTrackersRequest(
                production_run_id=run.id,
                trackers=[pb.Tracker(advertisement_key=adv_key(n)) for n in (2, 3, 1)],
            )
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    listed = (
        await stack.query.ListTrackers(q.ListTrackersRequest(production_run_id=run.id))
    ).trackers
    assert len(listed) == 1
    err = await expect_error(
        stack.setup.BatchCreateTrackers(
            s.BatchCreateTrackersRequest(
                production_run_id=run.id,
                trackers=[
                    pb.Tracker(advertisement_key=adv_key(5)),
                    pb.Tracker(advertisement_key=adv_key(6), mac_address="nope"),
                ],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "trackers[1].mac_address" in violations(err)


async def test_page_size_is_clamped_negative_rejected_tokens_checked(stack: Stack) -> None:
    _, _, run = await make_run(stack)
    await stack.setup.BatchCreateTrackers(
        s.BatchCreateTrackersRequest(
            production_run_id=run.id,
            trackers=[pb.Tracker(advertisement_key=adv_key(n)) for n in range(7)],
        )
    )
    err = await expect_error(
        stack.query.ListTrackers(q.ListTrackersRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_size" in violations(err)
    big = await stack.query.ListTrackers(q.ListTrackersRequest(page_size=1_000_000))
    assert len(big.trackers) == 7
    assert big.next_page_token == ""
    ids, token = [], ""
    while True:
        page = await stack.query.ListTrackers(
            q.ListTrackersRequest(production_run_id=run.id, page_size=3, page_token=token)
        )
        ids += [t.id for t in page.trackers]
        token = page.next_page_token
        if not token:
            break
    assert len(ids) == 7 == len(set(ids))
    first = await stack.query.ListTrackers(
        q.ListTrackersRequest(production_run_id=run.id, page_size=3)
    )
    err = await expect_error(
        stack.query.ListTrackers(
            q.ListTrackersRequest(
                client_id=run.client_id, page_size=3, page_token=first.next_page_token
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in violations(err)
    await expect_error(
        stack.query.ListTrackers(q.ListTrackersRequest(page_token="%%%")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_updates_follow_the_mask(stack: Stack) -> None:
    client, _, run = await make_run(stack)
    updated = (
        await stack.setup.UpdateClient(
            s.UpdateClientRequest(
                client=pb.Client(id=client.id, display_name="Acme GmbH"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    ).client
    assert updated.display_name == "Acme GmbH"
    assert updated.update_time.ToDatetime() > client.update_time.ToDatetime()
    err = await expect_error(
        stack.setup.UpdateProductionRun(
            s.UpdateProductionRunRequest(
                production_run=pb.ProductionRun(id=run.id, brand_id=run.brand_id),
                update_mask=field_mask_pb2.FieldMask(paths=["brand_id"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "update_mask" in violations(err)
    err = await expect_error(
        stack.setup.UpdateProductionRun(
            s.UpdateProductionRunRequest(
                production_run=pb.ProductionRun(id=run.id, end_time=ts("2020-01-01T00:00:00Z")),
                update_mask=field_mask_pb2.FieldMask(paths=["end_time"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "production_run.end_time" in violations(err)
    # No mask: every set field. The radius can be changed alone.
    loc = (
        await stack.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=run.id,
                    kind=pb.LOCATION_KIND_STORAGE,
                    display_name="DC",
                    center=pb.GeoPoint(latitude=1, longitude=2),
                    radius_m=100,
                )
            )
        )
    ).location
    moved = (
        await stack.setup.UpdateLocation(
            s.UpdateLocationRequest(location=pb.Location(id=loc.id, radius_m=300))
        )
    ).location
    assert (moved.radius_m, moved.display_name, moved.center) == (300, "DC", loc.center)


async def test_delete_needs_force_when_children_exist(stack: Stack) -> None:
    client, _, run = await make_run(stack)
    await expect_error(
        stack.setup.DeleteClient(s.DeleteClientRequest(id=client.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await stack.setup.DeleteClient(s.DeleteClientRequest(id=client.id, force=True))
    await expect_error(
        stack.query.GetProductionRun(q.GetProductionRunRequest(id=run.id)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_bytes_fields_travel_as_base64_in_json(stack: Stack) -> None:
    """What grpcurl users send: the 28-byte key in base64."""
    _, _, run = await make_run(stack)
    key = adv_key(9)
    t = (
        await stack.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(
                    production_run_id=run.id,
                    advertisement_key=base64.b64decode(base64.b64encode(key)),
                )
            )
        )
    ).tracker
    assert t.mac_address == ":".join(f"{b:02X}" for b in bytes([key[0] | 0xC0]) + key[1:6])
