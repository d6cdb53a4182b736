"""The handler wrapping that turns undecodable request bytes into INVALID_ARGUMENT, driven
without a server (the integration tests send the bytes over a real channel)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from adapters.grpc.decoding import Undecodable, UndecodableRequestInterceptor
from adapters.grpc.errors import DomainErrorInterceptor
from tracker.v1 import setup_query_service_pb2 as q


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.status: grpc.Status | None = None

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise Aborted

    def code(self) -> Any:
        return self.status.code if self.status else None


class Details:
    method = "/tracker.v1.SetupQueryService/GetClient"
    invocation_metadata = ()


async def intercepted(handler: grpc.RpcMethodHandler, *interceptors: Any) -> Any:
    async def continuation(_: Any) -> grpc.RpcMethodHandler:
        return handler

    for interceptor in interceptors:
        inner = continuation

        async def continuation(d: Any, i: Any = interceptor, nxt: Any = inner) -> Any:
            return await i.intercept_service(nxt, d)

    return await continuation(Details())


async def test_undecodable_unary_request_never_reaches_the_servicer() -> None:
    reached = []

    async def behavior(request: Any, context: Any) -> Any:
        reached.append(request)
        return request

    handler = grpc.unary_unary_rpc_method_handler(behavior, q.GetClientRequest.FromString)
    wrapped = await intercepted(handler, UndecodableRequestInterceptor())
    request = wrapped.request_deserializer(b"\xff\xff\xff")
    assert isinstance(request, Undecodable)
    context = FakeContext()
    with pytest.raises(Aborted):
        await wrapped.unary_unary(request, context)
    assert reached == []
    assert context.status is not None
    assert context.status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tracker.v1.GetClientRequest" in context.status.details
    good = wrapped.request_deserializer(q.GetClientRequest(id="x").SerializeToString())
    assert await wrapped.unary_unary(good, FakeContext()) == q.GetClientRequest(id="x")


async def test_a_client_stream_is_aborted_at_the_undecodable_message() -> None:
    seen = []

    async def behavior(requests: AsyncIterator[Any], context: Any) -> int:
        async for r in requests:
            seen.append(r)
        return len(seen)

    handler = grpc.stream_unary_rpc_method_handler(behavior, q.GetClientRequest.FromString)
    wrapped = await intercepted(handler, UndecodableRequestInterceptor())

    async def messages() -> AsyncIterator[Any]:
        for raw in (q.GetClientRequest(id="a").SerializeToString(), b"\xff", b""):
            yield wrapped.request_deserializer(raw)

    context = FakeContext()
    with pytest.raises(Aborted):
        await wrapped.stream_unary(messages(), context)
    assert seen == [q.GetClientRequest(id="a")]
    assert context.status is not None
    assert context.status.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_decode_error_inside_a_servicer_is_invalid_argument_not_internal() -> None:
    async def behavior(request: Any, context: Any) -> Any:
        raise DecodeError("Error parsing message")

    handler = grpc.unary_unary_rpc_method_handler(behavior, q.GetClientRequest.FromString)
    wrapped = await intercepted(handler, DomainErrorInterceptor())
    context = FakeContext()
    with pytest.raises(Aborted):
        await wrapped.unary_unary(q.GetClientRequest(), context)
    assert context.status is not None
    assert context.status.code == grpc.StatusCode.INVALID_ARGUMENT
