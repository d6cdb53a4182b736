"""Which gRPC services each process serves, on which port."""

from __future__ import annotations

import grpc

from servers.config import Settings
from servers.container import (
    AUTH_SERVICE,
    KEY_QUERY_SERVICE,
    KEY_SERVICE,
    REPORT_SERVICE,
    SETUP_QUERY_SERVICE,
    SETUP_SERVICE,
    USER_QUERY_SERVICE,
    USER_SERVICE,
    Container,
)
from servers.runtime import Endpoint
from tracker.v1 import (
    auth_service_pb2_grpc,
    key_query_service_pb2_grpc,
    key_service_pb2_grpc,
    report_service_pb2_grpc,
    setup_query_service_pb2_grpc,
    setup_service_pb2_grpc,
    user_query_service_pb2_grpc,
    user_service_pb2_grpc,
)


async def setup_service(server: grpc.aio.Server, c: Container) -> str:
    setup_service_pb2_grpc.add_SetupServiceServicer_to_server(
        await c.setup_servicer.async_(), server
    )
    return SETUP_SERVICE


async def setup_query_service(server: grpc.aio.Server, c: Container) -> str:
    setup_query_service_pb2_grpc.add_SetupQueryServiceServicer_to_server(
        await c.setup_query_servicer.async_(), server
    )
    return SETUP_QUERY_SERVICE


async def auth_service(server: grpc.aio.Server, c: Container) -> str:
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(await c.auth_servicer.async_(), server)
    return AUTH_SERVICE


async def user_service(server: grpc.aio.Server, c: Container) -> str:
    user_service_pb2_grpc.add_UserServiceServicer_to_server(await c.user_servicer.async_(), server)
    return USER_SERVICE


async def user_query_service(server: grpc.aio.Server, c: Container) -> str:
    user_query_service_pb2_grpc.add_UserQueryServiceServicer_to_server(
        await c.user_query_servicer.async_(), server
    )
    return USER_QUERY_SERVICE


async def key_service(server: grpc.aio.Server, c: Container) -> str:
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(await c.key_servicer.async_(), server)
    return KEY_SERVICE


async def key_query_service(server: grpc.aio.Server, c: Container) -> str:
    key_query_service_pb2_grpc.add_KeyQueryServiceServicer_to_server(
        await c.key_query_servicer.async_(), server
    )
    return KEY_QUERY_SERVICE


async def report_service(server: grpc.aio.Server, c: Container) -> str:
    report_service_pb2_grpc.add_ReportServiceServicer_to_server(
        await c.report_servicer.async_(), server
    )
    return REPORT_SERVICE


def collector(s: Settings) -> Endpoint:
    return Endpoint(
        "collector",
        s.collector_port,
        [setup_service, auth_service, user_service, key_service, report_service],
    )


def query(s: Settings) -> Endpoint:
    return Endpoint(
        "query", s.query_port, [setup_query_service, user_query_service, key_query_service]
    )


def health(s: Settings) -> list[Endpoint]:
    """Every process also answers health checks on the health port (if not 0)."""
    return [Endpoint("health", s.health_port)] if s.health_port else []
