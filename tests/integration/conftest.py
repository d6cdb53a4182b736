"""An in-process gRPC stack (collector + query) on ephemeral loopback ports, run by the real
runtime and container against the per-test database and the real Redis, with an
administrator's token attached to every call (``Stack.as_token`` for other callers)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from adapters.grpc.health import HealthReporter
from domain.access import Principal
from domain.errors import AlreadyExists
from servers import endpoints
from servers.config import Settings
from servers.container import Container
from servers.runtime import Process
from tests.conftest import REDIS_URL
from tracker.v1 import (
    auth_service_pb2_grpc,
    setup_query_service_pb2_grpc,
    setup_service_pb2_grpc,
    user_query_service_pb2_grpc,
    user_service_pb2_grpc,
)
from usecases.access import AccessUseCases, NewUser

ADMIN_EMAIL = "root@tracker.test"
ADMIN_PASSWORD = "integration-admin-password"


class _Bearer:
    """Adds ``authorization: Bearer <token>`` to a call's metadata."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if self._token is None:
            return details
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self._token}")]
        return details._replace(metadata=grpc.aio.Metadata(*metadata))


class _BearerUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerServerStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerClientStream(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, it: Any) -> Any:
        return await continuation(self._details(details), it)


def bearer_interceptors(token: str | None) -> list[grpc.aio.ClientInterceptor]:
    """grpc.aio files each interceptor under one kind of call only: one per kind."""
    return [_BearerUnary(token), _BearerServerStream(token), _BearerClientStream(token)]


@dataclass
class Stack:
    setup: setup_service_pb2_grpc.SetupServiceStub
    query: setup_query_service_pb2_grpc.SetupQueryServiceStub
    auth: auth_service_pb2_grpc.AuthServiceStub
    users: user_service_pb2_grpc.UserServiceStub
    user_query: user_query_service_pb2_grpc.UserQueryServiceStub
    health: health_pb2_grpc.HealthStub
    reporter: HealthReporter
    access: AccessUseCases
    ports: dict[str, int]
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    collector_channel: grpc.aio.Channel | None = None
    query_channel: grpc.aio.Channel | None = None
    container: Container | None = None

    def as_token(self, token: str | None) -> Stack:
        """The same servers, called with another bearer token (None: no token)."""
        other = connect(self.ports, token, self.reporter, self.access, self.channels)
        other.container = self.container
        return other

    async def token_for(self, email: str) -> str:
        token, _ = await self.access.mint_service_token(
            Principal.system(), email, timedelta(hours=1)
        )
        return token


def connect(
    ports: dict[str, int],
    token: str | None,
    reporter: HealthReporter,
    access: AccessUseCases,
    channels: list[grpc.aio.Channel],
) -> Stack:
    c, q = (
        grpc.aio.insecure_channel(
            f"127.0.0.1:{ports[name]}", interceptors=bearer_interceptors(token)
        )
        for name in ("collector", "query")
    )
    channels += [c, q]
    return Stack(
        setup_service_pb2_grpc.SetupServiceStub(c),
        setup_query_service_pb2_grpc.SetupQueryServiceStub(q),
        auth_service_pb2_grpc.AuthServiceStub(c),
        user_service_pb2_grpc.UserServiceStub(c),
        user_query_service_pb2_grpc.UserQueryServiceStub(q),
        health_pb2_grpc.HealthStub(q),
        reporter,
        access,
        ports,
        channels,
        c,
        q,
    )


@pytest.fixture
async def stack_for() -> AsyncIterator[Callable[[Settings], Awaitable[Stack]]]:
    """Start a stack for given settings, with an admin; everything stops with the test."""
    started: list[tuple[Process, Stack]] = []

    async def start(settings: Settings) -> Stack:
        process = Process(settings, [endpoints.collector(settings), endpoints.query(settings)])
        ports = await process.start()
        assert process.reporter is not None
        access: AccessUseCases = await process.container.access_usecases.async_()
        with contextlib.suppress(AlreadyExists):  # a second stack on the same database
            await access.create_user(
                Principal.system(),
                NewUser(email=ADMIN_EMAIL, password=ADMIN_PASSWORD, admin=True),
            )
        token, _ = await access.mint_service_token(
            Principal.system(), ADMIN_EMAIL, timedelta(hours=1)
        )
        admin = connect(ports, token, process.reporter, access, [])
        admin.container = process.container
        started.append((process, admin))
        return admin

    yield start
    for process, stack in started:
        for ch in stack.channels:
            await ch.close()
        await process.stop(0)


def stack_settings(database_url: str, redis_url: str = REDIS_URL, **kw: Any) -> Settings:
    # Sign-in counts of one test's stack are its own (tests share one Redis database).
    kw.setdefault("login_throttle_prefix", f"login-{uuid.uuid4().hex[:12]}")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        collector_port=0,
        query_port=0,
        health_port=0,
        metrics_port=0,
        health_check_interval_s=0.2,
        **kw,
    )


@pytest.fixture
async def stack(database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]) -> Stack:
    return await stack_for(stack_settings(database_url))
