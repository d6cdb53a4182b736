"""Wrapping gRPC method handlers in an async context, for server interceptors."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, suppress
from contextvars import ContextVar, Token
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]
"""Entered around every call of the wrapped handler; may raise or abort."""


def _unary(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(context):
            return await behavior(request, context)

    return wrapper


def _stream(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):  # a coroutine writing with context.write
        return _unary(behavior, around)

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(context):
            async for item in behavior(request, context):
                yield item

    return wrapper


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, _unary),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, _unary),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, _stream),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, _stream),
    )
    for attr, make, wrap in kinds:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return make(
                wrap(behavior, around), handler.request_deserializer, handler.response_serializer
            )
    return handler


def reset_var(var: ContextVar[T], token: Token[T]) -> None:
    """Undoes ``var.set`` at the end of a call. A server stream cancelled while waiting to
    send is finalised from another context, where the token does not apply (``ValueError``:
    "created in a different Context"); the call's own context ends with it, so there is
    nothing left to undo there."""
    with suppress(ValueError):
        var.reset(token)
