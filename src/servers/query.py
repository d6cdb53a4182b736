"""Composition root of the query server: every read (default port 8000)."""

from __future__ import annotations

from collections.abc import Sequence

from servers import endpoints
from servers.container import QueryContainer
from servers.runtime import main_for


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-query: every read of the system",
        lambda s: [endpoints.query(s), *endpoints.health(s)],
        argv,
        process="query",
        container=QueryContainer,
    )


if __name__ == "__main__":
    raise SystemExit(main())
