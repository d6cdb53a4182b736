"""Composition root of the all-in-one process for a laptop: collector, query and health."""

from __future__ import annotations

from collections.abc import Sequence

from servers import endpoints
from servers.runtime import main_for


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-server: collector, query and health servers in one process",
        lambda s: [endpoints.collector(s), endpoints.query(s), *endpoints.health(s)],
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
