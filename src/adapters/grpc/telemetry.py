"""What every call of our gRPC API leaves behind, one concern per interceptor: the standard
Prometheus gRPC server metrics, and the access log.

``CallInfo`` is what the log lines of a call carry (method, caller, trace id); the access-log
interceptor opens it, the auth interceptor names the caller in it, and the log formatter
(``servers/log.py``) reads it for every line written while the call runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import grpc

from adapters.grpc.handlers import reset_var, wrap_handler
from adapters.prometheus import RpcMetrics

log = logging.getLogger("tracker.access")

OWN_PREFIX = "/tracker."


@dataclass(slots=True)
class CallInfo:
    """The call a log line is written in: the method, and once authenticated, the caller."""

    method: str
    user_id: str | None = None
    client_ids: str | None = None  # the caller's clients, comma-separated ("*": admin)
    traceparent: str | None = None  # as the caller sent it (when we do not trace ourselves)
    call_id: str = ""  # the trace id of the lines when no span is recording: the caller's, or new

    def __post_init__(self) -> None:
        if not self.call_id:
            parts = (self.traceparent or "").split("-")
            ok = len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32
            self.call_id = parts[1] if ok else os.urandom(16).hex()


_call: ContextVar[CallInfo | None] = ContextVar("call", default=None)


def current_call() -> CallInfo | None:
    return _call.get()


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    """The ``grpc_type`` label: unary, client_stream, server_stream or bidi_stream."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def split_method(full: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service, method


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """``grpc_server_started_total``, ``grpc_server_handled_total`` and
    ``grpc_server_handling_seconds`` for every call (the Prometheus gRPC conventions)."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        kind = rpc_type(handler)
        service, method = split_method(handler_call_details.method)
        metrics = self._metrics

        @asynccontextmanager
        async def measured(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            metrics.started(kind, service, method)
            started = time.perf_counter()
            failure: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                failure = exc
                raise
            finally:
                code = _code(context, failure)
                metrics.handled(kind, service, method, code.name, time.perf_counter() - started)

        return wrap_handler(handler, measured)


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """One access line per call of our own API: failed calls always (WARNING for the
    server's faults, INFO for the caller's), successful ones at DEBUG, and besides a
    ``sample`` fraction of them at INFO (0: none; 1: every call, as before issue 15)."""

    SERVER_FAULTS = frozenset(
        {
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DATA_LOSS,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNIMPLEMENTED,
        }
    )

    def __init__(self, sample: float = 0.0, prefix: str = OWN_PREFIX) -> None:
        self._sample, self._prefix = sample, prefix

    def _level(self, code: grpc.StatusCode) -> int:
        if code in self.SERVER_FAULTS:
            return logging.WARNING
        if code is not grpc.StatusCode.OK:
            return logging.INFO
        if self._sample and (self._sample >= 1 or random.random() < self._sample):
            return logging.INFO
        return logging.DEBUG

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or not full.startswith(self._prefix):
            return handler
        incoming = dict(handler_call_details.invocation_metadata or ()).get("traceparent")

        @asynccontextmanager
        async def logged(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            info = CallInfo(full, traceparent=incoming if isinstance(incoming, str) else None)
            reset = _call.set(info)
            started = time.perf_counter()
            failure: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                failure = exc
                raise
            finally:
                code = _code(context, failure)
                level = self._level(code)
                if log.isEnabledFor(level):
                    log.log(
                        level,
                        "rpc",
                        extra={
                            "code": code.name,
                            "duration_ms": round((time.perf_counter() - started) * 1e3, 2),
                        },
                    )
                reset_var(_call, reset)

        return wrap_handler(handler, logged)
