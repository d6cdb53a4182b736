"""Composition root of the all-in-one process for a laptop: collector, query and health, and
with ``--demo true`` the Find My simulator with moving demo trackers (``make run``)."""

from __future__ import annotations

from collections.abc import Sequence

from servers import endpoints
from servers.config import Settings
from servers.demo import Demo
from servers.runtime import Background, main_for
from servers.worker import WorkerLoop


def background(settings: Settings) -> list[Background]:
    tasks: list[Background] = [Demo(settings)] if settings.demo else []
    if settings.worker_in_process:  # processing (issue 6): statuses follow the reports
        tasks.append(WorkerLoop(settings))
    return tasks


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-server: collector, query and health servers in one process",
        lambda s: [endpoints.collector(s), endpoints.query(s), *endpoints.health(s)],
        argv,
        background,
    )


if __name__ == "__main__":
    raise SystemExit(main())
