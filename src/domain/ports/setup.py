"""Ports of the setup capability (clients, brands, production runs, locations, trackers).

Every filter has ``visible_clients``: the clients the caller may read (None: all). Use cases
set it from the caller; repositories must never return a row outside it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol, TypeVar

from domain.model import (
    Brand,
    Client,
    Entity,
    Location,
    LocationKind,
    ProductionRun,
    Tracker,
)
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.reports import TrackerRef

E = TypeVar("E", bound=Entity)
F_contra = TypeVar("F_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class ClientFilter:
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class BrandFilter:
    client_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class ProductionRunFilter:
    brand_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class LocationFilter:
    production_run_id: uuid.UUID | None = None
    kind: LocationKind | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class TrackerFilter:
    client_id: uuid.UUID | None = None
    production_run_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


class Repository(Protocol[E, F_contra]):
    """Storage of one kind of setup resource, inside the unit of work's transaction.

    ``get`` raises NotFound; ``add``/``update`` raise AlreadyExists on a unique clash and
    NotFound for a missing parent; ``delete`` raises NotFound, or FailedPrecondition when
    children exist and ``cascade`` is false. Lists are ordered by id.
    """

    async def add(self, entity: E) -> None: ...

    async def get(self, entity_id: uuid.UUID) -> E: ...

    async def update(self, entity: E) -> None: ...

    async def delete(self, entity_id: uuid.UUID, *, cascade: bool) -> None: ...

    async def list(self, filter: F_contra, page: PageRequest) -> Page[E]: ...


class ClientRepository(Repository[Client, ClientFilter], Protocol): ...


class BrandRepository(Repository[Brand, BrandFilter], Protocol): ...


class ProductionRunRepository(Repository[ProductionRun, ProductionRunFilter], Protocol): ...


class LocationRepository(Repository[Location, LocationFilter], Protocol): ...


class TrackerRepository(Repository[Tracker, TrackerFilter], Protocol):
    async def by_hashed_keys(self, hashed: list[bytes]) -> dict[bytes, Tracker]:
        """The trackers of these hashed advertisement keys (those that exist)."""
        ...

    async def refs(self, ids: list[uuid.UUID], hashed: list[bytes]) -> list[TrackerRef]:
        """The trackers with these ids or these hashed advertisement keys (those that
        exist), in one round trip: only what storing their reports needs."""
        ...

    async def add_many(self, trackers: list[Tracker]) -> None:
        """Insert all or none; AlreadyExists names the first clashing MAC or key."""
        ...


class SetupUnitOfWork(Transaction, Protocol):
    """A transaction over the setup resources."""

    clients: ClientRepository
    brands: BrandRepository
    production_runs: ProductionRunRepository
    locations: LocationRepository
    trackers: TrackerRepository
