"""Setting up what is tracked: clients, brands, production runs, locations and trackers.

Creation and updates carry the rules (parents must exist, a tracker's client is its run's
client, a MAC must match its key); reading and deleting are the same for every kind, so they
are one generic use case each, bound to a repository where the process is wired
(``servers/parts.py``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from domain.access import Principal, require_admin, require_manage, require_read
from domain.errors import AlreadyExists, InvalidArgument, field_prefix
from domain.limits import MAX_BATCH_TRACKERS
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    Entity,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    Tracker,
    check_mac_matches,
    new_id,
)
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    Repository,
    SetupUnitOfWork,
    TrackerFilter,
)

E = TypeVar("E", bound=Entity)
F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class NewClient:
    display_name: str


@dataclass(frozen=True, slots=True)
class NewBrand:
    client_id: uuid.UUID
    display_name: str


@dataclass(frozen=True, slots=True)
class NewProductionRun:
    brand_id: uuid.UUID
    display_name: str
    start_time: datetime
    end_time: datetime


@dataclass(frozen=True, slots=True)
class NewLocation:
    production_run_id: uuid.UUID
    kind: LocationKind
    display_name: str
    center: GeoPoint
    radius_m: float


@dataclass(frozen=True, slots=True)
class NewTracker:
    production_run_id: uuid.UUID
    advertisement_key: bytes
    mac_address: str = ""
    display_name: str = ""


async def readable(caller: Principal, repo: Repository[E, Any], entity_id: uuid.UUID) -> E:
    """The entity, if the caller may read it; otherwise exactly what a missing one gives."""
    entity = await repo.get(entity_id)
    require_read(caller, entity.owner_client_id, entity.KIND, entity_id)
    return entity


async def manageable(caller: Principal, repo: Repository[E, Any], entity_id: uuid.UUID) -> E:
    entity = await repo.get(entity_id)
    require_manage(caller, entity.owner_client_id, entity.KIND, entity_id)
    return entity


class CreateClient:
    """Only an ADMIN creates clients."""

    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, new: NewClient) -> Client:
        require_admin(caller, "creating a client")
        now = self._clock.now()
        client = Client(
            id=new_id(), create_time=now, update_time=now, display_name=new.display_name
        )
        async with self._uow() as uow:
            await uow.clients.add(client)
            await uow.commit()
        return client


class CreateBrand:
    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, new: NewBrand) -> Brand:
        now = self._clock.now()
        brand = Brand(
            id=new_id(),
            create_time=now,
            update_time=now,
            client_id=new.client_id,
            display_name=new.display_name,
        )
        async with self._uow() as uow:
            await manageable(caller, uow.clients, new.client_id)
            await uow.brands.add(brand)
            await uow.commit()
        return brand


class CreateProductionRun:
    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, new: NewProductionRun) -> ProductionRun:
        now = self._clock.now()
        async with self._uow() as uow:
            brand = await manageable(caller, uow.brands, new.brand_id)
            run = ProductionRun(
                id=new_id(),
                create_time=now,
                update_time=now,
                brand_id=brand.id,
                client_id=brand.client_id,
                display_name=new.display_name,
                start_time=new.start_time,
                end_time=new.end_time,
            )
            await uow.production_runs.add(run)
            await uow.commit()
        return run


class CreateLocation:
    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, new: NewLocation) -> Location:
        now = self._clock.now()
        async with self._uow() as uow:
            run = await manageable(caller, uow.production_runs, new.production_run_id)
            location = Location(
                id=new_id(),
                create_time=now,
                update_time=now,
                production_run_id=run.id,
                client_id=run.client_id,
                kind=new.kind,
                display_name=new.display_name,
                center=new.center,
                radius_m=new.radius_m,
            )
            await uow.locations.add(location)
            await uow.commit()
        return location


def _tracker_from(new: NewTracker, run: ProductionRun, now: datetime) -> Tracker:
    key = AdvertisementKey(new.advertisement_key)
    check_mac_matches(new.mac_address, key)
    return Tracker.in_run(run, key, now, display_name=new.display_name)


def name_clash(
    err: AlreadyExists, trackers: Sequence[Tracker], field: Callable[[int, str], str]
) -> AlreadyExists:
    """The clash of a batch, named by the item it concerns (``field(i, clashing field)``),
    so the caller can tell which one is not available without being told by whom."""
    for i, tracker in enumerate(trackers):
        if err.value in (tracker.mac_address.value, tracker.advertisement_key.value.hex()):
            return AlreadyExists(err.kind, field(i, err.field), err.value)
    return err


class CreateTrackers:
    """Create trackers in bulk, all or none. Errors of item i are under ``trackers[i]``."""

    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, items: Sequence[NewTracker]) -> list[Tracker]:
        if not items:
            raise InvalidArgument("trackers", "at least one tracker is required")
        if len(items) > MAX_BATCH_TRACKERS:
            raise InvalidArgument("trackers", f"at most {MAX_BATCH_TRACKERS} trackers per call")
        now = self._clock.now()
        async with self._uow() as uow:
            runs: dict[uuid.UUID, ProductionRun] = {}
            for run_id in dict.fromkeys(item.production_run_id for item in items):
                runs[run_id] = await manageable(caller, uow.production_runs, run_id)
            trackers = []
            seen_keys: dict[bytes, int] = {}
            seen_macs: dict[str, int] = {}
            for i, item in enumerate(items):
                with field_prefix(f"trackers[{i}]"):
                    tracker = _tracker_from(item, runs[item.production_run_id], now)
                first = seen_keys.setdefault(tracker.advertisement_key.value, i)
                if first != i:
                    raise InvalidArgument(
                        f"trackers[{i}].advertisement_key", f"same key as trackers[{first}]"
                    )
                first = seen_macs.setdefault(tracker.mac_address.value, i)
                if first != i:
                    raise InvalidArgument(
                        f"trackers[{i}].mac_address", f"same MAC address as trackers[{first}]"
                    )
                trackers.append(tracker)
            try:
                await uow.trackers.add_many(trackers)
            except AlreadyExists as err:
                raise name_clash(err, trackers, lambda i, f: f"trackers[{i}].{f}") from None
            await uow.commit()
        return trackers


class CreateTracker:
    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, caller: Principal, new: NewTracker) -> Tracker:
        async with self._uow() as uow:
            run = await manageable(caller, uow.production_runs, new.production_run_id)
            tracker = _tracker_from(new, run, self._clock.now())
            await uow.trackers.add(tracker)
            await uow.commit()
        return tracker


Select = Callable[[SetupUnitOfWork], Repository[E, Any]]


class UpdateResource(Generic[E]):
    """Apply changes to the updatable fields of one resource; the entity re-validates."""

    def __init__(
        self, uow: UnitOfWorkFactory[SetupUnitOfWork], clock: Clock, select: Select[E]
    ) -> None:
        self._uow, self._clock, self._select = uow, clock, select

    async def __call__(self, caller: Principal, entity_id: uuid.UUID, changes: dict[str, Any]) -> E:
        async with self._uow() as uow:
            repo = self._select(uow)
            current = await manageable(caller, repo, entity_id)
            updated = await self._apply(caller, uow, current, changes)
            if dataclasses.replace(updated, update_time=current.update_time) == current:
                return current
            await repo.update(updated)
            await uow.commit()
            return updated

    async def _apply(
        self, caller: Principal, uow: SetupUnitOfWork, current: E, changes: dict[str, Any]
    ) -> E:
        if not changes:
            return current
        return current.with_changes(changes, self._clock.now())


class UpdateTracker(UpdateResource[Tracker]):
    """A tracker may move to another production run of the same client."""

    async def _apply(
        self, caller: Principal, uow: SetupUnitOfWork, current: Tracker, changes: dict[str, Any]
    ) -> Tracker:
        run_id = changes.get("production_run_id")
        if run_id is not None and run_id != current.production_run_id:
            run = await manageable(caller, uow.production_runs, run_id)
            if run.client_id != current.client_id:
                raise InvalidArgument(
                    "production_run_id", "belongs to another client than the tracker"
                )
        return await super()._apply(caller, uow, current, changes)


class GetResource(Generic[E]):
    def __init__(self, uow: UnitOfWorkFactory[SetupUnitOfWork], select: Select[E]) -> None:
        self._uow, self._select = uow, select

    async def __call__(self, caller: Principal, entity_id: uuid.UUID) -> E:
        async with self._uow() as uow:
            return await readable(caller, self._select(uow), entity_id)


class ListResources(Generic[E, F]):
    """A page of what the caller may read: the filter is narrowed to the caller's clients."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[SetupUnitOfWork],
        select: Callable[[SetupUnitOfWork], Repository[E, F]],
    ) -> None:
        self._uow, self._select = uow, select

    async def __call__(self, caller: Principal, filter: F, page: PageRequest) -> Page[E]:
        visible = caller.readable_clients()
        narrowed = dataclasses.replace(filter, visible_clients=visible)  # type: ignore[type-var]
        async with self._uow() as uow:
            return await self._select(uow).list(narrowed, page)


class DeleteResource:
    """Deleting needs CLIENT_ADMIN of the owning client; deleting a client needs ADMIN."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[SetupUnitOfWork],
        select: Select[Any],
        *,
        admin_only: bool = False,
    ) -> None:
        self._uow, self._select, self._admin_only = uow, select, admin_only

    async def __call__(
        self, caller: Principal, entity_id: uuid.UUID, *, force: bool = False
    ) -> None:
        async with self._uow() as uow:
            repo = self._select(uow)
            entity = await manageable(caller, repo, entity_id)
            if self._admin_only:
                require_admin(caller, f"deleting a {entity.KIND}")
            await repo.delete(entity_id, cascade=force)
            await uow.commit()


@dataclass(frozen=True, slots=True)
class SetupUseCases:
    """Every setup use case, bound to one unit-of-work factory and clock."""

    create_client: CreateClient
    create_brand: CreateBrand
    create_production_run: CreateProductionRun
    create_location: CreateLocation
    create_tracker: CreateTracker
    create_trackers: CreateTrackers
    update_client: UpdateResource[Client]
    update_brand: UpdateResource[Brand]
    update_production_run: UpdateResource[ProductionRun]
    update_location: UpdateResource[Location]
    update_tracker: UpdateTracker
    delete_client: DeleteResource
    delete_brand: DeleteResource
    delete_production_run: DeleteResource
    delete_location: DeleteResource
    delete_tracker: DeleteResource
    get_client: GetResource[Client]
    get_brand: GetResource[Brand]
    get_production_run: GetResource[ProductionRun]
    get_location: GetResource[Location]
    get_tracker: GetResource[Tracker]
    list_clients: ListResources[Client, ClientFilter]
    list_brands: ListResources[Brand, BrandFilter]
    list_production_runs: ListResources[ProductionRun, ProductionRunFilter]
    list_locations: ListResources[Location, LocationFilter]
    list_trackers: ListResources[Tracker, TrackerFilter]
