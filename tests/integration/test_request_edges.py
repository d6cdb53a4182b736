"""What a caller sends at the edges of the wire: page tokens (signed, bound to their listing,
range-checked) and request bytes that are no message (INVALID_ARGUMENT on every RPC of every
server, streams included), over real gRPC against the real stack."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from adapters.grpc.setup import page_scope as setup_scope
from adapters.grpc.status import page_scope as status_scope
from domain.access import Principal
from domain.history import Granularity
from domain.pagination import PageTokens
from servers import endpoints
from servers.runtime import Endpoint, Process
from tests.integration.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Stack,
    connect,
    stack_settings,
)
from tests.integration.test_isolation_matrix import SERVICES, channel_for
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import status_pb2 as st
from tracker.v1 import status_query_service_pb2 as sq
from tracker.v1 import status_query_service_pb2_grpc as sq_grpc
from tracker.v1 import user_query_service_pb2 as uq
from usecases.access import NewUser

pytestmark = pytest.mark.integration

LIST_METHODS = [m for svc in SERVICES for m in svc.methods if m.name.startswith("List")]
UNDECODABLE = b"\xff\xff\xff"  # a truncated varint: no protobuf message parses from it


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bad_request_fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    raise AssertionError("no BadRequest detail")


async def list_with_token(
    stack: Stack, method: descriptor.MethodDescriptor, token: str
) -> grpc.aio.AioRpcError | None:
    request = message_factory.GetMessageClass(method.input_type)(page_token=token)
    out = message_factory.GetMessageClass(method.output_type)
    rpc = channel_for(stack, method).unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=out.FromString,
    )
    try:
        await rpc(request, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err
    return None


async def test_forged_foreign_and_altered_page_tokens_are_invalid_argument_on_every_list(
    stack: Stack,
) -> None:
    for name in ("one", "two"):
        client = (
            await stack.setup.CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name=name))
            )
        ).client
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name=name))
        )
    clients_token = (
        await stack.query.ListClients(q.ListClientsRequest(page_size=1))
    ).next_page_token
    brands_token = (await stack.query.ListBrands(q.ListBrandsRequest(page_size=1))).next_page_token
    assert clients_token
    assert brands_token
    # The INTERNAL: the old unsigned format with a cursor PostgreSQL cannot take.
    cursor = f"{uuid.uuid4()}|0001-01-01T00:00:00+14:00|99999999999|0"
    unsigned = b64url(json.dumps({"a": cursor, "f": "0" * 16}).encode())
    key_id, payload, mac = clients_token.split(".")
    forged = [
        unsigned,
        "%%%",
        f"{key_id}.{b64url(json.dumps({'a': cursor}).encode())}.{mac}",  # altered cursor
        f"{key_id}.{payload}.{b64url(bytes(32))}",  # wrong MAC
        f"retired.{payload}.{mac}",
    ]
    assert LIST_METHODS
    for method in LIST_METHODS:
        foreign = brands_token if method.name == "ListClients" else clients_token
        for token in [*forged, foreign]:
            err = await list_with_token(stack, method, token)
            assert err is not None, (method.name, token)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, err.details())
            assert bad_request_fields(err) == ["page_token"], method.name
    # A token of the same RPC with other filters is foreign too.
    some_client = (await stack.query.ListClients(q.ListClientsRequest())).clients[0].id
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stack.query.ListBrands(
            q.ListBrandsRequest(client_id=some_client, page_token=brands_token)
        )
    assert bad_request_fields(exc.value) == ["page_token"]
    # The genuine token still pages on.
    rest = await stack.query.ListClients(q.ListClientsRequest(page_token=clients_token))
    assert len(rest.clients) == 1


async def test_signed_cursors_out_of_range_are_invalid_argument_not_internal(stack: Stack) -> None:
    """Defence in depth: even a token with a valid signature (a leaked key, or a cursor we
    wrote from bad data) never reaches PostgreSQL with a value it cannot take."""
    assert stack.container is not None
    tokens: PageTokens = stack.container.page_tokens()
    status = sq_grpc.StatusQueryServiceStub(stack.query_channel)
    tracker = uuid.uuid4()
    history_cursors = [
        f"{tracker}|0001-01-01T00:00:00+14:00|0|0",  # before year 1 in UTC
        f"{tracker}|2026-01-01T00:00:00|0|0",  # no offset
        f"{tracker}|2026-01-01T00:00:00+00:00|99999999999|0",  # beyond int32
        f"{tracker}|2026-01-01T00:00:00+00:00|0|-2147483649",
        "not-a-uuid|2026-01-01T00:00:00+00:00|0|0",
        f"{tracker}|2026-01-01T00:00:00+00:00|0",
    ]
    for cursor in history_cursors:
        token = tokens.encode(cursor, status_scope("ListStatusHistory", None, None, None))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await status.ListStatusHistory(sq.ListStatusHistoryRequest(page_token=token))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, cursor
        assert bad_request_fields(exc.value) == ["page_token"]
        for granularity, name in [(st.GRANULARITY_RAW, "RAW"), (st.GRANULARITY_AUTO, "AUTO")]:
            scope = status_scope("ListLocationHistory", None, None, None, Granularity[name], 0)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await status.ListLocationHistory(
                    sq.ListLocationHistoryRequest(
                        granularity=granularity, page_token=tokens.encode(cursor, scope)
                    )
                )
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (cursor, name)
    for cursor in ["not-a-uuid", "{" + str(uuid.uuid4()) + "}", str(uuid.uuid4()) + "\x00"]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stack.query.ListClients(
                q.ListClientsRequest(page_token=tokens.encode(cursor, setup_scope("ListClients")))
            )
        assert bad_request_fields(exc.value) == ["page_token"], cursor
        token = tokens.encode(cursor, "tracker.v1.UserQueryService/ListUsers")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stack.user_query.ListUsers(uq.ListUsersRequest(page_token=token))
        assert bad_request_fields(exc.value) == ["page_token"], cursor


# -- undecodable bytes ----------------------------------------------------------------------


@pytest.fixture
async def servers(database_url: str) -> AsyncIterator[tuple[Stack, dict[str, int]]]:
    """Collector, query and health servers of one process, as every process builds them,
    and an administrator calling them."""
    settings = stack_settings(database_url)
    process = Process(
        settings,
        [endpoints.collector(settings), endpoints.query(settings), Endpoint("health", 0)],
    )
    ports = await process.start()
    assert process.reporter is not None
    access = await process.container.access_usecases.async_()
    await access.create_user(
        Principal.system(), NewUser(email=ADMIN_EMAIL, password=ADMIN_PASSWORD, admin=True)
    )
    token, _ = await access.mint_service_token(Principal.system(), ADMIN_EMAIL, timedelta(hours=1))
    stack = connect(ports, token, process.reporter, access, [])
    try:
        yield stack, ports
    finally:
        for channel in stack.channels:
            await channel.close()
        await process.stop(0)


async def send(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, messages: Sequence[bytes]
) -> grpc.aio.AioRpcError | None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming:
            call = (
                channel.stream_stream(path)(timeout=10)
                if method.server_streaming
                else channel.stream_unary(path)(timeout=10)
            )
            for message in messages:
                await call.write(message)
            await call.done_writing()
            if method.server_streaming:
                while await call.read() is not grpc.aio.EOF:
                    pass
                code = await call.code()
                assert code != grpc.StatusCode.OK, path
                raise AssertionError(f"{path}: {code} {await call.details()}")
            await call
        elif method.server_streaming:
            async for _ in channel.unary_stream(path)(messages[0], timeout=10):
                pass
        else:
            await channel.unary_unary(path)(messages[0], timeout=10)
    except grpc.aio.AioRpcError as err:
        return err
    return None


async def test_undecodable_bytes_are_invalid_argument_on_every_rpc_of_every_server(
    servers: tuple[Stack, dict[str, int]],
) -> None:
    """Before: UNKNOWN "Unexpected <class DecodeError>" on unary requests, INTERNAL on
    IngestReports. Now INVALID_ARGUMENT naming the message type, on every method of every
    server (health and reflection on each port included)."""
    stack, ports = servers
    others = [
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ]
    checked = 0
    for service in [*SERVICES, *others]:
        for method in service.methods:
            if service in others:
                channels = [
                    grpc.aio.insecure_channel(f"127.0.0.1:{ports[name]}")
                    for name in ("collector", "query", "health")
                ]
                stack.channels.extend(channels)
            else:
                channels = [channel_for(stack, method)]
            # a client stream: a valid (empty) message first, then the bad bytes
            messages = [b"", UNDECODABLE] if method.client_streaming else [UNDECODABLE]
            for channel in channels:
                err = await send(channel, method, messages)
                assert err is not None, method.full_name
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                    method.full_name,
                    err.code(),
                    err.details(),
                )
                assert f"not a valid {method.input_type.full_name}" in (err.details() or "")
                checked += 1
    assert checked > 50
