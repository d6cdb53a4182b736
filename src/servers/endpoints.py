"""Which gRPC services each process serves, on which port (the table: servers/services.py)."""

from __future__ import annotations

from servers.config import Settings
from servers.runtime import Endpoint
from servers.services import COLLECTOR, DEPENDENCIES, QUERY


def collector(s: Settings) -> Endpoint:
    return Endpoint("collector", s.collector.port, COLLECTOR)


def query(s: Settings) -> Endpoint:
    return Endpoint("query", s.query.port, QUERY)


def health(s: Settings) -> list[Endpoint]:
    """Every process also answers health checks on the health port (if not 0)."""
    return [Endpoint("health", s.server.health_port)] if s.server.health_port else []


def standalone_health(s: Settings) -> list[Endpoint]:
    """The standalone health server (``tracker-health``): it reports on every dependency."""
    return [Endpoint("health", s.server.health_port, needs=DEPENDENCIES)]
