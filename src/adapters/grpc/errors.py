"""Domain errors mapped once to gRPC status codes, with google.rpc error details."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from adapters.grpc.handlers import wrap_handler
from adapters.prometheus import RPC_LATENCY, RPC_REQUESTS
from domain.errors import (
    AlreadyExists,
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooManyAttempts,
    Unauthenticated,
)

log = logging.getLogger(__name__)
DOMAIN = "tracker.v1"
RETRY_AFTER = "retry-after"  # trailer with the seconds to wait, beside google.rpc.RetryInfo


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(err: DomainError) -> grpc.Status:
    """The gRPC status (code, message, details trailer) for a domain error."""
    details: list[Any] = []
    trailer: tuple[tuple[str, str], ...] = ()
    if isinstance(err, InvalidArgument):
        code = code_pb2.INVALID_ARGUMENT
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.reason)
                    for v in err.violations
                ]
            )
        )
    elif isinstance(err, NotFound):
        code = code_pb2.NOT_FOUND
        details.append(
            error_details_pb2.ResourceInfo(resource_type=err.kind, resource_name=err.ident)
        )
    elif isinstance(err, AlreadyExists):
        # Only the field: the value may belong to another client, whose data is not told.
        code = code_pb2.ALREADY_EXISTS
        details.append(
            error_details_pb2.ResourceInfo(resource_type=err.kind, description=err.public)
        )
    elif isinstance(err, FailedPrecondition):
        code = code_pb2.FAILED_PRECONDITION
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type="DEPENDENTS_EXIST", subject=err.subject, description=err.reason
                    )
                ]
            )
        )
    elif isinstance(err, TooManyAttempts):
        code = code_pb2.RESOURCE_EXHAUSTED
        delay = duration_pb2.Duration(seconds=err.retry_after_s)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        trailer = ((RETRY_AFTER, str(err.retry_after_s)),)
    elif isinstance(err, PermissionDenied):
        code = code_pb2.PERMISSION_DENIED
    elif isinstance(err, Unauthenticated):
        code = code_pb2.UNAUTHENTICATED
    elif isinstance(err, DependencyUnavailable):
        code = code_pb2.UNAVAILABLE
        details.append(
            error_details_pb2.ErrorInfo(
                reason="DEPENDENCY_UNAVAILABLE",
                domain=DOMAIN,
                metadata={"dependency": err.dependency},
            )
        )
    else:
        code = code_pb2.FAILED_PRECONDITION
    message = err.public if isinstance(err, AlreadyExists) else str(err)
    status = status_pb2.Status(code=code, message=message, details=[_pack(d) for d in details])
    converted = rpc_status.to_status(status)
    if trailer:
        converted = converted._replace(trailing_metadata=converted.trailing_metadata + trailer)
    return converted


class _Call:
    """Bookkeeping of one call: maps errors, logs one access line."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.code = "OK"

    async def fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            self.code = _code_name(context)
            raise exc
        if isinstance(exc, DomainError):
            status = to_status(exc)
        else:
            log.exception("unhandled error", extra={"method": self.method})
            status = rpc_status.to_status(
                status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
            )
        self.code = status.code.name
        await context.abort_with_status(status)

    def done(self) -> None:
        elapsed = time.perf_counter() - self.started
        RPC_REQUESTS.labels(self.method, self.code).inc()
        RPC_LATENCY.labels(self.method).observe(elapsed)
        log.info(
            "rpc",
            extra={
                "method": self.method,
                "code": self.code,
                "duration_ms": round((time.perf_counter() - self.started) * 1e3, 2),
            },
        )


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """For the project's own services: DomainError -> status code with details; anything
    unexpected -> INTERNAL with a logged traceback; one structured access-log line per call."""

    def __init__(self, package_prefix: str = "/tracker.") -> None:
        self._prefix = package_prefix

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler

        @asynccontextmanager
        async def guard(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            call = _Call(method)
            try:
                yield
            except Exception as exc:
                await call.fail(context, exc)
            finally:
                call.done()

        return wrap_handler(handler, guard)
