"""The one table of gRPC services: each service's generated descriptor, the generated function
that adds a servicer to a server, the container's provider of that servicer, and the
dependencies the service needs to be SERVING. Endpoints, reflection and health all read it.

A new RPC on an existing service needs nothing here; a new service is one row (and a line in
the endpoint that carries it, ``servers/endpoints.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from dependency_injector import providers
from google.protobuf.descriptor import ServiceDescriptor

from servers.container import Core
from tracker.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    detector_query_service_pb2,
    detector_query_service_pb2_grpc,
    detector_service_pb2,
    detector_service_pb2_grpc,
    device_query_service_pb2,
    device_query_service_pb2_grpc,
    device_service_pb2,
    device_service_pb2_grpc,
    event_query_service_pb2,
    event_query_service_pb2_grpc,
    export_query_service_pb2,
    export_query_service_pb2_grpc,
    fetch_query_service_pb2,
    fetch_query_service_pb2_grpc,
    fleet_query_service_pb2,
    fleet_query_service_pb2_grpc,
    job_query_service_pb2,
    job_query_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    key_query_service_pb2,
    key_query_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    processing_query_service_pb2,
    processing_query_service_pb2_grpc,
    processing_service_pb2,
    processing_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
    setup_query_service_pb2,
    setup_query_service_pb2_grpc,
    setup_service_pb2,
    setup_service_pb2_grpc,
    status_query_service_pb2,
    status_query_service_pb2_grpc,
    status_service_pb2,
    status_service_pb2_grpc,
    user_query_service_pb2,
    user_query_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)

# Dependency names: the ``name`` of each health probe (PostgresProbe, RedisProbe).
POSTGRES = "postgres"
REDIS = "redis"
DEPENDENCIES = (POSTGRES, REDIS)
# the query server's read replica (ReplicaRouting), probed only where one is configured
POSTGRES_REPLICA = "postgres_replica"


@dataclass(frozen=True)
class Service:
    """One gRPC service a process may serve."""

    descriptor: ServiceDescriptor
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Callable[[Any], providers.Provider[Any]]
    """The provider of its servicer in a process's container (``servers/container.py``)."""
    needs: tuple[str, ...] = (POSTGRES,)

    @property
    def name(self) -> str:
        return self.descriptor.full_name

    async def register(self, server: grpc.aio.Server, container: Core) -> str:
        """Add the container's servicer to ``server``; returns the full service name."""
        self.add(await self.servicer(container).async_(), server)
        return self.name


def _descriptor(module: Any, name: str) -> ServiceDescriptor:
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return descriptor


SETUP = Service(
    _descriptor(setup_service_pb2, "SetupService"),
    setup_service_pb2_grpc.add_SetupServiceServicer_to_server,
    lambda c: c.setup_servicer,
)
SETUP_QUERY = Service(
    _descriptor(setup_query_service_pb2, "SetupQueryService"),
    setup_query_service_pb2_grpc.add_SetupQueryServiceServicer_to_server,
    lambda c: c.setup_query_servicer,
)
# Sign-in throttling uses Redis when it answers and this process's memory when not.
AUTH = Service(
    _descriptor(auth_service_pb2, "AuthService"),
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server,
    lambda c: c.auth_servicer,
)
USER = Service(
    _descriptor(user_service_pb2, "UserService"),
    user_service_pb2_grpc.add_UserServiceServicer_to_server,
    lambda c: c.user_servicer,
)
USER_QUERY = Service(
    _descriptor(user_query_service_pb2, "UserQueryService"),
    user_query_service_pb2_grpc.add_UserQueryServiceServicer_to_server,
    lambda c: c.user_query_servicer,
)
KEY = Service(
    _descriptor(key_service_pb2, "KeyService"),
    key_service_pb2_grpc.add_KeyServiceServicer_to_server,
    lambda c: c.key_servicer,
)
KEY_QUERY = Service(
    _descriptor(key_query_service_pb2, "KeyQueryService"),
    key_query_service_pb2_grpc.add_KeyQueryServiceServicer_to_server,
    lambda c: c.key_query_servicer,
)
REPORT = Service(
    _descriptor(report_service_pb2, "ReportService"),
    report_service_pb2_grpc.add_ReportServiceServicer_to_server,
    lambda c: c.report_servicer,
)
# The fetch queue lives in Redis: the only service that needs it.
FETCH_QUERY = Service(
    _descriptor(fetch_query_service_pb2, "FetchQueryService"),
    fetch_query_service_pb2_grpc.add_FetchQueryServiceServicer_to_server,
    lambda c: c.fetch_query_servicer,
    needs=(POSTGRES, REDIS),
)
STATUS = Service(
    _descriptor(status_service_pb2, "StatusService"),
    status_service_pb2_grpc.add_StatusServiceServicer_to_server,
    lambda c: c.status_servicer,
)
STATUS_QUERY = Service(
    _descriptor(status_query_service_pb2, "StatusQueryService"),
    status_query_service_pb2_grpc.add_StatusQueryServiceServicer_to_server,
    lambda c: c.status_query_servicer,
)
PROCESSING = Service(
    _descriptor(processing_service_pb2, "ProcessingService"),
    processing_service_pb2_grpc.add_ProcessingServiceServicer_to_server,
    lambda c: c.processing_servicer,
)
PROCESSING_QUERY = Service(
    _descriptor(processing_query_service_pb2, "ProcessingQueryService"),
    processing_query_service_pb2_grpc.add_ProcessingQueryServiceServicer_to_server,
    lambda c: c.processing_query_servicer,
)
DETECTOR = Service(
    _descriptor(detector_service_pb2, "DetectorService"),
    detector_service_pb2_grpc.add_DetectorServiceServicer_to_server,
    lambda c: c.detector_servicer,
)
DETECTOR_QUERY = Service(
    _descriptor(detector_query_service_pb2, "DetectorQueryService"),
    detector_query_service_pb2_grpc.add_DetectorQueryServiceServicer_to_server,
    lambda c: c.detector_query_servicer,
)

JOB = Service(
    _descriptor(job_service_pb2, "JobService"),
    job_service_pb2_grpc.add_JobServiceServicer_to_server,
    lambda c: c.job_servicer,
)
JOB_QUERY = Service(
    _descriptor(job_query_service_pb2, "JobQueryService"),
    job_query_service_pb2_grpc.add_JobQueryServiceServicer_to_server,
    lambda c: c.job_query_servicer,
)
FLEET_QUERY = Service(
    _descriptor(fleet_query_service_pb2, "FleetQueryService"),
    fleet_query_service_pb2_grpc.add_FleetQueryServiceServicer_to_server,
    lambda c: c.fleet_query_servicer,
)
EXPORT_QUERY = Service(
    _descriptor(export_query_service_pb2, "ExportQueryService"),
    export_query_service_pb2_grpc.add_ExportQueryServiceServicer_to_server,
    lambda c: c.export_query_servicer,
)
DEVICE = Service(
    _descriptor(device_service_pb2, "DeviceService"),
    device_service_pb2_grpc.add_DeviceServiceServicer_to_server,
    lambda c: c.device_servicer,
)
DEVICE_QUERY = Service(
    _descriptor(device_query_service_pb2, "DeviceQueryService"),
    device_query_service_pb2_grpc.add_DeviceQueryServiceServicer_to_server,
    lambda c: c.device_query_servicer,
)
WEBHOOK = Service(
    _descriptor(webhook_service_pb2, "WebhookService"),
    webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server,
    lambda c: c.webhook_servicer,
)
EVENT_QUERY = Service(
    _descriptor(event_query_service_pb2, "EventQueryService"),
    event_query_service_pb2_grpc.add_EventQueryServiceServicer_to_server,
    lambda c: c.event_query_servicer,
)

SERVICES: tuple[Service, ...] = (
    SETUP,
    SETUP_QUERY,
    AUTH,
    USER,
    USER_QUERY,
    KEY,
    KEY_QUERY,
    REPORT,
    FETCH_QUERY,
    STATUS,
    STATUS_QUERY,
    PROCESSING,
    PROCESSING_QUERY,
    DETECTOR,
    DETECTOR_QUERY,
    JOB,
    JOB_QUERY,
    FLEET_QUERY,
    EXPORT_QUERY,
    DEVICE,
    DEVICE_QUERY,
    WEBHOOK,
    EVENT_QUERY,
)
"""Every service of the API (a test checks it against the .proto files)."""

# Which endpoint carries which service: mutations on the collector, reads on the query server.
COLLECTOR: tuple[Service, ...] = (
    SETUP,
    AUTH,
    USER,
    KEY,
    REPORT,
    STATUS,
    PROCESSING,
    DETECTOR,
    JOB,
    DEVICE,
    WEBHOOK,
)
QUERY: tuple[Service, ...] = (
    SETUP_QUERY,
    USER_QUERY,
    KEY_QUERY,
    FETCH_QUERY,
    STATUS_QUERY,
    PROCESSING_QUERY,
    DETECTOR_QUERY,
    JOB_QUERY,
    FLEET_QUERY,
    EXPORT_QUERY,
    DEVICE_QUERY,
    EVENT_QUERY,
)


@dataclass(frozen=True)
class Needs:
    """What a process's health follows: ``probed`` are the dependencies it starts and checks,
    ``overall`` those the ``""`` status needs (what every part of the process needs), and
    ``services`` what each served service needs."""

    probed: tuple[str, ...]
    overall: tuple[str, ...]
    services: dict[str, tuple[str, ...]]


def needs_of(services: Sequence[Service], parts: Iterable[Sequence[str]] = ()) -> Needs:
    """A process's needs from the services it serves and its other parts (background tasks,
    a standalone health server): ``""`` needs what every served service needs (a Redis
    outage leaves the query server SERVING, only its FetchQueryService NOT_SERVING) and
    everything the other parts need."""
    overall: set[str] = set()
    if services:
        overall = set.intersection(*(set(s.needs) for s in services))
    for part in parts:
        overall |= set(part)
    probed = overall.union(*(s.needs for s in services))
    order = {d: i for i, d in enumerate(DEPENDENCIES)}
    return Needs(
        probed=tuple(sorted(probed, key=order.__getitem__)),
        overall=tuple(sorted(overall, key=order.__getitem__)),
        services={s.name: s.needs for s in services},
    )


def with_replica(needs: Needs, readers: Sequence[str], required: bool) -> Needs:
    """``needs`` with the read replica probed too; ``required`` (``database_read_fallback
    = not_serving``): ``""`` and the services in ``readers`` need it, else its outage only
    moves the reads to the primary and readiness stays."""
    extra = (POSTGRES_REPLICA,)
    return Needs(
        probed=needs.probed + extra,
        overall=needs.overall + extra if required else needs.overall,
        services={
            name: deps + extra if required and name in readers else deps
            for name, deps in needs.services.items()
        },
    )
