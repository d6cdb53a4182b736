"""Domain errors mapped once to gRPC status codes, with google.rpc error details."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from adapters.grpc.handlers import wrap_handler
from adapters.postgres.pool import transient_error as postgres_transient
from adapters.redis.queue import transient_error as redis_transient
from domain.errors import (
    Aborted,
    AlreadyExists,
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooManyAttempts,
    TransientError,
    Unauthenticated,
)

log = logging.getLogger(__name__)
DOMAIN = "tracker.v1"
RETRY_AFTER = "retry-after"  # trailer with the seconds to wait, beside google.rpc.RetryInfo


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(max(1, round(seconds * 1000)))
    return info


def to_status(err: DomainError, progress: Mapping[str, str] | None = None) -> grpc.Status:
    """The gRPC status (code, message, details trailer) for a domain error. ``progress``
    (how far a stream got) goes into the ErrorInfo's metadata and plain trailers."""
    details: list[Any] = []
    info: error_details_pb2.ErrorInfo | None = None
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
                        type=err.kind, subject=err.subject, description=err.reason
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
        info = error_details_pb2.ErrorInfo(
            reason="DEPENDENCY_UNAVAILABLE", domain=DOMAIN, metadata={"dependency": err.dependency}
        )
        details.append(_retry_info(err.retry_after_s))
    elif isinstance(err, Aborted):
        code = code_pb2.ABORTED
        info = error_details_pb2.ErrorInfo(
            reason="CONCURRENCY_CONFLICT", domain=DOMAIN, metadata={"dependency": err.dependency}
        )
        details.append(_retry_info(err.retry_after_s))
    else:
        code = code_pb2.FAILED_PRECONDITION
    message = err.public if isinstance(err, AlreadyExists) else str(err)
    return _status(code, message, details, info, progress, trailer)


def _status(
    code: int,
    message: str,
    details: list[Any],
    info: error_details_pb2.ErrorInfo | None,
    progress: Mapping[str, str] | None,
    trailer: tuple[tuple[str, str], ...] = (),
) -> grpc.Status:
    if progress:
        if info is None:
            info = error_details_pb2.ErrorInfo(reason="STREAM_INTERRUPTED", domain=DOMAIN)
        info.metadata.update(progress)
    if info is not None:
        details.insert(0, info)
    status = rpc_status.to_status(
        status_pb2.Status(code=code, message=message, details=[_pack(d) for d in details])
    )
    # Plain trailers as well, for clients that do not decode google.rpc details.
    extra = trailer + tuple(
        (f"tracker-{k.replace('_', '-')}", v) for k, v in (progress or {}).items()
    )
    if extra:
        return _WithTrailers(status.code, status.details, (*status.trailing_metadata, *extra))
    return status


class _WithTrailers(grpc.Status):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[Any, ...]) -> None:
        self.code, self.details, self.trailing_metadata = code, details, trailing


def transient(exc: BaseException) -> TransientError | None:
    """A driver's transient failure that escaped its adapter's translation, as the domain
    error it stands for (so it is never answered INTERNAL)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        err = postgres_transient(cur) or redis_transient(cur)
        if err is not None:
            return err
        cur = cur.__cause__ or cur.__context__
    return None


class StreamInterrupted(Exception):
    """Raised by a client-streaming servicer: ``cause`` ended the stream, after the work
    described by ``progress`` (e.g. ``committed_messages``) was durably done."""

    def __init__(self, cause: Exception, progress: Mapping[str, str]) -> None:
        super().__init__(str(cause))
        self.cause, self.progress = cause, dict(progress)


def undecodable_status(message_type: str) -> grpc.Status:
    """INVALID_ARGUMENT for request bytes that are not a ``message_type`` message."""
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message=f"the request is not a valid {message_type} message (undecodable bytes)",
        details=[
            _pack(
                error_details_pb2.ErrorInfo(
                    reason="UNDECODABLE_REQUEST",
                    domain=DOMAIN,
                    metadata={"message_type": message_type},
                )
            )
        ],
    )
    return rpc_status.to_status(status)


class _Call:
    """Error mapping of one call (its metrics and access line: ``adapters/grpc/telemetry``)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = "OK"

    async def fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            self.code = _code_name(context)
            raise exc
        progress: Mapping[str, str] | None = None
        if isinstance(exc, StreamInterrupted):
            cause, progress = exc.cause, exc.progress
            if isinstance(cause, grpc.aio.AbortError):
                self.code = _code_name(context)
                raise cause
            exc = cause
        if isinstance(exc, DomainError):
            status = to_status(exc, progress)
        elif isinstance(exc, DecodeError):  # a servicer parsing bytes the caller sent
            status = undecodable_status("request")
        elif (err := transient(exc)) is not None:
            log.warning(
                "transient failure",
                extra={"method": self.method, "error": f"{type(exc).__name__}: {exc}"},
            )
            status = to_status(err, progress)
        else:
            log.exception("unhandled error", extra={"method": self.method}, exc_info=exc)
            status = _status(code_pb2.INTERNAL, "internal error", [], None, progress)
        self.code = status.code.name
        await context.abort_with_status(status)


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """For the project's own services: DomainError -> status code with details; anything
    unexpected -> INTERNAL with a logged traceback."""

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

        return wrap_handler(handler, guard)
