"""Ports: what use cases need from the outside world, declared by their consumer.

Implementations live in ``adapters`` (``Postgres*``, ``Redis*``); in-memory fakes in tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar

from domain.model import Brand, Client, Entity, Location, LocationKind, ProductionRun, Tracker
from domain.pagination import Page, PageRequest

E = TypeVar("E", bound=Entity)
F_contra = TypeVar("F_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class ClientFilter:
    pass


@dataclass(frozen=True, slots=True)
class BrandFilter:
    client_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ProductionRunFilter:
    brand_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class LocationFilter:
    production_run_id: uuid.UUID | None = None
    kind: LocationKind | None = None


@dataclass(frozen=True, slots=True)
class TrackerFilter:
    client_id: uuid.UUID | None = None
    production_run_id: uuid.UUID | None = None


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
    async def add_many(self, trackers: list[Tracker]) -> None:
        """Insert all or none; AlreadyExists names the first clashing MAC or key."""
        ...


class UnitOfWork(Protocol):
    """One transaction over the repositories; rolled back unless ``commit`` was awaited."""

    clients: ClientRepository
    brands: BrandRepository
    production_runs: ProductionRunRepository
    locations: LocationRepository
    trackers: TrackerRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class DependencyProbe(Protocol):
    """A live check of one backing service, used by health reporting."""

    name: str

    async def check(self) -> None:
        """Return if the dependency answers; raise anything otherwise."""
        ...
