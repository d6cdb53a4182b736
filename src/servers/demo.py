"""The laptop demo of the all-in-one process (``make run``): our Find My simulator on
loopback, a demo client with a run, a storage and a delivery place and five moving tags, and
the real fetcher (Redis queue, leases, backoff) against the simulator with a short interval,
so a newcomer sees reports arrive within a minute. Idempotent: a second start reuses the demo
client and only sends its tags on a new journey."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from aiohttp import web
from findmy.reports.account import AsyncAppleAccount

from adapters.findmy.source import FindMyLocationSource
from domain.access import Principal
from domain.model import GeoPoint, LocationKind
from domain.pagination import PageRequest
from domain.ports.setup import ClientFilter, ProductionRunFilter, TrackerFilter
from servers.config import Settings
from servers.container import Container
from servers.demo_devices import DeviceFleetDemo
from servers.fetcher import Fetcher
from servers.services import POSTGRES, REDIS
from simulator.server import FETCH_PATH, Simulator, start
from simulator.trajectory import Journey
from usecases.fetching import Account
from usecases.setup import NewBrand, NewClient, NewLocation, NewProductionRun

log = logging.getLogger("tracker.demo")

DEMO_CLIENT = "Demo Apparel"
HAMBURG = (53.5461, 9.9661)  # storage
BERLIN = (52.5219, 13.4132)  # delivery
TAGS = 5


class Demo:
    needs = (POSTGRES, REDIS)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sim = Simulator(keep=50, seed=1)
        self._runner: web.AppRunner | None = None
        self._source: FindMyLocationSource | None = None
        self._fetcher: Fetcher | None = None
        self._devices = DeviceFleetDemo()
        self._client_id: uuid.UUID | None = None

    async def start(self, container: Container) -> None:
        port = self._settings.all_in_one.demo_simulator_port
        self._runner = await start(self._sim, "127.0.0.1", port)
        run_id, tags = await self._seed(container)
        # Ten minutes of history in storage already, leaving one by one a minute from now.
        began = container.clock().now() - timedelta(minutes=10)
        for i, adv in enumerate(tags):
            self._sim.add_journey(
                adv,
                Journey(
                    start=began,
                    storage=HAMBURG,
                    delivery=BERLIN,
                    storage_s=660 + 30 * i,
                    travel_s=300,
                ),
            )
        self._source = FindMyLocationSource(
            AsyncAppleAccount.from_json(self._sim.account_json()),
            container.sealer(),
            fetch_url=self._sim.base_url + FETCH_PATH,
            timeout_s=10,
        )
        self._fetcher = Fetcher(
            self._settings,
            accounts=[Account("demo-simulator", self._source)],
            interval=self._settings.all_in_one.demo_fetch_interval,
            budget_per_hour=0,  # the demo's own simulator, not an Apple account
        )
        await self._fetcher.start(container)
        assert self._client_id is not None
        await self._devices.start(container, self._client_id)
        log.info(
            "demo running",
            extra={
                "simulator": self._sim.base_url,
                "production_run_id": str(run_id),
                "trackers": len(tags),
            },
        )

    async def _seed(self, container: Container) -> tuple[uuid.UUID, list[bytes]]:
        """The demo run's id and its tags' advertisement keys, creating them the first time."""
        system = Principal.system()
        setup = await container.setup_usecases.async_()
        keys = await container.key_usecases.async_()
        clients = await setup.list_clients(system, ClientFilter(), PageRequest(size=1000))
        client = next((c for c in clients.items if c.display_name == DEMO_CLIENT), None)
        if client is not None:
            runs = await setup.list_production_runs(
                system, ProductionRunFilter(client_id=client.id), PageRequest(size=1)
            )
            run = runs.items[0]
        else:
            client = await setup.create_client(system, NewClient(DEMO_CLIENT))
            brand = await setup.create_brand(system, NewBrand(client.id, "Demo Outdoor"))
            now = container.clock().now()
            run = await setup.create_production_run(
                system,
                NewProductionRun(
                    brand.id, "Demo run", now - timedelta(days=1), now + timedelta(days=365)
                ),
            )
            for kind, name, (lat, lon), radius in (
                (LocationKind.STORAGE, "Hamburg warehouse", HAMBURG, 400.0),
                (LocationKind.DELIVERY, "Berlin flagship store", BERLIN, 150.0),
            ):
                await setup.create_location(
                    system, NewLocation(run.id, kind, name, GeoPoint(lat, lon), radius)
                )
            batch = await keys.create_key_batch(system, TAGS, "demo")
            macs = []
            async for chunk in await keys.export_key_batch(system, batch.id, "csv"):
                macs += [
                    line.split(",")[0]
                    for line in chunk.splitlines()
                    if line and not line.startswith("mac_address")
                ]
            await keys.allocate_tags(system, client.id, macs)
            await keys.import_trackers(system, run.id, macs)
        self._client_id = client.id
        trackers = await setup.list_trackers(
            system, TrackerFilter(production_run_id=run.id), PageRequest(size=1000)
        )
        return run.id, [t.advertisement_key.value for t in trackers.items]

    async def stop(self) -> None:
        await self._devices.stop()
        if self._fetcher is not None:
            await self._fetcher.stop()
        if self._source is not None:
            await self._source.close()
        if self._runner is not None:
            await self._runner.cleanup()
