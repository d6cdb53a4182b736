"""Idempotent creates at the edge: every unary RPC whose request has a ``request_id`` field
(found in the descriptors, so a new create RPC with one is covered without code) runs through
``usecases.idempotency.IdempotentCreates`` when the field is set.

The key's scope is the authenticated caller and the RPC: one user's request_id never meets
another user's. The fingerprint is the SHA-256 of the request without its request_id,
serialized deterministically; the kept response is the serialized response message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.message import Message

from adapters.grpc.auth import caller
from domain.idempotency import IdempotencyKey
from usecases.idempotency import IdempotentCreates

REQUEST_ID = "request_id"


def idempotent_method(
    method: str, pool: descriptor_pool.DescriptorPool | None = None
) -> descriptor.MethodDescriptor | None:
    """The descriptor of ``/pkg.Service/Method`` if it is unary and its request carries a
    string ``request_id``; else None."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        found = (pool or descriptor_pool.Default()).FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    field = found.input_type.fields_by_name.get(REQUEST_ID)
    if found.client_streaming or found.server_streaming or field is None:
        return None
    return found if field.type == field.TYPE_STRING else None


def fingerprint(request: Message) -> bytes:
    """What makes two requests the same one, request_id aside."""
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField(REQUEST_ID)
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).digest()


class IdempotencyInterceptor(grpc.aio.ServerInterceptor):
    """Placed after authentication (it needs the caller) and around the servicer."""

    def __init__(self, creates: IdempotentCreates) -> None:
        self._creates = creates
        self._methods: dict[str, descriptor.MethodDescriptor | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        if method not in self._methods:  # only methods the server has: a small, fixed set
            self._methods[method] = idempotent_method(method)
        found = self._methods[method]
        if found is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        response_type = message_factory.GetMessageClass(found.output_type)
        creates = self._creates

        async def once(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # (an undecodable request is not a message: the inner handler refuses it)
            request_id = getattr(request, REQUEST_ID, "")
            if not request_id:
                return await behavior(request, context)
            key = IdempotencyKey(f"user:{caller().user_id}|{method}", request_id)
            return await creates.run(
                key,
                fingerprint(request),
                lambda: behavior(request, context),
                encode=lambda response: response.SerializeToString(),
                decode=response_type.FromString,
            )

        return grpc.unary_unary_rpc_method_handler(
            once, handler.request_deserializer, handler.response_serializer
        )
