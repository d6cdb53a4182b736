"""request_id on every create (AIP-155), over real gRPC and PostgreSQL. The create RPCs are
found in the descriptors: each that can create something must take a request_id, and each
that takes one is retried here; a create RPC added later fails until it has a request here."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from findmy import KeyPair
from google.protobuf import descriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from domain.access import Role
from tests.integration.conftest import Stack
from tests.integration.test_isolation_matrix import (
    SERVICES,
    World,
    add_user,
    invoke,
    make_world,
)
from tracker.v1 import detector_pb2 as dpb
from tracker.v1 import detector_service_pb2 as ds
from tracker.v1 import detector_service_pb2_grpc as ds_grpc
from tracker.v1 import device_service_pb2 as dev
from tracker.v1 import device_service_pb2_grpc as dev_grpc
from tracker.v1 import devices_pb2 as dvpb
from tracker.v1 import events_pb2 as epb
from tracker.v1 import job_service_pb2 as js
from tracker.v1 import jobs_pb2 as jpb
from tracker.v1 import key_query_service_pb2 as kq
from tracker.v1 import key_query_service_pb2_grpc as kq_grpc
from tracker.v1 import key_service_pb2 as k
from tracker.v1 import key_service_pb2_grpc as k_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import user_service_pb2 as us
from tracker.v1 import webhook_service_pb2 as wh

pytestmark = pytest.mark.integration

CREATE_VERBS = ("Create", "BatchCreate", "Allocate", "Import", "Register", "Start")
METHODS = {m.name: m for svc in SERVICES for m in svc.methods}
IDEMPOTENT = sorted(n for n, m in METHODS.items() if "request_id" in m.input_type.fields_by_name)
_seq = itertools.count()


def test_every_create_rpc_takes_a_request_id() -> None:
    creates = sorted(n for n in METHODS if n.startswith(CREATE_VERBS))
    assert len(creates) >= 11
    assert creates == IDEMPOTENT
    for name in creates:
        field = METHODS[name].input_type.fields_by_name["request_id"]
        assert field.type == field.TYPE_STRING, name


@dataclass
class Env:
    stack: Stack
    ids: dict[str, str]
    macs: list[str]


def adv_key() -> bytes:
    return hashlib.sha256(f"idem-{next(_seq)}".encode()).digest()[:28]


def a_run(brand_id: str, name: str) -> pb.ProductionRun:
    run = pb.ProductionRun(brand_id=brand_id, display_name=name)
    run.start_time.FromJsonString("2026-01-01T00:00:00Z")
    run.end_time.FromJsonString("2027-01-01T00:00:00Z")
    return run


def a_location(run_id: str, name: str) -> pb.Location:
    return pb.Location(
        production_run_id=run_id,
        kind=pb.LOCATION_KIND_DELIVERY,
        display_name=name,
        center=pb.GeoPoint(latitude=52.5, longitude=13.4),
        radius_m=50,
    )


def a_user(env: Env) -> pb.User:
    return pb.User(
        email=f"idem{next(_seq)}@example.com",
        client_access=[pb.ClientAccess(client_id=env.ids["client"], role=pb.ROLE_VIEWER)],
    )


# One request per create RPC (called afresh for each use, so values that must be unique are),
# and a different one; keyed by RPC name.
Build = Callable[[Env], Message]
REQUESTS: dict[str, tuple[Build, Build]] = {
    "CreateClient": (
        lambda e: s.CreateClientRequest(client=pb.Client(display_name="idem client")),
        lambda e: s.CreateClientRequest(client=pb.Client(display_name="another client")),
    ),
    "CreateBrand": (
        lambda e: s.CreateBrandRequest(brand=pb.Brand(client_id=e.ids["client"], display_name="b")),
        lambda e: s.CreateBrandRequest(brand=pb.Brand(client_id=e.ids["client"], display_name="c")),
    ),
    "CreateProductionRun": (
        lambda e: s.CreateProductionRunRequest(production_run=a_run(e.ids["brand"], "r")),
        lambda e: s.CreateProductionRunRequest(production_run=a_run(e.ids["brand"], "other")),
    ),
    "CreateLocation": (
        lambda e: s.CreateLocationRequest(location=a_location(e.ids["run"], "l")),
        lambda e: s.CreateLocationRequest(location=a_location(e.ids["run"], "other")),
    ),
    "CreateTracker": (
        lambda e: s.CreateTrackerRequest(
            tracker=pb.Tracker(production_run_id=e.ids["run"], advertisement_key=adv_key())
        ),
        lambda e: s.CreateTrackerRequest(
            tracker=pb.Tracker(production_run_id=e.ids["run"], advertisement_key=adv_key())
        ),
    ),
    "BatchCreateTrackers": (
        lambda e: s.BatchCreateTrackersRequest(
            production_run_id=e.ids["run"],
            trackers=[pb.Tracker(advertisement_key=adv_key()) for _ in range(2)],
        ),
        lambda e: s.BatchCreateTrackersRequest(
            production_run_id=e.ids["run"], trackers=[pb.Tracker(advertisement_key=adv_key())]
        ),
    ),
    "CreateKeyBatch": (
        lambda e: k.CreateKeyBatchRequest(count=2, label="idem"),
        lambda e: k.CreateKeyBatchRequest(count=3, label="idem"),
    ),
    "AllocateTags": (
        lambda e: k.AllocateTagsRequest(client_id=e.ids["client"], mac_addresses=e.macs[4:6]),
        lambda e: k.AllocateTagsRequest(client_id=e.ids["client"], mac_addresses=e.macs[6:7]),
    ),
    "ImportTrackers": (
        lambda e: k.ImportTrackersRequest(production_run_id=e.ids["run"], mac_addresses=e.macs[:1]),
        lambda e: k.ImportTrackersRequest(
            production_run_id=e.ids["run"], mac_addresses=e.macs[1:2]
        ),
    ),
    "ImportExternalTrackers": (
        lambda e: k.ImportExternalTrackersRequest(
            production_run_id=e.ids["run"], private_keys=[KeyPair.new().private_key_bytes]
        ),
        lambda e: k.ImportExternalTrackersRequest(
            production_run_id=e.ids["run"], private_keys=[KeyPair.new().private_key_bytes]
        ),
    ),
    "CreateUser": (
        lambda e: us.CreateUserRequest(user=a_user(e), password="idempotent-password-1"),
        lambda e: us.CreateUserRequest(user=a_user(e), password="idempotent-password-1"),
    ),
    "CreateDetector": (
        lambda e: ds.CreateDetectorRequest(detector=a_detector(e, "d")),
        lambda e: ds.CreateDetectorRequest(detector=a_detector(e, "other")),
    ),
    "CreateLink": (
        lambda e: ds.CreateLinkRequest(
            link=dpb.Link(
                destination_detector_id=e.ids["free_detector_1"],
                source_detector_id=e.ids["free_detector_2"],
            )
        ),
        lambda e: ds.CreateLinkRequest(
            link=dpb.Link(
                destination_detector_id=e.ids["free_detector_2"],
                source_detector_id=e.ids["free_detector_1"],
            )
        ),
    ),
    "CreateWebhook": (
        lambda e: wh.CreateWebhookRequest(
            webhook=epb.Webhook(client_id=e.ids["client"], url="https://example.com/a"),
            secret="idempotent-secret-1",
        ),
        lambda e: wh.CreateWebhookRequest(
            webhook=epb.Webhook(client_id=e.ids["client"], url="https://example.com/b"),
            secret="idempotent-secret-1",
        ),
    ),
    "StartJob": (
        lambda e: js.StartJobRequest(
            kind=jpb.JOB_KIND_REEVALUATE_RUN, production_run_id=e.ids["run"], batch_size=10
        ),
        lambda e: js.StartJobRequest(
            kind=jpb.JOB_KIND_REEVALUATE_RUN, production_run_id=e.ids["run"], batch_size=20
        ),
    ),
    "CreateDeviceType": (
        lambda e: dev.CreateDeviceTypeRequest(
            device_type=dvpb.DeviceType(
                client_id=e.ids["client"], name=f"type-{next(_seq)}", components=["mcu"]
            )
        ),
        lambda e: dev.CreateDeviceTypeRequest(
            device_type=dvpb.DeviceType(
                client_id=e.ids["client"], name=f"type-{next(_seq)}", components=["ble"]
            )
        ),
    ),
    "CreateFirmwareRelease": (
        lambda e: dev.CreateFirmwareReleaseRequest(
            firmware_release=dvpb.FirmwareRelease(
                device_type_id=e.ids["device_type"], component="mcu", version=f"2.{next(_seq)}.0"
            )
        ),
        lambda e: dev.CreateFirmwareReleaseRequest(
            firmware_release=dvpb.FirmwareRelease(
                device_type_id=e.ids["device_type"], component="mcu", version=f"3.{next(_seq)}.0"
            )
        ),
    ),
    "CreateDeviceProfile": (
        lambda e: dev.CreateDeviceProfileRequest(
            device_profile=dvpb.DeviceProfile(
                name="site", scope=dvpb.PROFILE_SCOPE_LOCATION, scope_id=e.ids["location"]
            )
        ),
        lambda e: dev.CreateDeviceProfileRequest(
            device_profile=dvpb.DeviceProfile(
                name="run", scope=dvpb.PROFILE_SCOPE_PRODUCTION_RUN, scope_id=e.ids["run"]
            )
        ),
    ),
    "RegisterDevice": (
        lambda e: dev.RegisterDeviceRequest(device=a_device(e)),
        lambda e: dev.RegisterDeviceRequest(device=a_device(e)),
    ),
    "CreateRollout": (
        lambda e: dev.CreateRolloutRequest(
            rollout=a_rollout(e),
            selection=dvpb.DeviceSelection(device_ids=[e.ids["free_device_1"]]),
        ),
        lambda e: dev.CreateRolloutRequest(
            rollout=a_rollout(e),
            selection=dvpb.DeviceSelection(device_ids=[e.ids["free_device_2"]]),
        ),
    ),
}


def a_detector(env: Env, name: str) -> dpb.Detector:
    return dpb.Detector(
        client_id=env.ids["client"],
        display_name=name,
        position=pb.GeoPoint(latitude=52.5, longitude=13.4),
        radios=[dpb.RADIO_BLUETOOTH],
    )


MCU1 = [dvpb.ComponentVersion(component="mcu", version="1.0.0")]


def a_device(env: Env) -> dvpb.Device:
    return dvpb.Device(
        client_id=env.ids["client"],
        device_type_id=env.ids["device_type"],
        serial=f"idem-{next(_seq)}",
        group_key="cell",
        versions=MCU1,
    )


def a_rollout(env: Env) -> dvpb.Rollout:
    return dvpb.Rollout(device_type_id=env.ids["device_type"], name="idem", target=MCU1)


def test_every_create_rpc_has_its_requests_here() -> None:
    assert sorted(REQUESTS) == IDEMPOTENT


async def make_env(stack: Stack) -> Env:
    world = await make_world(stack, f"idem{next(_seq)}")
    assert stack.collector_channel is not None
    assert stack.query_channel is not None
    keys = k_grpc.KeyServiceStub(stack.collector_channel)
    batch = (await keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=8))).key_batch
    text = "".join(
        [
            r.chunk
            async for r in kq_grpc.KeyQueryServiceStub(stack.query_channel).ExportKeyBatch(
                kq.ExportKeyBatchRequest(key_batch_id=batch.id, format=kq.KEY_EXPORT_FORMAT_CSV)
            )
        ]
    )
    macs = [r["mac_address"] for r in csv.DictReader(io.StringIO(text))]
    # the first four are the client's, to import; the others are free, to allocate
    await keys.AllocateTags(
        k.AllocateTagsRequest(client_id=world.ids["client"], mac_addresses=macs[:4])
    )
    # free detectors to link, free devices for a rollout (the world's are linked and busy)
    detectors = ds_grpc.DetectorServiceStub(stack.collector_channel)
    devices = dev_grpc.DeviceServiceStub(stack.collector_channel)
    env = Env(stack, world.ids, macs)
    for i in (1, 2):
        made = await detectors.CreateDetector(
            ds.CreateDetectorRequest(detector=a_detector(env, f"free-{i}"))
        )
        world.ids[f"free_detector_{i}"] = made.detector.id
        device = await devices.RegisterDevice(dev.RegisterDeviceRequest(device=a_device(env)))
        world.ids[f"free_device_{i}"] = device.device.id
    return env


async def call(
    stack: Stack, method: descriptor.MethodDescriptor, request: Message
) -> tuple[grpc.StatusCode, str, Message | None]:
    channel = stack.collector_channel
    assert channel is not None
    return await invoke(channel, method, request)


def with_id(request: Message, request_id: str) -> Message:
    request.request_id = request_id  # type: ignore[attr-defined]
    return request


def precondition_type(code: grpc.StatusCode, error: str) -> str:
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, error)
    return "REQUEST_ID_REUSED" if "REQUEST_ID_REUSED" in error else error


@pytest.mark.parametrize("name", IDEMPOTENT)
async def test_a_retried_create_returns_the_first_result(stack: Stack, name: str) -> None:
    env = await make_env(stack)
    method = METHODS[name]
    same, other = REQUESTS[name]
    request = with_id(same(env), str(uuid.uuid4()))
    first = await call(stack, method, request)
    assert first[0] == grpc.StatusCode.OK, first
    again = await call(stack, method, request)
    assert again == first  # the same ids and times: nothing was created twice
    # the same request_id with another body is refused, and creates nothing
    reused = with_id(other(env), request.request_id)  # type: ignore[attr-defined]
    code, error, _ = await call(stack, method, reused)
    assert precondition_type(code, error) == "REQUEST_ID_REUSED"
    assert "request_id" in error
    # that other body with its own request_id goes through (it was not created meanwhile)
    fresh = await call(stack, method, with_id(reused, str(uuid.uuid4())))
    assert fresh[0] == grpc.StatusCode.OK, fresh
    assert fresh[2] != first[2]


async def clients_named(stack: Stack, name: str) -> list[pb.Client]:
    listed: list[pb.Client] = []
    token = ""
    while True:
        page = await stack.query.ListClients(q.ListClientsRequest(page_size=100, page_token=token))
        listed += [c for c in page.clients if c.display_name == name]
        token = page.next_page_token
        if not token:
            return listed


async def test_without_a_request_id_each_create_creates(stack: Stack) -> None:
    request = s.CreateClientRequest(client=pb.Client(display_name="twice"))
    a = (await stack.setup.CreateClient(request)).client
    b = (await stack.setup.CreateClient(request)).client
    assert a.id != b.id
    assert len(await clients_named(stack, "twice")) == 2


async def test_concurrent_retries_create_once_and_all_get_its_answer(stack: Stack) -> None:
    rid = str(uuid.uuid4())
    request = s.CreateClientRequest(client=pb.Client(display_name="raced"), request_id=rid)
    answers = await asyncio.gather(*(stack.setup.CreateClient(request) for _ in range(12)))
    assert len({a.client.id for a in answers}) == 1
    assert len(await clients_named(stack, "raced")) == 1
    # with different bodies racing for one request_id: exactly one is created
    outcomes = await asyncio.gather(
        *(
            stack.setup.CreateClient(
                s.CreateClientRequest(
                    client=pb.Client(display_name=f"race-{i}"), request_id="one-key"
                )
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == 1, outcomes
    assert len(refused) == 5, outcomes
    assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    named = [await clients_named(stack, f"race-{i}") for i in range(6)]
    assert sum(len(n) for n in named) == 1


async def test_a_failed_create_leaves_its_request_id_free(stack: Stack) -> None:
    env = await make_env(stack)
    rid = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(
                brand=pb.Brand(client_id=str(uuid.uuid4()), display_name="x"), request_id=rid
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    brand = (
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(
                brand=pb.Brand(client_id=env.ids["client"], display_name="x"), request_id=rid
            )
        )
    ).brand
    assert brand.client_id == env.ids["client"]


async def test_request_ids_are_the_callers_own(stack: Stack) -> None:
    """Another user's same request_id and body creates its own: no caller can replay (or
    block) another's creates."""
    env = await make_env(stack)
    boss = stack.as_token(await add_user(stack, World(env.ids, set()), "idem", Role.CLIENT_ADMIN))
    request = s.CreateBrandRequest(
        brand=pb.Brand(client_id=env.ids["client"], display_name="mine"), request_id="shared-id"
    )
    a = (await stack.setup.CreateBrand(request)).brand
    b = (await boss.setup.CreateBrand(request)).brand
    assert a.id != b.id
    assert (await boss.setup.CreateBrand(request)).brand == b


async def test_a_bad_request_id_is_invalid_argument(stack: Stack) -> None:
    for bad in ("x" * 129, "new\nline"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.setup.CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name="x"), request_id=bad)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        [detail] = [d for d in status.details if d.Is(bad_request.DESCRIPTOR)]
        detail.Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == ["request_id"]


async def test_a_retry_after_a_client_deadline_gets_the_create_that_went_on(stack: Stack) -> None:
    """The usual retry: the client's deadline passes while a large create runs. The create
    goes on to the end and is kept; the retry (waiting, or ABORTED while it still runs) gets
    that one batch, and no second batch is made."""
    assert stack.collector_channel is not None
    assert stack.container is not None
    keys = k_grpc.KeyServiceStub(stack.collector_channel)
    request = k.CreateKeyBatchRequest(count=20_000, label="deadline", request_id=str(uuid.uuid4()))
    pool = await stack.container.db_pool.async_()
    first = keys.CreateKeyBatch(request)
    for _ in range(600):  # until the server has taken the call's request_id
        if await pool.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE request_id = $1", request.request_id
        ):
            break
        await asyncio.sleep(0.05)
    first.cancel()  # what a client deadline does
    with pytest.raises(asyncio.CancelledError):
        await first
    retried_at = datetime.now(UTC)
    codes = []
    for _ in range(30):
        code, error, response = await call(stack, METHODS["CreateKeyBatch"], request)
        codes.append(code)
        if code != grpc.StatusCode.ABORTED:
            break
    assert codes[-1] == grpc.StatusCode.OK, (codes, error)
    assert isinstance(response, k.CreateKeyBatchResponse)
    assert response.key_batch.size == 20_000
    # the batch the first call began, not one the retry made
    assert response.key_batch.create_time.ToDatetime(tzinfo=UTC) < retried_at
    assert await pool.fetchval("SELECT count(*) FROM tag_keys") == 20_000
