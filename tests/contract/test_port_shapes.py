"""Every fake has the shape of its port (methods, parameters, attributes), and names what it
does not find as the domain does: the part of a contract the suites cannot exercise."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from domain.model import (
    Brand,
    Client,
    Entity,
    Location,
    ProductionRun,
    Tracker,
)
from domain.ports.access import (
    AccessUnitOfWork,
    PasswordHasher,
    RefreshTokenRepository,
    TokenCodec,
    UserRepository,
)
from domain.ports.common import Clock
from domain.ports.fetching import AccountGate, FetchingUnitOfWork, FetchQueue, FetchStateRepository
from domain.ports.idempotency import IdempotencyStore
from domain.ports.keys import KeyPairFactory, KeysUnitOfWork, SecretSealer, TagKeyRepository
from domain.ports.reports import ReportRepository, ReportsUnitOfWork
from domain.ports.setup import (
    BrandRepository,
    ClientRepository,
    LocationRepository,
    ProductionRunRepository,
    SetupUnitOfWork,
    TrackerRepository,
)
from domain.ports.status import StatusUnitOfWork
from tests.unit.fakes.access import (
    FakePasswordHasher,
    FakeRefreshTokenRepository,
    FakeTokenCodec,
    FakeUserRepository,
)
from tests.unit.fakes.base import FakeClock, FakeRepository
from tests.unit.fakes.common import FakeUnitOfWork
from tests.unit.fakes.fetching import FakeAccountGate, FakeFetchQueue, FakeFetchStateRepository
from tests.unit.fakes.idempotency import FakeIdempotencyStore
from tests.unit.fakes.keys import FakeKeyPairFactory, FakeSealer, FakeTagKeyRepository
from tests.unit.fakes.reports import FakeReportRepository
from tests.unit.fakes.setup import (
    FakeBrandRepository,
    FakeClientRepository,
    FakeLocationRepository,
    FakeProductionRunRepository,
    FakeTrackerRepository,
)


@pytest.mark.parametrize(
    ("port", "fake"),
    [
        (ClientRepository, FakeClientRepository),
        (BrandRepository, FakeBrandRepository),
        (ProductionRunRepository, FakeProductionRunRepository),
        (LocationRepository, FakeLocationRepository),
        (TrackerRepository, FakeTrackerRepository),
        (UserRepository, FakeUserRepository),
        (RefreshTokenRepository, FakeRefreshTokenRepository),
        (SetupUnitOfWork, FakeUnitOfWork),
        (AccessUnitOfWork, FakeUnitOfWork),
        (KeysUnitOfWork, FakeUnitOfWork),
        (ReportsUnitOfWork, FakeUnitOfWork),
        (FetchingUnitOfWork, FakeUnitOfWork),
        (StatusUnitOfWork, FakeUnitOfWork),
        (Clock, FakeClock),
        (PasswordHasher, FakePasswordHasher),
        (TokenCodec, FakeTokenCodec),
        (TagKeyRepository, FakeTagKeyRepository),
        (KeyPairFactory, FakeKeyPairFactory),
        (SecretSealer, FakeSealer),
        (ReportRepository, FakeReportRepository),
        (FetchStateRepository, FakeFetchStateRepository),
        (FetchQueue, FakeFetchQueue),
        (AccountGate, FakeAccountGate),
        (IdempotencyStore, FakeIdempotencyStore),
    ],
)
def test_fake_has_every_method_of_its_port_with_the_same_parameters(port: type, fake: type) -> None:
    for name, member in inspect.getmembers(port, inspect.isfunction):
        if name.startswith("_") and name not in {"__aenter__", "__aexit__"}:
            continue
        ours = getattr(fake, name)
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(member), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(member).parameters
        ), name
    for attribute in getattr(port, "__annotations__", {}):
        assert attribute in fake.__annotations__, attribute


@pytest.mark.parametrize(
    ("entity", "fake"),
    [
        (Client, FakeClientRepository),
        (Brand, FakeBrandRepository),
        (ProductionRun, FakeProductionRunRepository),
        (Location, FakeLocationRepository),
        (Tracker, FakeTrackerRepository),
    ],
)
def test_fake_not_found_names_the_same_kind_as_the_entity(
    entity: type[Entity], fake: type[FakeRepository[Any, Any]]
) -> None:
    # Use cases hide another client's resource as NotFound(entity.KIND, id); a missing one
    # comes from the repository. Both must read the same.
    assert fake.kind == entity.KIND
