"""The device part of the laptop demo (``make run``): a gateway type with two processors and
five firmware releases, twelve gateways in three cell towers, and a throttled rollout to the
newest combination (at most two upgrades at once per cell). Simulated gateways check in
every few seconds through the real use cases, take a while to install each step and fail
now and then, so ``GetRollout``/``WatchRollout`` show a rollout moving. Idempotent: a second
start reuses the demo's devices and starts a new rollout only if none is running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass

from domain.access import Principal
from domain.devices import CheckIn, ProfileScope, RolloutPolicy
from domain.errors import AlreadyExists, DomainError, FailedPrecondition
from domain.firmware import (
    Combination,
    CombinationState,
    Release,
    Requirement,
    Version,
    VersionRange,
)
from domain.pagination import PageRequest
from servers.container import Container
from usecases.devices import DeviceInput, ProfileInput, RolloutInput

log = logging.getLogger("tracker.demo")

TYPE_NAME = "Demo Gateway G2"
GATEWAYS = 12
CELLS = 3
START = {"mcu": "1.3.0", "ble": "1.0.0"}
TARGET = {"mcu": "2.0.0", "ble": "2.0.0"}
RELEASES = (
    ("mcu", "1.3.0", ()),
    ("mcu", "1.4.0", ()),
    ("mcu", "2.0.0", (("ble", ">=2"),)),
    ("ble", "1.0.0", (("mcu", "<2"),)),
    ("ble", "2.0.0", (("mcu", ">=1.4"),)),
)


@dataclass
class _Gateway:
    id: uuid.UUID
    versions: Combination
    installing: Combination | None = None
    ticks_left: int = 0
    failed: bool = False


class DeviceFleetDemo:
    def __init__(self, check_in_s: float = 3.0, seed: int = 18) -> None:
        self._period = check_in_s
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None

    async def start(self, container: Container, client_id: uuid.UUID) -> None:
        gateways = await self._seed(container, client_id)
        self._task = asyncio.create_task(self._run(container, gateways), name="demo-devices")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _seed(self, container: Container, client_id: uuid.UUID) -> list[_Gateway]:
        system = Principal.system()
        catalog = await container.devices.catalog.async_()
        devices = await container.devices.devices.async_()
        queries = await container.devices.queries.async_()
        profiles = await container.devices.profiles.async_()
        rollouts = await container.devices.rollouts.async_()
        types = await queries.list_types(system, client_id, PageRequest(size=1000))
        dtype = next((t for t in types.items if t.name == TYPE_NAME), None)
        if dtype is None:
            dtype = await catalog.create_type(system, client_id, TYPE_NAME, ["mcu", "ble"])
            for component, version, requires in RELEASES:
                await catalog.add_release(
                    system,
                    dtype.id,
                    Release(
                        component,
                        Version.parse(version),
                        tuple(Requirement(c, VersionRange.parse(r)) for c, r in requires),
                    ),
                )
            await catalog.derive_combinations(system, dtype.id)
            candidates = await queries.combinations(system, dtype.id, CombinationState.CANDIDATE)
            await catalog.add_combinations(
                system, dtype.id, [c.combination for c in candidates], CombinationState.KNOWN_GOOD
            )
            with contextlib.suppress(AlreadyExists):
                await profiles.create(
                    system,
                    ProfileInput(
                        "Demo gateways",
                        ProfileScope.CLIENT,
                        client_id,
                        dtype.id,
                        {"report_interval_s": "60"},
                        {"wifi_password": "demo-only"},
                        {"firmware": True},
                    ),
                )
            for i in range(GATEWAYS):
                await devices.register(
                    system,
                    DeviceInput(
                        client_id,
                        dtype.id,
                        f"DEMO-GW-{i:02d}",
                        f"cell-{i % CELLS}",
                        versions=Combination.parse(START),
                    ),
                )
        listed = await queries.list_devices(system, client_id, dtype.id, PageRequest(size=1000))
        with contextlib.suppress(FailedPrecondition):  # one is running already
            r = await rollouts.create(
                system,
                RolloutInput(
                    "Demo: gateways to mcu 2 / ble 2",
                    dtype.id,
                    Combination.parse(TARGET),
                    RolloutPolicy(
                        phases=(25.0, 100.0), max_in_flight_per_group=2, min_outcomes=6
                    ).check(),
                ),
            )
            log.info("demo rollout started", extra={"rollout_id": str(r.rollout.id)})
        return [_Gateway(d.id, d.versions or Combination.parse(START)) for d in listed.items]

    async def _run(self, container: Container, gateways: list[_Gateway]) -> None:
        devices = await container.devices.devices.async_()
        system = Principal.system()
        digest: dict[uuid.UUID, str] = {}
        while True:
            for g in gateways:
                if g.installing is not None and g.ticks_left > 0:
                    g.ticks_left -= 1
                    continue
                if g.installing is not None:
                    g.failed = self._rng.random() < 0.05  # a flash write error now and then
                    if not g.failed:
                        g.versions = g.installing
                    g.installing = None
                try:
                    res = await devices.check_in(
                        system,
                        CheckIn(
                            g.id,
                            g.versions,
                            failed_step=g.failed,
                            failure_reason="flash write error" if g.failed else "",
                            health={"battery_v": f"{3.6 + self._rng.random() * 0.5:.2f}"},
                            profile_digest=digest.get(g.id, ""),
                        ),
                    )
                except DomainError as err:  # e.g. the database restarting: try again later
                    log.warning("demo check-in failed", extra={"error": str(err)})
                    continue
                g.failed = False
                digest[g.id] = res.profile.digest
                if res.step is not None:
                    g.installing, g.ticks_left = res.step.result, self._rng.randint(1, 3)
            await asyncio.sleep(self._period)
