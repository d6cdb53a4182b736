"""Which gRPC services each process serves, on which port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from servers.config import Settings
from servers.container import (
    AUTH_SERVICE,
    FETCH_QUERY_SERVICE,
    KEY_QUERY_SERVICE,
    KEY_SERVICE,
    PROCESSING_QUERY_SERVICE,
    PROCESSING_SERVICE,
    REPORT_SERVICE,
    SETUP_QUERY_SERVICE,
    SETUP_SERVICE,
    STATUS_QUERY_SERVICE,
    STATUS_SERVICE,
    USER_QUERY_SERVICE,
    USER_SERVICE,
    Container,
)
from servers.runtime import Endpoint, Registrar
from tracker.v1 import (
    auth_service_pb2_grpc,
    fetch_query_service_pb2_grpc,
    key_query_service_pb2_grpc,
    key_service_pb2_grpc,
    processing_query_service_pb2_grpc,
    processing_service_pb2_grpc,
    report_service_pb2_grpc,
    setup_query_service_pb2_grpc,
    setup_service_pb2_grpc,
    status_query_service_pb2_grpc,
    status_service_pb2_grpc,
    user_query_service_pb2_grpc,
    user_service_pb2_grpc,
)


def _service(add: Callable[[Any, grpc.aio.Server], None], servicer: str, name: str) -> Registrar:
    """A registrar adding the container's ``servicer`` with the generated ``add`` function."""

    async def register(server: grpc.aio.Server, c: Container) -> str:
        add(await getattr(c, servicer).async_(), server)
        return name

    return register


setup_service = _service(
    setup_service_pb2_grpc.add_SetupServiceServicer_to_server, "setup_servicer", SETUP_SERVICE
)
setup_query_service = _service(
    setup_query_service_pb2_grpc.add_SetupQueryServiceServicer_to_server,
    "setup_query_servicer",
    SETUP_QUERY_SERVICE,
)
auth_service = _service(
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server, "auth_servicer", AUTH_SERVICE
)
user_service = _service(
    user_service_pb2_grpc.add_UserServiceServicer_to_server, "user_servicer", USER_SERVICE
)
user_query_service = _service(
    user_query_service_pb2_grpc.add_UserQueryServiceServicer_to_server,
    "user_query_servicer",
    USER_QUERY_SERVICE,
)
key_service = _service(
    key_service_pb2_grpc.add_KeyServiceServicer_to_server, "key_servicer", KEY_SERVICE
)
key_query_service = _service(
    key_query_service_pb2_grpc.add_KeyQueryServiceServicer_to_server,
    "key_query_servicer",
    KEY_QUERY_SERVICE,
)
report_service = _service(
    report_service_pb2_grpc.add_ReportServiceServicer_to_server, "report_servicer", REPORT_SERVICE
)
fetch_query_service = _service(
    fetch_query_service_pb2_grpc.add_FetchQueryServiceServicer_to_server,
    "fetch_query_servicer",
    FETCH_QUERY_SERVICE,
)

# processing (issue 6)
status_query_service = _service(
    status_query_service_pb2_grpc.add_StatusQueryServiceServicer_to_server,
    "status_query_servicer",
    STATUS_QUERY_SERVICE,
)
status_service = _service(
    status_service_pb2_grpc.add_StatusServiceServicer_to_server, "status_servicer", STATUS_SERVICE
)


# the worker's operator API (issue 10)
processing_query_service = _service(
    processing_query_service_pb2_grpc.add_ProcessingQueryServiceServicer_to_server,
    "processing_query_servicer",
    PROCESSING_QUERY_SERVICE,
)
processing_service = _service(
    processing_service_pb2_grpc.add_ProcessingServiceServicer_to_server,
    "processing_servicer",
    PROCESSING_SERVICE,
)


def collector(s: Settings) -> Endpoint:
    return Endpoint(
        "collector",
        s.collector_port,
        [
            setup_service,
            auth_service,
            user_service,
            key_service,
            report_service,
            status_service,
            processing_service,
        ],
    )


def query(s: Settings) -> Endpoint:
    return Endpoint(
        "query",
        s.query_port,
        [
            setup_query_service,
            user_query_service,
            key_query_service,
            fetch_query_service,
            status_query_service,
            processing_query_service,
        ],
    )


def health(s: Settings) -> list[Endpoint]:
    """Every process also answers health checks on the health port (if not 0)."""
    return [Endpoint("health", s.health_port)] if s.health_port else []
