"""Undecodable request bytes are INVALID_ARGUMENT on every RPC of every server.

grpc.aio deserializes a request before any interceptor's code runs for the call: a unary
request that does not parse ends as UNKNOWN ("Unexpected <class DecodeError>"), a streamed
one raises inside the servicer (INTERNAL). This interceptor swaps each method handler's
request deserializer for one that never raises: bytes that do not parse become an
``Undecodable`` marker, and the call is aborted with INVALID_ARGUMENT where the marker is
met (before the servicer runs, or at that message of a request stream).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from adapters.grpc.errors import undecodable_status


class Undecodable:
    """Stands for a request message whose bytes did not parse."""

    __slots__ = ("status",)

    def __init__(self, status: grpc.Status) -> None:
        self.status = status


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    message_class = getattr(deserializer, "__self__", None)  # XRequest.FromString
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    status = undecodable_status(_message_name(deserializer))

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, RecursionError, ...: the caller's bytes, not our bug
            return Undecodable(status)

    return deserialize


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await context.abort_with_status(request.status)


async def _checked(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    async for request in requests:
        await _refuse(request, context)
        yield request


def _unary_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _refuse(request, context)
            async for item in behavior(request, context):
                yield item

        return stream_out

    async def unary_out(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(request, context)
        return await behavior(request, context)

    return unary_out


def _stream_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async for item in behavior(_checked(requests, context), context):
                yield item

        return stream_out

    async def unary_out(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        return await behavior(_checked(requests, context), context)

    return unary_out


_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _unary_request),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _unary_request),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _stream_request),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _stream_request),
)


def tolerate_undecodable(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler, answering INVALID_ARGUMENT to request bytes that do not parse."""
    for attr, make, wrap in _KINDS:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return make(
                wrap(behavior),
                _tolerant(handler.request_deserializer),
                handler.response_serializer,
            )
    return handler


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Every method of the server (health and reflection included): bad bytes are
    INVALID_ARGUMENT. Put it last in the chain, so authentication and error mapping wrap it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return None if handler is None else tolerate_undecodable(handler)
