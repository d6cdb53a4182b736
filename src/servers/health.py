"""Composition root of the standalone health server (default port 5000)."""

from __future__ import annotations

from collections.abc import Sequence

from servers import endpoints
from servers.container import HealthContainer
from servers.runtime import main_for


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-health: grpc.health.v1 from live PostgreSQL and Redis checks",
        endpoints.standalone_health,
        argv,
        process="health",
        container=HealthContainer,
    )


if __name__ == "__main__":
    raise SystemExit(main())
