"""Entities and values the contract suites store, built the same way for every implementation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.access import RefreshToken, Role, User
from domain.keys import GeneratedKey, KeyBatch
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    SealedSecret,
    Tracker,
)
from domain.reports import Report

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def a_client(name: str = "Acme") -> Client:
    return Client(id=uuid.uuid4(), create_time=T0, update_time=T0, display_name=name)


def a_brand(client: Client) -> Brand:
    return Brand(
        id=uuid.uuid4(), create_time=T0, update_time=T0, client_id=client.id, display_name="B"
    )


def a_run(brand: Brand, client_id: uuid.UUID | None = None) -> ProductionRun:
    return ProductionRun(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        brand_id=brand.id,
        client_id=client_id or brand.client_id,
        display_name="R",
        start_time=T0,
        end_time=T0 + timedelta(days=1),
    )


def a_location(run: ProductionRun, client_id: uuid.UUID | None = None) -> Location:
    return Location(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        production_run_id=run.id,
        client_id=client_id or run.client_id,
        kind=LocationKind.DELIVERY,
        display_name="L",
        center=GeoPoint(0.0, 0.0),
        radius_m=10.0,
    )


def a_user(
    email: str = "user@example.com", memberships: dict[uuid.UUID, Role] | None = None
) -> User:
    return User(
        id=uuid.uuid4(),
        email=email,
        password_hash="fake$x",
        memberships=memberships or {},
        create_time=T0,
        update_time=T0,
    )


def a_refresh_token(user: User, token_hash: bytes = b"h" * 32) -> RefreshToken:
    return RefreshToken(
        id=uuid.uuid4(), user_id=user.id, token_hash=token_hash, expires_at=T0 + timedelta(days=1)
    )


def a_tracker(run: ProductionRun, raw: bytes) -> Tracker:
    return Tracker(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        client_id=run.client_id,
        production_run_id=run.id,
        advertisement_key=AdvertisementKey(raw),
    )


async def two_clients_with_everything(factory: Any) -> tuple[Client, Client]:
    a, b = a_client("A"), a_client("B")
    async with factory() as uow:
        for n, client in enumerate((a, b)):
            brand = a_brand(client)
            run = a_run(brand)
            await uow.clients.add(client)
            await uow.brands.add(brand)
            await uow.production_runs.add(run)
            await uow.locations.add(a_location(run))
            await uow.trackers.add(a_tracker(run, bytes([n + 1]) * 28))
        await uow.commit()
    return a, b


def a_batch(size: int = 1) -> KeyBatch:
    return KeyBatch(id=uuid.uuid4(), label="L", size=size, create_time=T0)


def a_generated(raw: bytes) -> GeneratedKey:
    return GeneratedKey(AdvertisementKey(raw), SealedSecret("k", b"sealed-" + raw[:4]))


def raw_key(n: int) -> bytes:
    return bytes([n]) * 28


def a_report(
    tracker_id: uuid.UUID,
    minute: int = 0,
    lat: float = 52.5,
    lon: float = 13.4,
    **kw: Any,
) -> Report:
    fields: dict[str, Any] = dict(
        tracker_id=tracker_id,
        report_time=T0 + timedelta(minutes=minute),
        position=GeoPoint(lat, lon),
        confidence=2,
        horizontal_accuracy_m=25,
    )
    fields.update(kw)
    return Report(**fields)
