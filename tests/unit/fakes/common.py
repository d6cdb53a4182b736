"""The fake unit of work (every capability's repositories over one ``FakeTables``) and
its factory, and a fake dependency probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from domain.errors import (
    TransientError,
)
from domain.ports.access import RefreshTokenRepository, UserRepository
from domain.ports.detectors import (
    DetectorRepository,
    LinkRepository,
    SightingRepository,
    TravelTimeRepository,
)
from domain.ports.fetching import FetchStateRepository
from domain.ports.jobs import JobRepository
from domain.ports.keys import TagKeyRepository
from domain.ports.reports import ReportRepository
from domain.ports.setup import (
    BrandRepository,
    ClientRepository,
    LocationRepository,
    ProductionRunRepository,
    TrackerRepository,
)
from tests.unit.fakes.access import (
    FakeRefreshTokenRepository,
    FakeUserRepository,
)
from tests.unit.fakes.base import (
    FakeTables,
    T,
)
from tests.unit.fakes.detectors import (
    FakeDetectorRepository,
    FakeLinkRepository,
    FakeSightingRepository,
    FakeTravelTimeRepository,
)
from tests.unit.fakes.fetching import (
    FakeFetchStateRepository,
)
from tests.unit.fakes.jobs import FakeJobRepository
from tests.unit.fakes.keys import (
    FakeTagKeyRepository,
)
from tests.unit.fakes.reports import (
    FakeReportRepository,
)
from tests.unit.fakes.setup import (
    FakeBrandRepository,
    FakeClientRepository,
    FakeLocationRepository,
    FakeProductionRunRepository,
    FakeTrackerRepository,
)


class FakeUnitOfWork:
    """A transaction: a private copy of the committed state, published by ``commit``."""

    # Typed as the ports: protocol attributes are mutable, hence invariant.
    clients: ClientRepository
    brands: BrandRepository
    production_runs: ProductionRunRepository
    locations: LocationRepository
    trackers: TrackerRepository
    users: UserRepository
    refresh_tokens: RefreshTokenRepository
    tag_keys: TagKeyRepository
    reports: ReportRepository
    fetch_states: FetchStateRepository
    detectors: DetectorRepository
    links: LinkRepository
    sightings: SightingRepository
    travel_times: TravelTimeRepository
    jobs: JobRepository

    def __init__(self, factory: FakeUnitOfWorkFactory) -> None:
        self._factory = factory
        self._tables: FakeTables | None = None
        self.committed = False

    @property
    def tables(self) -> FakeTables:
        if self._tables is None:
            raise RuntimeError("repository used outside its unit of work")
        return self._tables

    async def __aenter__(self) -> Self:
        if self._tables is not None:
            raise RuntimeError("unit of work entered twice")
        self._tables = self._factory.committed.copy()
        self.clients = FakeClientRepository(self)
        self.brands = FakeBrandRepository(self)
        self.production_runs = FakeProductionRunRepository(self)
        self.locations = FakeLocationRepository(self)
        self.trackers = FakeTrackerRepository(self)
        self.users = FakeUserRepository(self)
        self.refresh_tokens = FakeRefreshTokenRepository(self)
        self.tag_keys = FakeTagKeyRepository(self)
        self.reports = FakeReportRepository(self)
        self.fetch_states = FakeFetchStateRepository(self)
        self.detectors = FakeDetectorRepository(self)
        self.links = FakeLinkRepository(self)
        self.sightings = FakeSightingRepository(self)
        self.travel_times = FakeTravelTimeRepository(self)
        self.jobs = FakeJobRepository(self)
        return self

    async def commit(self) -> None:
        self._factory.publish(self.tables)
        self.committed = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tables = None


class FakeUnitOfWorkFactory:
    """Holds the committed state; each call opens a unit of work on a copy of it."""

    def __init__(self) -> None:
        self.committed = FakeTables()
        self.commits = 0
        self.opened: list[FakeUnitOfWork] = []

    def __call__(self) -> FakeUnitOfWork:
        uow = FakeUnitOfWork(self)
        self.opened.append(uow)
        return uow

    async def retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """Like the adapter: run again after a TransientError, up to three runs."""
        for attempt in range(3):
            try:
                return await work()
            except TransientError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def publish(self, tables: FakeTables) -> None:
        self.committed = tables.copy()
        self.commits += 1


class FakeProbe:
    """A dependency probe that answers, raises ``error``, or hangs until cancelled."""

    def __init__(self, name: str, *, error: Exception | None = None, hang: bool = False) -> None:
        self.name = name
        self._error, self._hang = error, hang
        self.calls = 0
        self.cancelled = False

    async def check(self) -> None:
        self.calls += 1
        if self._hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self._error is not None:
            raise self._error
