"""Which gRPC services each process serves, on which port."""

from __future__ import annotations

import grpc

from servers.config import Settings
from servers.container import SETUP_QUERY_SERVICE, SETUP_SERVICE, Container
from servers.runtime import Endpoint
from tracker.v1 import setup_query_service_pb2_grpc, setup_service_pb2_grpc


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


def collector(s: Settings) -> Endpoint:
    return Endpoint("collector", s.collector_port, [setup_service])


def query(s: Settings) -> Endpoint:
    return Endpoint("query", s.query_port, [setup_query_service])


def health(s: Settings) -> list[Endpoint]:
    """Every process also answers health checks on the health port (if not 0)."""
    return [Endpoint("health", s.health_port)] if s.health_port else []
