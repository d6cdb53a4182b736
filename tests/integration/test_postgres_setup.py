"""The Postgres adapters of the setup on a real, throwaway PostGIS database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from findmy import KeyPair

from adapters.postgres.migrator import Migration, MigrationError, bundled_migrations, migrate
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from domain.errors import AlreadyExists, FailedPrecondition, NotFound
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    GeoPoint,
    Location,
    LocationKind,
    MacAddress,
    ProductionRun,
    Tracker,
)
from domain.pagination import PageRequest
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def key(n: int) -> AdvertisementKey:
    return AdvertisementKey(bytes([n % 256]) * 27 + bytes([n // 256]))


async def seed(uow_factory: PostgresUnitOfWorkFactory) -> tuple[Client, Brand, ProductionRun]:
    client = Client(id=uuid.uuid4(), create_time=NOW, update_time=NOW, display_name="Acme")
    brand = Brand(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        client_id=client.id,
        display_name="Outdoor",
    )
    run = ProductionRun(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        brand_id=brand.id,
        client_id=client.id,
        display_name="Winter",
        start_time=NOW,
        end_time=NOW + timedelta(days=90),
    )
    async with uow_factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.commit()
    return client, brand, run


def tracker(run: ProductionRun, n: int) -> Tracker:
    return Tracker(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        client_id=run.client_id,
        production_run_id=run.id,
        advertisement_key=key(n),
    )


async def test_entities_round_trip_exactly(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    client, brand, run = await seed(uow_factory)
    loc = Location(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        production_run_id=run.id,
        client_id=run.client_id,
        kind=LocationKind.DELIVERY,
        display_name="Store",
        center=GeoPoint(latitude=52.520008, longitude=13.404954),
        radius_m=125.5,
    )
    t = tracker(run, 1)
    async with uow_factory() as uow:
        await uow.locations.add(loc)
        await uow.trackers.add(t)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.clients.get(client.id) == client
        assert await uow.brands.get(brand.id) == brand
        assert await uow.production_runs.get(run.id) == run
        assert await uow.locations.get(loc.id) == loc
        assert await uow.trackers.get(t.id) == t


async def test_uncommitted_work_is_rolled_back(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    client = Client(id=uuid.uuid4(), create_time=NOW, update_time=NOW, display_name="Gone")
    async with uow_factory() as uow:
        await uow.clients.add(client)
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.clients.get(client.id)


async def test_duplicate_mac_and_key_are_already_exists(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    _, _, run = await seed(uow_factory)
    async with uow_factory() as uow:
        await uow.trackers.add(tracker(run, 1))
        await uow.commit()
    async with uow_factory() as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.trackers.add(tracker(run, 1))
    assert err.value.field in {"mac_address", "advertisement_key"}
    # Same first six bytes, different key: the MAC clashes.
    other = Tracker(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        client_id=run.client_id,
        production_run_id=run.id,
        advertisement_key=AdvertisementKey(key(1).value[:6] + b"\xff" * 22),
    )
    async with uow_factory() as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.trackers.add(other)
    assert err.value.field == "mac_address"
    assert err.value.value == other.mac_address.value


async def test_batch_insert_is_all_or_nothing(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    _, _, run = await seed(uow_factory)
    async with uow_factory() as uow:
        await uow.trackers.add(tracker(run, 7))
        await uow.commit()
    async with uow_factory() as uow:
        with pytest.raises(AlreadyExists):
            await uow.trackers.add_many([tracker(run, 5), tracker(run, 6), tracker(run, 7)])
    async with uow_factory() as uow:
        page = await uow.trackers.list(TrackerFilter(production_run_id=run.id), PageRequest())
    assert [t.advertisement_key for t in page.items] == [key(7)]


async def test_delete_with_children_needs_force_and_then_cascades(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    client, brand, run = await seed(uow_factory)
    async with uow_factory() as uow:
        await uow.trackers.add(tracker(run, 3))
        await uow.locations.add(
            Location(
                id=uuid.uuid4(),
                create_time=NOW,
                update_time=NOW,
                production_run_id=run.id,
                client_id=run.client_id,
                kind=LocationKind.STORAGE,
                display_name="DC",
                center=GeoPoint(0, 0),
                radius_m=10,
            )
        )
        await uow.commit()
    for repo_name, ident in (
        ("clients", client.id),
        ("brands", brand.id),
        ("production_runs", run.id),
    ):
        async with uow_factory() as uow:
            with pytest.raises(FailedPrecondition):
                await getattr(uow, repo_name).delete(ident, cascade=False)
    async with uow_factory() as uow:
        await uow.clients.delete(client.id, cascade=True)
        await uow.commit()
    async with pool.acquire() as conn:
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM clients) c, (SELECT count(*) FROM brands) b, "
            "(SELECT count(*) FROM production_runs) r, (SELECT count(*) FROM locations) l, "
            "(SELECT count(*) FROM trackers) t"
        )
    assert dict(counts) == {"c": 0, "b": 0, "r": 0, "l": 0, "t": 0}


async def test_delete_missing_is_not_found(pool: asyncpg.Pool) -> None:
    async with PostgresUnitOfWorkFactory(pool)() as uow:
        with pytest.raises(NotFound):
            await uow.trackers.delete(uuid.uuid4(), cascade=False)


async def test_keyset_pages_cover_every_row_once_in_id_order(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    _, _, run = await seed(uow_factory)
    _, _, other_run = await seed(uow_factory)
    created = [tracker(run, n) for n in range(1, 24)]
    async with uow_factory() as uow:
        await uow.trackers.add_many(created)
        await uow.trackers.add_many([tracker(other_run, n) for n in range(100, 105)])
        await uow.commit()
    seen, after = [], None
    while True:
        async with uow_factory() as uow:
            page = await uow.trackers.list(
                TrackerFilter(production_run_id=run.id), PageRequest(size=5, after=after)
            )
        seen += page.items
        if page.next_after is None:
            break
        after = page.next_after
    assert [t.id for t in seen] == sorted((t.id for t in created), key=str)


async def test_location_filter_by_kind(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    _, _, run = await seed(uow_factory)
    async with uow_factory() as uow:
        for kind in (LocationKind.DELIVERY, LocationKind.STORAGE, LocationKind.STORAGE):
            await uow.locations.add(
                Location(
                    id=uuid.uuid4(),
                    create_time=NOW,
                    update_time=NOW,
                    production_run_id=run.id,
                    client_id=run.client_id,
                    kind=kind,
                    display_name=kind.value,
                    center=GeoPoint(1, 2),
                    radius_m=50,
                )
            )
        await uow.commit()
    async with uow_factory() as uow:
        page = await uow.locations.list(
            LocationFilter(production_run_id=run.id, kind=LocationKind.STORAGE), PageRequest()
        )
    assert [loc.kind for loc in page.items] == [LocationKind.STORAGE] * 2


async def test_geofence_center_is_geography_with_gist_index(pool: asyncpg.Pool) -> None:
    """Geodesic metres: ST_DWithin on the stored geography agrees with the radius."""
    uow_factory = PostgresUnitOfWorkFactory(pool)
    _, _, run = await seed(uow_factory)
    loc = Location(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        production_run_id=run.id,
        client_id=run.client_id,
        kind=LocationKind.STORAGE,
        display_name="Tromso",
        radius_m=1000,
        center=GeoPoint(latitude=69.6492, longitude=18.9553),
    )
    async with uow_factory() as uow:
        await uow.locations.add(loc)
        await uow.commit()
    async with pool.acquire() as conn:
        # 0.02 degrees of longitude at 69.6N is about 774 m: inside 1 km.
        inside = await conn.fetchval(
            "SELECT ST_DWithin(center, ST_SetSRID(ST_MakePoint(18.9753, 69.6492), 4326)"
            "::geography, radius_m) FROM locations WHERE id = $1",
            loc.id,
        )
        indexdef = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'locations_center_gist'"
        )
    assert inside is True
    assert "gist" in indexdef


async def test_mac_derivation_agrees_with_findmy(pool: asyncpg.Pool) -> None:
    for _ in range(20):
        pair = KeyPair.new()
        ours = MacAddress.for_advertisement_key(AdvertisementKey(pair.adv_key_bytes))
        assert ours.value == pair.mac_address
        assert AdvertisementKey(pair.adv_key_bytes).hashed == pair.hashed_adv_key_bytes


async def test_migrations_are_idempotent_and_detect_edits(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn) == []
        edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in bundled_migrations()]
        with pytest.raises(MigrationError, match="edited"):
            await migrate(conn, edited)
        extra = [*bundled_migrations(), Migration(9999, "probe", "CREATE TABLE probe (x int)")]
        assert await migrate(conn, extra) == [9999]
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 9999
    finally:
        await conn.close()


async def test_lists_never_leave_the_visible_clients(pool: asyncpg.Pool) -> None:
    uow_factory = PostgresUnitOfWorkFactory(pool)
    a_client, _, a_run = await seed(uow_factory)
    b_client, _, b_run = await seed(uow_factory)
    async with uow_factory() as uow:
        await uow.trackers.add_many([tracker(a_run, 1), tracker(b_run, 2)])
        for run in (a_run, b_run):
            await uow.locations.add(
                Location(
                    id=uuid.uuid4(),
                    create_time=NOW,
                    update_time=NOW,
                    production_run_id=run.id,
                    client_id=run.client_id,
                    kind=LocationKind.STORAGE,
                    display_name="x",
                    center=GeoPoint(0, 0),
                    radius_m=5,
                )
            )
        await uow.commit()
    only_a = frozenset({a_client.id})
    async with uow_factory() as uow:
        pages = [
            await uow.clients.list(ClientFilter(visible_clients=only_a), PageRequest()),
            await uow.brands.list(BrandFilter(visible_clients=only_a), PageRequest()),
            await uow.production_runs.list(
                ProductionRunFilter(visible_clients=only_a), PageRequest()
            ),
            await uow.locations.list(LocationFilter(visible_clients=only_a), PageRequest()),
            await uow.trackers.list(TrackerFilter(visible_clients=only_a), PageRequest()),
            # An explicit filter for B inside a visibility of A finds nothing.
            await uow.trackers.list(
                TrackerFilter(client_id=b_client.id, visible_clients=only_a), PageRequest()
            ),
        ]
        nothing = await uow.trackers.list(TrackerFilter(visible_clients=frozenset()), PageRequest())
    for page in pages[:-1]:
        assert len(page.items) == 1
        assert page.items[0].owner_client_id == a_client.id
    assert pages[-1].items == []
    assert nothing.items == []
