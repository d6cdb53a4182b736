"""Composition root of the all-in-one process for a laptop: collector, query and health, the
fetcher when Find My accounts are configured, and with ``--demo true`` the Find My simulator
with moving demo trackers fetched by the real fetcher (``make run``)."""

from __future__ import annotations

from collections.abc import Sequence

from servers import endpoints
from servers.config import Settings
from servers.container import Container
from servers.demo import Demo
from servers.detector_demo import DetectorDemo
from servers.fetcher import Fetcher
from servers.maintenance import PartitionMaintenance
from servers.runtime import Background, main_for
from servers.travel_times import TravelTimeLoop
from servers.webhooks import WebhookLoop
from servers.worker import JobLoop, OutageLoop, SilenceLoop, WorkerLoop


def background(settings: Settings) -> list[Background]:
    """The demo (simulator + the fetcher on it) or the fetcher when accounts are configured,
    and the processing worker, so statuses follow the reports."""
    tasks: list[Background] = [PartitionMaintenance(settings)]
    if settings.all_in_one.demo:
        tasks.extend([Demo(settings), DetectorDemo(settings)])
    elif settings.findmy.account_file:
        tasks.append(Fetcher(settings))
    if settings.all_in_one.worker_in_process:
        tasks += [
            WorkerLoop(settings),
            TravelTimeLoop(settings),
            JobLoop(settings),
            SilenceLoop(settings),
            OutageLoop(settings),
            WebhookLoop(settings),
        ]
    return tasks


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-server: collector, query and health servers in one process",
        lambda s: [endpoints.collector(s), endpoints.query(s), *endpoints.health(s)],
        argv,
        background,
        process="all_in_one",
        container=Container,
    )


if __name__ == "__main__":
    raise SystemExit(main())
