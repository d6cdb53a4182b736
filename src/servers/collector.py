"""Composition root of the collector: every mutation (default port 9000)."""

from __future__ import annotations

from collections.abc import Sequence

from servers import endpoints
from servers.container import CollectorContainer
from servers.maintenance import PartitionMaintenance
from servers.runtime import main_for


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-collector: every mutation of the system",
        lambda s: [endpoints.collector(s), *endpoints.health(s)],
        argv,
        lambda s: [PartitionMaintenance(s)],
        process="collector",
        container=CollectorContainer,
    )


if __name__ == "__main__":
    raise SystemExit(main())
