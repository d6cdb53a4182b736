"""Ports of the devices capability: device types and their firmware, configuration
profiles, devices, and rollouts."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.devices import (
    Device,
    DeviceProfile,
    DeviceRolloutState,
    PhaseCounts,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from domain.firmware import Combination, CombinationState, DeviceType, Release
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.ports.setup import LocationRepository, ProductionRunRepository


@dataclass(frozen=True, slots=True)
class Visible:
    """The tenant restriction of a list: only rows of these clients (None: every client)."""

    clients: frozenset[uuid.UUID] | None = None
    client_id: uuid.UUID | None = None


class DeviceTypeRepository(Protocol):
    async def add(self, t: DeviceType) -> None:
        """AlreadyExists on a name the client already uses."""
        ...

    async def get(self, type_id: uuid.UUID) -> DeviceType: ...

    async def list(self, visible: Visible, page: PageRequest) -> Page[DeviceType]: ...


@dataclass(frozen=True, slots=True)
class StoredCombination:
    combination: Combination
    state: CombinationState
    update_time: datetime


class FirmwareRepository(Protocol):
    async def add_release(self, type_id: uuid.UUID, release: Release, notes: str) -> None:
        """AlreadyExists when the component already has this version."""
        ...

    async def releases(self, type_id: uuid.UUID) -> list[Release]: ...

    async def set_combinations(
        self,
        type_id: uuid.UUID,
        combos: Sequence[Combination],
        state: CombinationState,
        only_new: bool,
        now: datetime,
    ) -> int:
        """Store combinations in ``state`` (``only_new``: leave existing ones as they are);
        returns how many rows changed."""
        ...

    async def combinations(
        self, type_id: uuid.UUID, state: CombinationState | None
    ) -> list[StoredCombination]: ...


class DeviceProfileRepository(Protocol):
    async def add(self, p: DeviceProfile) -> None:
        """AlreadyExists when the scope already has a profile for this device type."""
        ...

    async def get(self, profile_id: uuid.UUID) -> DeviceProfile: ...

    async def update(self, p: DeviceProfile) -> None: ...

    async def applicable(
        self,
        client_id: uuid.UUID,
        production_run_id: uuid.UUID | None,
        location_id: uuid.UUID | None,
    ) -> list[DeviceProfile]:
        """The profiles of the client, the run and the location (any device type)."""
        ...

    async def list(self, visible: Visible, page: PageRequest) -> Page[DeviceProfile]: ...


@dataclass(frozen=True, slots=True)
class DeviceSelection:
    """Which devices a rollout targets: all of one type of one client, narrowed by any of
    production runs, groups, or explicit ids."""

    client_id: uuid.UUID
    device_type_id: uuid.UUID
    production_run_ids: frozenset[uuid.UUID] = frozenset()
    group_keys: frozenset[str] = frozenset()
    device_ids: frozenset[uuid.UUID] = frozenset()


class DeviceRepository(Protocol):
    async def add(self, d: Device) -> None:
        """AlreadyExists when the client already has a device with this serial."""
        ...

    async def get(self, device_id: uuid.UUID, *, for_update: bool = False) -> Device: ...

    async def update(self, d: Device) -> None: ...

    async def list(
        self, visible: Visible, device_type_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Device]: ...

    async def select(self, s: DeviceSelection) -> builtins.list[tuple[uuid.UUID, str]]:
        """(id, group key) of every selected device."""
        ...


@dataclass(frozen=True, slots=True)
class RolloutFilter:
    visible: Visible
    state: RolloutState | None = None


class RolloutRepository(Protocol):
    async def add(self, r: Rollout, devices: Sequence[RolloutDevice]) -> None: ...

    async def get(self, rollout_id: uuid.UUID, *, for_update: bool = False) -> Rollout: ...

    async def update(self, r: Rollout) -> None: ...

    async def list(self, f: RolloutFilter, page: PageRequest) -> Page[Rollout]: ...

    async def active_devices(self, device_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Those of ``device_ids`` already in a RUNNING or PAUSED rollout."""
        ...

    async def of_device(self, device_id: uuid.UUID) -> RolloutDevice | None:
        """The device's record in its RUNNING or PAUSED rollout (at most one), locked."""
        ...

    async def save_device(self, rd: RolloutDevice) -> None: ...

    async def phase_counts(self, rollout_id: uuid.UUID, percent: float) -> PhaseCounts: ...

    async def acquire_slot(self, rollout_id: uuid.UUID, group_key: str, limit: int) -> bool:
        """Take one of the group's ``limit`` concurrent upgrade slots (0: no limit)."""
        ...

    async def release_slot(self, rollout_id: uuid.UUID, group_key: str) -> None: ...

    async def expired(
        self, rollout_id: uuid.UUID, before: datetime
    ) -> builtins.list[RolloutDevice]:
        """IN_PROGRESS records whose step was sent before ``before``, locked."""
        ...

    async def device_counts(self, rollout_id: uuid.UUID) -> dict[DeviceRolloutState, int]: ...

    async def devices(
        self,
        rollout_id: uuid.UUID | None,
        visible: Visible,
        state: DeviceRolloutState | None,
        page: PageRequest,
    ) -> Page[RolloutDevice]:
        """Records of one rollout (or of every visible one), ordered by rollout then device;
        the page cursor is ``"<rollout id>|<device id>"``."""
        ...


class DevicesUnitOfWork(Transaction, Protocol):
    device_types: DeviceTypeRepository
    firmware: FirmwareRepository
    device_profiles: DeviceProfileRepository
    devices: DeviceRepository
    rollouts: RolloutRepository
    production_runs: ProductionRunRepository
    locations: LocationRepository
