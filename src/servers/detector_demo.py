"""The detectors part of the laptop demo (``make run``): a few detectors of the demo client
along a road in Berlin, linked both ways, fed by the traffic simulator (half an hour of
history at start, then live, every few seconds), so the travel-time worker has something to
compute and ``StreamDetectorEvents``/``StreamTravelTimes`` show it arriving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta

from domain.access import Principal
from domain.detectors import Radio
from domain.model import GeoPoint
from domain.pagination import PageRequest
from domain.ports.setup import ClientFilter
from domain.reports import to_us
from servers.config import Settings
from servers.container import Container
from servers.demo import DEMO_CLIENT
from servers.services import POSTGRES
from simulator.traffic import RoadGraph, Traffic, simulate
from usecases.detectors import NewDetector
from usecases.setup import NewClient
from usecases.sightings import IncomingSightings

log = logging.getLogger("tracker.demo.detectors")

DETECTORS = 4
HISTORY = timedelta(minutes=30)
HOURS = 3.0
FEED_S = 5.0
BATCH = 5000


class DetectorDemo:
    needs = (POSTGRES,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self, container: Container) -> None:
        ids = await self._seed(container)
        graph = RoadGraph.corridor(DETECTORS)
        began = container.clock().now() - HISTORY
        day_s = (began - began.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        traffic = simulate(graph, HOURS, 240, day_s, seed=int(began.timestamp()))
        self._task = asyncio.create_task(self._feed(container, ids, traffic, began))
        log.info("detector demo running", extra={"detectors": len(ids), "links": len(graph.links)})

    async def _seed(self, container: Container) -> list[uuid.UUID]:
        """The demo detectors (and their links), created the first time."""
        system = Principal.system()
        setup = await container.setup_usecases.async_()
        admin = await container.detectors.admin.async_()
        queries = await container.detectors.queries.async_()
        clients = await setup.list_clients(system, ClientFilter(), PageRequest(size=1000))
        client = next((c for c in clients.items if c.display_name == DEMO_CLIENT), None)
        if client is None:
            client = await setup.create_client(system, NewClient(DEMO_CLIENT))
        existing = await queries.list(system, client.id, PageRequest(size=100))
        found = {d.display_name: d.id for d in existing.items}
        graph = RoadGraph.corridor(DETECTORS)
        ids = []
        for n, (lat, lon) in enumerate(graph.positions):
            name = f"Demo road detector {n + 1}"
            if name not in found:
                made = await admin.create(
                    system,
                    NewDetector(client.id, name, GeoPoint(lat, lon), (Radio.BLUETOOTH,), 50.0),
                )
                found[name] = made.id
            ids.append(found[name])
        links = await queries.list_links(system, None, PageRequest(size=1000))
        have = {(x.destination_id, x.source_id) for x in links.items}
        for link in graph.links:
            key = (ids[link.destination], ids[link.source])
            if key not in have:
                await admin.create_link(system, *key, link.max_s)
        return ids

    async def _feed(
        self, container: Container, ids: list[uuid.UUID], traffic: Traffic, began: datetime
    ) -> None:
        """Every FEED_S, the sightings whose time has come."""
        ingest = await container.detectors.ingest.async_()
        pending = {
            det: sorted(items, key=lambda x: x[1]) for det, items in traffic.sightings.items()
        }
        sent = dict.fromkeys(pending, 0)
        while any(sent[d] < len(pending[d]) for d in pending):
            now_s = (container.clock().now() - began).total_seconds()
            for det, items in pending.items():
                k = sent[det]
                while k < len(items) and items[k][1] <= now_s:
                    chunk = [x for x in items[k : k + BATCH] if x[1] <= now_s]
                    msg = IncomingSightings(
                        str(ids[det]),
                        [to_us(began + timedelta(seconds=t)) for _, t, _ in chunk],
                        [device for device, _, _ in chunk],
                        [b""] * len(chunk),
                        [rssi for _, _, rssi in chunk],
                        [int(Radio.BLUETOOTH)] * len(chunk),
                    )
                    try:
                        await ingest(Principal.system(), msg)
                    except Exception:
                        log.exception("detector demo: ingest failed")
                        break
                    k += len(chunk)
                sent[det] = k
            await asyncio.sleep(FEED_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
