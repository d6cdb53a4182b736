"""Tenant isolation, generated from the service descriptors: every RPC of every tracker.v1
service (an RPC added later is covered without editing this file) is called by users of
client A (each role) with requests aimed at client B's resources. No response or error may
carry B's data, denials have the right code, a hidden resource looks exactly like a missing
one, and B's data is unchanged afterwards. Without a token, every RPC is UNAUTHENTICATED."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor, message_factory, text_format
from google.protobuf.message import Message

from domain.access import Principal, Role
from tests.integration.conftest import Stack
from tracker.v1 import (
    auth_service_pb2,
    detector_pb2,
    detector_query_service_pb2,
    detector_query_service_pb2_grpc,
    detector_service_pb2,
    detector_service_pb2_grpc,
    device_query_service_pb2,
    device_service_pb2,
    device_service_pb2_grpc,
    event_query_service_pb2,
    event_query_service_pb2_grpc,
    events_pb2,
    export_query_service_pb2,
    fetch_query_service_pb2,
    fleet_query_service_pb2,
    job_query_service_pb2,
    job_query_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    jobs_pb2,
    key_query_service_pb2,
    key_service_pb2,
    processing_query_service_pb2,
    processing_service_pb2,
    report_service_pb2,
    setup_query_service_pb2,
    setup_service_pb2,
    status_query_service_pb2,
    status_query_service_pb2_grpc,
    status_service_pb2,
    user_query_service_pb2,
    user_service_pb2,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s
from usecases.access import NewUser

pytestmark = pytest.mark.integration

FILES = [
    auth_service_pb2,
    setup_service_pb2,
    setup_query_service_pb2,
    user_service_pb2,
    user_query_service_pb2,
    key_service_pb2,
    key_query_service_pb2,
    report_service_pb2,
    fetch_query_service_pb2,
    status_query_service_pb2,
    status_service_pb2,
    processing_query_service_pb2,
    processing_service_pb2,
    detector_service_pb2,
    detector_query_service_pb2,
    job_service_pb2,
    job_query_service_pb2,
    fleet_query_service_pb2,
    export_query_service_pb2,
    device_service_pb2,
    device_query_service_pb2,
    webhook_service_pb2,
    event_query_service_pb2,
]
SERVICES = [svc for f in FILES for svc in f.DESCRIPTOR.services_by_name.values()]
OPEN_SERVICES = {"tracker.v1.AuthService"}
MUTATING_SERVICES = {
    "tracker.v1.SetupService",
    "tracker.v1.UserService",
    "tracker.v1.KeyService",
    "tracker.v1.ReportService",
    "tracker.v1.StatusService",
    "tracker.v1.ProcessingService",
    "tracker.v1.DetectorService",
    "tracker.v1.JobService",
    "tracker.v1.DeviceService",
    "tracker.v1.WebhookService",
}
# Operator services: every RPC needs ADMIN, so even their lists refuse everyone else.
ADMIN_ONLY_SERVICES = {
    "tracker.v1.FetchQueryService",
    "tracker.v1.ProcessingQueryService",
    "tracker.v1.ProcessingService",
}
# Mutations that answer OK while refusing the parts aimed elsewhere (the snapshot of the other
# client, its reports included, proves that nothing changed).
OK_WHILE_REFUSING = {"CreateUser", "IngestReports"}
RESOURCE_OF_MESSAGE = {
    "Client": "client",
    "Brand": "brand",
    "ProductionRun": "run",
    "Location": "location",
    "Tracker": "tracker",
    "User": "user",
    "Detector": "detector",
    "DeviceType": "device_type",
    "Device": "device",
    "DeviceProfile": "profile",
    "Rollout": "rollout",
    "Webhook": "webhook",
}
RESOURCE_OF_FIELD = {
    "client_id": "client",
    "brand_id": "brand",
    "production_run_id": "run",
    "user_id": "user",
    "key_batch_id": "key_batch",
    "mac_addresses": "mac",
    "tracker_id": "tracker",
    "tracker_ids": "tracker",
    "detector_id": "detector",
    "detector_ids": "detector",
    "destination_detector_id": "detector",
    "source_detector_id": "source_detector",
    "job_id": "job",
    "device_type_id": "device_type",
    "device_id": "device",
    "device_ids": "device",
    "rollout_id": "rollout",
    "production_run_ids": "run",
    "scope_id": "client",
    "location_id": "location",
    "webhook_id": "webhook",
}
# Valid values of fields whose syntax is checked before access (devices and firmware).
VALUE_OF_FIELD = {
    "version": "1.0.0",
    "from_version": "1.0.0",
    "to_version": "1.0.0",
    "range": ">=1.0.0",
    "component": "mcu",
    "components": "mcu",
}
_counter = itertools.count()


@dataclass
class World:
    """One client's resources: ids by kind, and every string that identifies them."""

    ids: dict[str, str]
    secrets: set[str]


def method_resource(method: descriptor.MethodDescriptor) -> str | None:
    name = method.name
    for verb in ("BatchCreate", "Create", "Update", "Delete", "Get", "List"):
        if name.startswith(verb):
            rest = name[len(verb) :]
            rest = rest[:-1] if verb == "List" or verb == "BatchCreate" else rest
            return RESOURCE_OF_MESSAGE.get(rest)
    return "user" if "User" in name or "ClientAccess" in name else None


def fill(msg: Message, world: World, resource: str | None) -> None:
    """Fill every field of a request so that it points at ``world``'s resources."""
    for f in msg.DESCRIPTOR.fields:
        name = f.name
        if f.message_type is not None:
            sub_resource = RESOURCE_OF_MESSAGE.get(f.message_type.name, resource)
            if f.message_type.full_name == "google.protobuf.Timestamp":
                getattr(msg, name).FromJsonString(
                    "2026-01-01T00:00:00Z" if "start" in name else "2027-01-01T00:00:00Z"
                )
            elif f.message_type.full_name == "google.protobuf.FieldMask":
                continue
            elif f.is_repeated:
                fill(getattr(msg, name).add(), world, sub_resource)
            else:
                fill(getattr(msg, name), world, sub_resource)
        elif f.type == f.TYPE_STRING:
            if name == "id" and resource:
                value = world.ids[resource]
            elif name in RESOURCE_OF_FIELD:
                value = world.ids[RESOURCE_OF_FIELD[name]]
            elif name in VALUE_OF_FIELD:
                value = VALUE_OF_FIELD[name]
            elif name == "key":  # profile entries: distinct keys
                value = f"key{next(_counter)}"
            elif name == "email":
                value = f"matrix{next(_counter)}@example.com"
            elif name == "password":
                value = "matrix-password-123"
            elif name in ("page_token", "mac_address", "refresh_token"):
                continue
            else:
                value = "matrix"
            if f.is_repeated:
                getattr(msg, name).append(value)
            else:
                setattr(msg, name, value)
        elif f.type == f.TYPE_BYTES:
            raw = hashlib.sha256(f"k{next(_counter)}".encode()).digest()[:28]
            if f.is_repeated:
                getattr(msg, name).append(raw)
            else:
                setattr(msg, name, raw)
        elif f.type == f.TYPE_ENUM:
            if f.is_repeated:
                getattr(msg, name).append(f.enum_type.values[1].number)
            else:
                setattr(msg, name, f.enum_type.values[1].number)
        elif f.type in (f.TYPE_DOUBLE, f.TYPE_FLOAT):
            # valid values: a status rule's probability and outlier share lie below 1, as do
            # a rollout's shares; a rollout's (last) phase is 100 percent
            value = {
                "min_probability": 0.9,
                "outlier_share": 0.1,
                "advance_share": 0.9,
                "pause_failure_rate": 0.1,
                "abort_failure_rate": 0.2,
                "phases": 100.0,
            }.get(name, 10.0)
            if f.is_repeated:
                getattr(msg, name).append(value)
            else:
                setattr(msg, name, value)
        # ints (page_size) and bools (force, admin) keep their defaults.


def request_for(method: descriptor.MethodDescriptor, world: World) -> Message:
    msg = message_factory.GetMessageClass(method.input_type)()
    fill(msg, world, method_resource(method))
    return msg


async def invoke(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, request: Message
) -> tuple[grpc.StatusCode, str, Message | None]:
    out = message_factory.GetMessageClass(method.output_type)
    if method.client_streaming:
        make = channel.stream_unary
    elif method.server_streaming:
        make = channel.unary_stream
    else:
        make = channel.unary_unary
    rpc = make(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=out.FromString,
    )
    try:
        if method.client_streaming:
            response = await rpc(iter([request]))
        elif method.server_streaming:
            response = out()
            async for item in rpc(request):
                response.MergeFrom(item)
        else:
            response = await rpc(request)
    except grpc.aio.AioRpcError as err:
        details = "".join(
            v.decode("latin-1") if isinstance(v, bytes) else str(v)
            for _, v in (err.trailing_metadata() or ())
        )
        return err.code(), f"{err.details()} {details}", None
    return grpc.StatusCode.OK, "", response


def channel_for(stack: Stack, method: descriptor.MethodDescriptor) -> grpc.aio.Channel:
    query = method.containing_service.full_name.endswith("QueryService")
    channel = stack.query_channel if query else stack.collector_channel
    assert channel is not None
    return channel


async def make_world(admin: Stack, tag: str) -> World:
    secrets = {f"{tag}-client", f"{tag}-brand", f"{tag}-run", f"{tag}-location", f"{tag}-tracker"}
    client = (
        await admin.setup.CreateClient(
            s.CreateClientRequest(client=pb.Client(display_name=f"{tag}-client"))
        )
    ).client
    brand = (
        await admin.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name=f"{tag}-brand"))
        )
    ).brand
    run = pb.ProductionRun(brand_id=brand.id, display_name=f"{tag}-run")
    run.start_time.FromJsonString("2026-01-01T00:00:00Z")
    run.end_time.FromJsonString("2027-01-01T00:00:00Z")
    run = (
        await admin.setup.CreateProductionRun(s.CreateProductionRunRequest(production_run=run))
    ).production_run
    location = (
        await admin.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=run.id,
                    kind=pb.LOCATION_KIND_STORAGE,
                    display_name=f"{tag}-location",
                    center=pb.GeoPoint(latitude=1, longitude=1),
                    radius_m=10,
                )
            )
        )
    ).location
    tracker = (
        await admin.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(
                    production_run_id=run.id,
                    display_name=f"{tag}-tracker",
                    advertisement_key=hashlib.sha256(tag.encode()).digest()[:28],
                )
            )
        )
    ).tracker
    detectors = detector_service_pb2_grpc.DetectorServiceStub(admin.collector_channel)
    dest, source = [
        (
            await detectors.CreateDetector(
                detector_service_pb2.CreateDetectorRequest(
                    detector=detector_pb2.Detector(
                        client_id=client.id,
                        display_name=f"{tag}-{name}",
                        position=pb.GeoPoint(latitude=1, longitude=1),
                        radios=[detector_pb2.RADIO_BLUETOOTH],
                    )
                )
            )
        ).detector
        for name in ("detector", "source-detector")
    ]
    await detectors.CreateLink(
        detector_service_pb2.CreateLinkRequest(
            link=detector_pb2.Link(destination_detector_id=dest.id, source_detector_id=source.id)
        )
    )
    secrets |= {f"{tag}-detector", f"{tag}-source-detector"}
    dev = device_service_pb2_grpc.DeviceServiceStub(admin.collector_channel)
    d = device_service_pb2
    from tracker.v1 import devices_pb2 as dpb

    dtype = (
        await dev.CreateDeviceType(
            d.CreateDeviceTypeRequest(
                device_type=dpb.DeviceType(
                    client_id=client.id, name=f"{tag}-type", components=["mcu"]
                )
            )
        )
    ).device_type
    mcu1 = [dpb.ComponentVersion(component="mcu", version="1.0.0")]
    await dev.CreateFirmwareRelease(
        d.CreateFirmwareReleaseRequest(
            firmware_release=dpb.FirmwareRelease(
                device_type_id=dtype.id, component="mcu", version="1.0.0"
            )
        )
    )
    await dev.SetCombinations(
        d.SetCombinationsRequest(
            device_type_id=dtype.id,
            combinations=[dpb.Combination(versions=mcu1)],
            state=dpb.COMBINATION_STATE_KNOWN_GOOD,
        )
    )
    profile = (
        await dev.CreateDeviceProfile(
            d.CreateDeviceProfileRequest(
                device_profile=dpb.DeviceProfile(
                    name=f"{tag}-profile",
                    scope=dpb.PROFILE_SCOPE_CLIENT,
                    scope_id=client.id,
                    secrets=[dpb.ProfileEntry(key="wifi", value=f"{tag}-wifi-secret")],
                )
            )
        )
    ).device_profile
    device = (
        await dev.RegisterDevice(
            d.RegisterDeviceRequest(
                device=dpb.Device(
                    client_id=client.id,
                    device_type_id=dtype.id,
                    serial=f"{tag}-serial",
                    group_key=f"{tag}-cell",
                    versions=mcu1,
                )
            )
        )
    ).device
    rollout = (
        await dev.CreateRollout(
            d.CreateRolloutRequest(
                rollout=dpb.Rollout(device_type_id=dtype.id, name=f"{tag}-rollout", target=mcu1)
            )
        )
    ).rollout
    secrets |= {f"{tag}-type", f"{tag}-profile", f"{tag}-serial", f"{tag}-cell", f"{tag}-wifi"}
    secrets |= {f"{tag}-rollout", f"{tag}-wifi-secret"}
    ids = {
        "device_type": dtype.id,
        "device": device.id,
        "profile": profile.id,
        "rollout": rollout.id,
        "client": client.id,
        "detector": dest.id,
        "source_detector": source.id,
        "brand": brand.id,
        "run": run.id,
        "location": location.id,
        "tracker": tracker.id,
        "key_batch": str(uuid.uuid4()),
        "mac": tracker.mac_address,
        "job": await a_job(admin, run.id),
        "webhook": await a_webhook(admin, client.id, tag),
    }
    secrets |= {f"{tag}-webhook"}
    secrets |= set(ids.values()) | {tracker.mac_address}
    return World(ids, secrets)


async def a_job(admin: Stack, run_id: str) -> str:
    """A bulk job of the run (no worker runs here: it stays RUNNING)."""
    assert admin.collector_channel is not None
    jobs = job_service_pb2_grpc.JobServiceStub(admin.collector_channel)
    request = job_service_pb2.StartJobRequest(
        kind=jobs_pb2.JOB_KIND_REEVALUATE_RUN, production_run_id=run_id
    )
    return str((await jobs.StartJob(request)).job.id)


async def a_webhook(admin: Stack, client_id: str, tag: str) -> str:
    """A webhook of the client (no worker runs here: nothing is delivered)."""
    assert admin.collector_channel is not None
    hooks = webhook_service_pb2_grpc.WebhookServiceStub(admin.collector_channel)
    made = await hooks.CreateWebhook(
        webhook_service_pb2.CreateWebhookRequest(
            webhook=events_pb2.Webhook(
                client_id=client_id,
                url=f"http://127.0.0.1:9/{tag}-webhook",
                display_name=f"{tag}-webhook",
            ),
            secret=f"{tag}-webhook-secret-0123456789",
        )
    )
    return str(made.webhook.id)


async def add_user(admin: Stack, world: World, tag: str, role: Role) -> str:
    email = f"{tag}-{role.value.lower()}@example.com"
    user = await admin.access.create_user(
        Principal.system(),
        NewUser(
            email=email,
            password="matrix-password-123",
            memberships={uuid.UUID(world.ids["client"]): role},
        ),
    )
    world.secrets |= {email, str(user.id)}
    world.ids.setdefault("user", str(user.id))
    return await admin.token_for(email)


async def snapshot(admin: Stack, world: World) -> list[str]:
    """Everything of a client, as the admin reads it."""
    client_id = world.ids["client"]
    parts = [
        await admin.query.GetClient(q.GetClientRequest(id=client_id)),
        await admin.query.ListBrands(q.ListBrandsRequest(client_id=client_id)),
        await admin.query.ListProductionRuns(q.ListProductionRunsRequest(client_id=client_id)),
        await admin.query.ListLocations(q.ListLocationsRequest(production_run_id=world.ids["run"])),
        await admin.query.ListTrackers(q.ListTrackersRequest(client_id=client_id)),
        await admin.user_query.GetUser(user_query_service_pb2.GetUserRequest(id=world.ids["user"])),
    ]
    detectors = detector_query_service_pb2_grpc.DetectorQueryServiceStub(admin.query_channel)
    parts += [
        await detectors.ListDetectors(
            detector_query_service_pb2.ListDetectorsRequest(client_id=client_id)
        ),
        await detectors.ListLinks(
            detector_query_service_pb2.ListLinksRequest(
                destination_detector_id=world.ids["detector"]
            )
        ),
        await detectors.ListDetectorEvents(
            detector_query_service_pb2.ListDetectorEventsRequest(
                detector_ids=[world.ids["detector"], world.ids["source_detector"]]
            )
        ),
        await detectors.ListBatteryReadings(
            detector_query_service_pb2.ListBatteryReadingsRequest(detector_id=world.ids["detector"])
        ),
    ]
    status = status_query_service_pb2_grpc.StatusQueryServiceStub(admin.query_channel)
    parts += [
        await status.GetStatusRule(
            status_query_service_pb2.GetStatusRuleRequest(production_run_id=world.ids["run"])
        ),
        await status.GetTrackerStatus(
            status_query_service_pb2.GetTrackerStatusRequest(tracker_id=world.ids["tracker"])
        ),
        await job_query_service_pb2_grpc.JobQueryServiceStub(admin.query_channel).GetJob(
            job_query_service_pb2.GetJobRequest(job_id=world.ids["job"])
        ),
    ]
    eqs = event_query_service_pb2_grpc.EventQueryServiceStub(admin.query_channel)
    parts += [
        await eqs.GetWebhook(
            event_query_service_pb2.GetWebhookRequest(webhook_id=world.ids["webhook"])
        ),
        await eqs.ListWebhookDeliveries(
            event_query_service_pb2.ListWebhookDeliveriesRequest(webhook_id=world.ids["webhook"])
        ),
    ]
    devq = device_query_service_pb2
    from tracker.v1 import device_query_service_pb2_grpc

    dq = device_query_service_pb2_grpc.DeviceQueryServiceStub(admin.query_channel)
    parts += [
        await dq.GetDevice(devq.GetDeviceRequest(id=world.ids["device"])),
        await dq.GetRollout(devq.GetRolloutRequest(id=world.ids["rollout"])),
        await dq.GetDeviceProfile(devq.GetDeviceProfileRequest(id=world.ids["profile"])),
        await dq.GetFirmwareCatalog(
            devq.GetFirmwareCatalogRequest(device_type_id=world.ids["device_type"])
        ),
    ]
    assert admin.container is not None
    uow_factory = await admin.container.uow_factory.async_()
    async with uow_factory() as uow:
        reports = await uow.reports.count(uuid.UUID(world.ids["tracker"]))
    return [text_format.MessageToString(p) for p in parts] + [f"reports={reports}"]


def strip(text: str, ident: str) -> str:
    return text.replace(ident, "<id>")


async def test_no_rpc_lets_client_a_see_or_touch_client_b(stack: Stack) -> None:
    admin = stack
    a, b = await make_world(admin, "alpha"), await make_world(admin, "bravo")
    a_tokens = {role: await add_user(admin, a, "alpha", role) for role in Role}
    for role in Role:
        await add_user(admin, b, "bravo", role)
    before = await snapshot(admin, b)
    missing = World({k: str(uuid.uuid4()) for k in b.ids}, set())
    missing.ids["mac"] = "C0:00:00:00:00:01"

    checked = 0
    for role, token in a_tokens.items():
        caller = admin.as_token(token)
        for service in SERVICES:
            for method in service.methods:
                request = request_for(method, b)
                sent = text_format.MessageToString(request)
                code, error, response = await invoke(channel_for(caller, method), method, request)
                where = f"{role.value} {service.name}/{method.name}"
                shown = error + (text_format.MessageToString(response) if response else "")
                leaked = {x for x in b.secrets if x in shown and x not in sent}
                assert not leaked, f"{where} leaked {leaked}: {shown[:300]}"
                if service.full_name in OPEN_SERVICES:
                    assert code != grpc.StatusCode.OK, where
                    continue
                assert code in (
                    grpc.StatusCode.OK,
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.PERMISSION_DENIED,
                ), (where, code, error)
                if code == grpc.StatusCode.OK:
                    # Only reads may succeed, and only with nothing of B in them.
                    assert (
                        service.full_name not in MUTATING_SERVICES
                        or method.name in OK_WHILE_REFUSING
                    ), (where, shown[:300])
                if code == grpc.StatusCode.NOT_FOUND:
                    # Indistinguishable from a resource that does not exist at all.
                    twin = request_for(method, missing)
                    t_code, t_error, _ = await invoke(channel_for(caller, method), method, twin)
                    assert t_code == code, where
                    hidden = error
                    for kind, ident in b.ids.items():
                        hidden = strip(hidden, ident)
                        t_error = strip(t_error, missing.ids[kind])
                    assert hidden == t_error, where
                checked += 1
    assert checked > 40
    assert await snapshot(admin, b) == before


async def test_lists_show_only_the_callers_clients(stack: Stack) -> None:
    admin = stack
    a, b = await make_world(admin, "alpha"), await make_world(admin, "bravo")
    for role in Role:
        token = await add_user(admin, a, "alpha", role)
        caller = admin.as_token(token)
        for service in SERVICES:
            for method in service.methods:
                if not method.name.startswith("List"):
                    continue
                request = message_factory.GetMessageClass(method.input_type)()
                if "job_id" in method.input_type.fields_by_name:  # a list under its own job
                    request.job_id = a.ids["job"]
                code, error, response = await invoke(channel_for(caller, method), method, request)
                if service.full_name in ADMIN_ONLY_SERVICES:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, error)
                    continue
                assert code == grpc.StatusCode.OK, (method.name, error)
                text = text_format.MessageToString(response)
                assert not {x for x in b.secrets if x in text}, method.name
    await add_user(admin, b, "bravo", Role.VIEWER)


async def test_every_rpc_without_or_with_a_bad_token_is_unauthenticated(stack: Stack) -> None:
    world = World(
        {
            k: str(uuid.uuid4())
            for k in (
                "client",
                "brand",
                "run",
                "location",
                "tracker",
                "user",
                "key_batch",
                "detector",
                "source_detector",
                "job",
                "webhook",
                "device_type",
                "device",
                "profile",
                "rollout",
            )
        },
        set(),
    )
    world.ids["mac"] = "C0:00:00:00:00:01"
    for token in (None, "not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."):
        caller = stack.as_token(token)
        for service in SERVICES:
            if service.full_name in OPEN_SERVICES:
                continue
            for method in service.methods:
                code, _, _ = await invoke(
                    channel_for(caller, method), method, request_for(method, world)
                )
                assert code == grpc.StatusCode.UNAUTHENTICATED, (token, method.full_name)


async def test_a_viewer_cannot_change_its_own_client(stack: Stack) -> None:
    admin = stack
    a = await make_world(admin, "alpha")
    await add_user(admin, a, "alpha", Role.CLIENT_ADMIN)
    viewer = admin.as_token(await add_user(admin, a, "alpha", Role.VIEWER))
    before = await snapshot(admin, a)
    for service in SERVICES:
        if service.full_name not in MUTATING_SERVICES:
            continue
        for method in service.methods:
            code, error, _ = await invoke(
                channel_for(viewer, method), method, request_for(method, a)
            )
            allowed = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND}
            if method.name in OK_WHILE_REFUSING:
                allowed.add(grpc.StatusCode.OK)  # the snapshot below proves nothing changed
            assert code in allowed, (method.name, code, error)
    assert await snapshot(admin, a) == before


# -- issue 10: the edges between tenants -------------------------------------------------------


def everything_of(err: grpc.aio.AioRpcError) -> str:
    """The message and every trailer (details included), as one text to search."""
    trailers = "".join(
        v.decode("latin-1") if isinstance(v, bytes) else str(v)
        for _, v in (err.trailing_metadata() or ())
    )
    return f"{err.details()} {trailers}"


async def failure(call) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded")


async def test_a_shared_user_shows_each_client_admin_only_its_own_client(stack: Stack) -> None:
    admin = stack
    a, b = await make_world(admin, "alpha"), await make_world(admin, "bravo")
    a_boss = admin.as_token(await add_user(admin, a, "alpha", Role.CLIENT_ADMIN))
    b_boss = admin.as_token(await add_user(admin, b, "bravo", Role.CLIENT_ADMIN))
    a_id, b_id = a.ids["client"], b.ids["client"]
    shared = await admin.access.create_user(
        Principal.system(),
        NewUser(
            email="shared@example.com",
            password="matrix-password-123",
            memberships={uuid.UUID(a_id): Role.VIEWER, uuid.UUID(b_id): Role.CLIENT_ADMIN},
        ),
    )
    for caller, own, other in ((a_boss, a_id, b_id), (b_boss, b_id, a_id)):
        got = (
            await caller.user_query.GetUser(
                user_query_service_pb2.GetUserRequest(id=str(shared.id))
            )
        ).user
        assert [c.client_id for c in got.client_access] == [own]
        listed = (
            await caller.user_query.ListUsers(user_query_service_pb2.ListUsersRequest())
        ).users
        text = text_format.MessageToString(user_query_service_pb2.ListUsersResponse(users=listed))
        assert str(shared.id) in text
        assert other not in text
    everyone = (
        await admin.user_query.GetUser(user_query_service_pb2.GetUserRequest(id=str(shared.id)))
    ).user
    assert {c.client_id for c in everyone.client_access} == {a_id, b_id}


async def test_conflicts_with_another_clients_values_say_only_that_they_are_taken(
    stack: Stack,
) -> None:
    """What a caller learns from a clash: that the value it sent is in use, and which field
    of its request it is. Not by whom, nor anything else of the holder; a clash with its own
    client's value gets the very same answer."""
    from findmy import KeyPair

    from tracker.v1 import key_service_pb2 as k
    from tracker.v1 import key_service_pb2_grpc as k_grpc

    admin = stack
    a, b = await make_world(admin, "alpha"), await make_world(admin, "bravo")
    a_boss = admin.as_token(await add_user(admin, a, "alpha", Role.CLIENT_ADMIN))
    await add_user(admin, b, "bravo", Role.CLIENT_ADMIN)
    b_tracker = (await admin.query.GetTracker(q.GetTrackerRequest(id=b.ids["tracker"]))).tracker
    a_tracker = (await admin.query.GetTracker(q.GetTrackerRequest(id=a.ids["tracker"]))).tracker
    b_pair = KeyPair.new()
    keys = k_grpc.KeyServiceStub(admin.collector_channel)
    await keys.ImportExternalTrackers(
        k.ImportExternalTrackersRequest(
            production_run_id=b.ids["run"], private_keys=[b_pair.private_key_bytes]
        )
    )
    a_keys = k_grpc.KeyServiceStub(a_boss.collector_channel)
    before = await snapshot(admin, b)

    def create_user(email: str):  # type: ignore[no-untyped-def]
        return a_boss.users.CreateUser(
            user_service_pb2.CreateUserRequest(
                user=pb.User(
                    email=email,
                    client_access=[pb.ClientAccess(client_id=a.ids["client"], role=pb.ROLE_VIEWER)],
                ),
                password="matrix-password-123",
            )
        )

    def create_tracker(adv: bytes):  # type: ignore[no-untyped-def]
        return a_boss.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(production_run_id=a.ids["run"], advertisement_key=adv)
            )
        )

    def batch(adv: bytes):  # type: ignore[no-untyped-def]
        fresh = hashlib.sha256(b"fresh").digest()[:28]
        return a_boss.setup.BatchCreateTrackers(
            s.BatchCreateTrackersRequest(
                production_run_id=a.ids["run"],
                trackers=[pb.Tracker(advertisement_key=fresh), pb.Tracker(advertisement_key=adv)],
            )
        )

    same_mac_as_b = b_tracker.advertisement_key[:6] + b"\x01" * 22
    cases = [
        # (what A sends that B holds, the same kind of clash with A's own value), called lazily
        (
            lambda: create_user("bravo-client_admin@example.com"),
            lambda: create_user("alpha-client_admin@example.com"),
        ),
        (
            lambda: create_tracker(b_tracker.advertisement_key),
            lambda: create_tracker(a_tracker.advertisement_key),
        ),
        (lambda: create_tracker(same_mac_as_b), None),
        (
            lambda: batch(b_tracker.advertisement_key),
            lambda: batch(a_tracker.advertisement_key),
        ),
        (
            lambda: a_keys.ImportExternalTrackers(
                k.ImportExternalTrackersRequest(
                    production_run_id=a.ids["run"], private_keys=[b_pair.private_key_bytes]
                )
            ),
            None,
        ),
    ]
    messages = []
    for theirs, ours in cases:
        err = await failure(theirs())
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        shown = everything_of(err)
        leaked = {x for x in b.secrets | {b_pair.mac_address} if x in shown}
        assert not leaked, shown
        assert b_tracker.advertisement_key.hex() not in shown
        assert "is not available" in (err.details() or "")
        messages.append(err.details())
        if ours is not None:
            mine = await failure(ours())
            assert (mine.code(), mine.details()) == (err.code(), err.details())
    assert messages[0] == "email is not available: it is already in use"
    assert messages[3].startswith("trackers[1].")
    assert messages[4].startswith("private_keys[0] ")
    assert await snapshot(admin, b) == before
