"""Setup use cases against the in-memory fakes, called by an administrator.

Who may call what is in ``test_access_usecases``; here the caller may do everything.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.access import Principal
from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
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
from domain.pagination import PageRequest, PageTokens
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)
from servers.parts import setup_usecases
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from usecases.setup import (
    MAX_BATCH_TRACKERS,
    NewBrand,
    NewClient,
    NewLocation,
    NewProductionRun,
    NewTracker,
    SetupUseCases,
)

ADMIN = Principal(uuid.UUID(int=1), admin=True)
START = datetime(2025, 3, 1, tzinfo=UTC)
END = START + timedelta(days=90)


def key(n: int) -> bytes:
    """A distinct 28-byte advertisement key per ``n`` (distinct MACs too, in practice)."""
    return hashlib.sha256(f"key-{n}".encode()).digest()[:28]


def mac_of(raw: bytes) -> str:
    return MacAddress.for_advertisement_key(AdvertisementKey(raw)).value


def same_mac_key(raw: bytes) -> bytes:
    """Another key whose MAC equals ``raw``'s: same first 6 bytes, other tail."""
    return raw[:6] + bytes(b ^ 0xFF for b in raw[6:])


def fields_of(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


@dataclass
class World:
    """Use cases wired to fakes, plus the fakes to inspect and steer."""

    uc: SetupUseCases
    uow: FakeUnitOfWorkFactory
    clock: FakeClock
    keys_used: int = 0

    async def client(self, name: str = "Acme") -> Client:
        return await self.uc.create_client(ADMIN, NewClient(name))

    async def brand(self, client: Client | None = None) -> Brand:
        client = client or await self.client()
        return await self.uc.create_brand(ADMIN, NewBrand(client.id, "Brand"))

    async def run(self, brand: Brand | None = None) -> ProductionRun:
        brand = brand or await self.brand()
        return await self.uc.create_production_run(
            ADMIN, NewProductionRun(brand.id, "Run", START, END)
        )

    async def location(
        self, run: ProductionRun, kind: LocationKind = LocationKind.DELIVERY
    ) -> Location:
        return await self.uc.create_location(
            ADMIN, NewLocation(run.id, kind, "Shop", GeoPoint(48.1, 11.6), 500.0)
        )

    async def tracker(self, run: ProductionRun, n: int | None = None) -> Tracker:
        """A tracker with key ``n``, or with a key not used before in this world."""
        if n is None:
            self.keys_used += 1
            n = 10_000 + self.keys_used
        return await self.uc.create_tracker(ADMIN, NewTracker(run.id, key(n)))

    def stored_count(self) -> dict[str, int]:
        t = self.uow.committed
        return {
            "clients": len(t.clients),
            "brands": len(t.brands),
            "production_runs": len(t.production_runs),
            "locations": len(t.locations),
            "trackers": len(t.trackers),
        }


def make_world() -> World:
    uow, clock = FakeUnitOfWorkFactory(), FakeClock(START - timedelta(days=1))
    return World(setup_usecases(uow, clock), uow, clock)


@pytest.fixture
def w() -> World:
    return make_world()


# -- create: clients, brands, runs, locations ------------------------------------------------


async def test_create_client_stores_it_with_the_clock_as_create_and_update_time(w: World) -> None:
    client = await w.client("Acme")
    assert client.create_time == client.update_time == w.clock.now()
    assert w.uow.committed.clients == {client.id: client}


async def test_invalid_new_client_is_rejected_and_nothing_is_stored(w: World) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await w.client("  ")
    assert fields_of(exc.value) == ["display_name"]
    assert w.uow.commits == 0


async def test_create_brand_stores_it_under_its_client(w: World) -> None:
    client = await w.client()
    brand = await w.uc.create_brand(ADMIN, NewBrand(client.id, "Brand"))
    assert brand.client_id == client.id
    assert await w.uc.get_brand(ADMIN, brand.id) == brand


async def test_create_brand_under_unknown_client_is_not_found(w: World) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await w.uc.create_brand(ADMIN, NewBrand(missing, "Brand"))
    assert (exc.value.kind, exc.value.ident) == ("client", str(missing))
    assert w.stored_count()["brands"] == 0


async def test_create_production_run_takes_its_client_from_the_brand(w: World) -> None:
    brand = await w.brand()
    run = await w.uc.create_production_run(ADMIN, NewProductionRun(brand.id, "Run", START, END))
    assert (run.brand_id, run.client_id) == (brand.id, brand.client_id)
    assert (run.start_time, run.end_time) == (START, END)
    assert w.uow.committed.production_runs[run.id] == run


async def test_create_production_run_under_unknown_brand_is_not_found(w: World) -> None:
    with pytest.raises(NotFound) as exc:
        await w.uc.create_production_run(ADMIN, NewProductionRun(uuid.uuid4(), "Run", START, END))
    assert exc.value.kind == "brand"


async def test_create_production_run_ending_before_it_starts_is_rejected(w: World) -> None:
    brand = await w.brand()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_production_run(ADMIN, NewProductionRun(brand.id, "Run", END, START))
    assert fields_of(exc.value) == ["end_time"]
    assert w.stored_count()["production_runs"] == 0


async def test_create_location_stores_it_under_its_run(w: World) -> None:
    run = await w.run()
    location = await w.location(run, LocationKind.STORAGE)
    assert location.production_run_id == run.id
    assert location.kind is LocationKind.STORAGE
    assert await w.uc.get_location(ADMIN, location.id) == location


async def test_create_location_under_unknown_run_is_not_found(w: World) -> None:
    new = NewLocation(uuid.uuid4(), LocationKind.DELIVERY, "Shop", GeoPoint(0, 0), 10.0)
    with pytest.raises(NotFound) as exc:
        await w.uc.create_location(ADMIN, new)
    assert exc.value.kind == "production run"


async def test_create_location_with_bad_radius_is_rejected(w: World) -> None:
    run = await w.run()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_location(
            ADMIN, NewLocation(run.id, LocationKind.DELIVERY, "Shop", GeoPoint(0, 0), 0.0)
        )
    assert fields_of(exc.value) == ["radius_m"]


# -- create: one tracker ---------------------------------------------------------------------


async def test_tracker_takes_its_client_from_its_run_and_its_mac_from_its_key(w: World) -> None:
    run = await w.run()
    tracker = await w.uc.create_tracker(ADMIN, NewTracker(run.id, key(1), display_name="Pallet 1"))
    assert tracker.client_id == run.client_id
    assert tracker.production_run_id == run.id
    assert tracker.mac_address.value == mac_of(key(1))
    assert tracker.create_time == w.clock.now()
    assert w.uow.committed.trackers == {tracker.id: tracker}


async def test_tracker_under_unknown_run_is_not_found(w: World) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await w.uc.create_tracker(ADMIN, NewTracker(missing, key(1)))
    assert (exc.value.kind, exc.value.ident) == ("production run", str(missing))


@pytest.mark.parametrize(
    "style", [str, str.lower, lambda m: m.replace(":", "-"), lambda m: m.replace(":", "")]
)
async def test_tracker_with_its_own_mac_in_any_style_is_created(w: World, style: Any) -> None:
    run = await w.run()
    tracker = await w.uc.create_tracker(
        ADMIN, NewTracker(run.id, key(1), mac_address=style(mac_of(key(1))))
    )
    assert tracker.mac_address.value == mac_of(key(1))


@pytest.mark.parametrize("mac", ["C0:00:00:00:00:01", "garbage"])
async def test_tracker_with_a_mac_its_key_does_not_imply_is_rejected(w: World, mac: str) -> None:
    run = await w.run()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_tracker(ADMIN, NewTracker(run.id, key(1), mac_address=mac))
    assert fields_of(exc.value) == ["mac_address"]
    assert w.stored_count()["trackers"] == 0


async def test_tracker_with_a_short_key_is_rejected(w: World) -> None:
    run = await w.run()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_tracker(ADMIN, NewTracker(run.id, key(1)[:27]))
    assert fields_of(exc.value) == ["advertisement_key"]


async def test_tracker_with_a_taken_key_already_exists(w: World) -> None:
    run = await w.run()
    await w.tracker(run, 1)
    with pytest.raises(AlreadyExists) as exc:
        await w.tracker(run, 1)
    # The key implies the MAC, and PostgreSQL checks the MAC index first.
    assert exc.value.field in {"mac_address", "advertisement_key"}
    assert w.stored_count()["trackers"] == 1


async def test_tracker_whose_key_implies_a_taken_mac_already_exists(w: World) -> None:
    run = await w.run()
    await w.uc.create_tracker(ADMIN, NewTracker(run.id, key(1)))
    with pytest.raises(AlreadyExists) as exc:
        await w.uc.create_tracker(ADMIN, NewTracker(run.id, same_mac_key(key(1))))
    assert (exc.value.kind, exc.value.field, exc.value.value) == (
        "tracker",
        "mac_address",
        mac_of(key(1)),
    )


# -- create: trackers in bulk ----------------------------------------------------------------


async def test_batch_stores_every_tracker_with_its_own_runs_client(w: World) -> None:
    run_a = await w.run()
    run_b = await w.run()
    assert run_a.client_id != run_b.client_id
    commits = w.uow.commits
    created = await w.uc.create_trackers(
        ADMIN,
        [NewTracker(run_a.id, key(1)), NewTracker(run_b.id, key(2)), NewTracker(run_a.id, key(3))],
    )
    assert [t.client_id for t in created] == [run_a.client_id, run_b.client_id, run_a.client_id]
    assert [t.mac_address.value for t in created] == [mac_of(key(n)) for n in (1, 2, 3)]
    assert w.uow.committed.trackers == {t.id: t for t in created}
    assert w.uow.commits == commits + 1


async def test_batch_with_one_clashing_mac_stores_nothing(w: World) -> None:
    run = await w.run()
    existing = await w.tracker(run, 99)
    with pytest.raises(AlreadyExists) as exc:
        await w.uc.create_trackers(
            ADMIN,
            [NewTracker(run.id, key(1)), NewTracker(run.id, key(2)), NewTracker(run.id, key(99))],
        )
    assert exc.value.value == existing.mac_address.value
    assert w.uow.committed.trackers == {existing.id: existing}


async def test_batch_with_an_unknown_run_is_not_found_and_stores_nothing(w: World) -> None:
    run = await w.run()
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await w.uc.create_trackers(ADMIN, [NewTracker(run.id, key(1)), NewTracker(missing, key(2))])
    assert exc.value.ident == str(missing)
    assert w.stored_count()["trackers"] == 0


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        (lambda run: NewTracker(run, key(9)[:20]), "trackers[2].advertisement_key"),
        (
            lambda run: NewTracker(run, key(9), mac_address=mac_of(key(8))),
            "trackers[2].mac_address",
        ),
        (lambda run: NewTracker(run, key(9), mac_address="zz"), "trackers[2].mac_address"),
        (lambda run: NewTracker(run, key(9), display_name="x" * 201), "trackers[2].display_name"),
    ],
)
async def test_batch_errors_name_the_offending_item(w: World, bad_item: Any, field: str) -> None:
    run = await w.run()
    items = [NewTracker(run.id, key(1)), NewTracker(run.id, key(2)), bad_item(run.id)]
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_trackers(ADMIN, items)
    assert fields_of(exc.value) == [field]
    assert w.stored_count()["trackers"] == 0


async def test_batch_with_a_key_twice_names_the_second_item(w: World) -> None:
    run = await w.run()
    items = [NewTracker(run.id, key(n)) for n in (1, 2, 3, 2)]
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_trackers(ADMIN, items)
    assert fields_of(exc.value) == ["trackers[3].advertisement_key"]
    assert "trackers[1]" in exc.value.violations[0].reason
    assert w.stored_count()["trackers"] == 0


async def test_batch_with_two_keys_implying_one_mac_stores_nothing(w: World) -> None:
    run = await w.run()
    items = [NewTracker(run.id, key(1)), NewTracker(run.id, same_mac_key(key(1)))]
    with pytest.raises((AlreadyExists, InvalidArgument)):
        await w.uc.create_trackers(ADMIN, items)
    assert w.stored_count()["trackers"] == 0


async def test_batch_with_two_keys_implying_one_mac_names_the_second_item(w: World) -> None:
    run = await w.run()
    items = [NewTracker(run.id, key(1)), NewTracker(run.id, same_mac_key(key(1)))]
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_trackers(ADMIN, items)
    assert fields_of(exc.value) == ["trackers[1].mac_address"]


async def test_empty_batch_is_rejected(w: World) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_trackers(ADMIN, [])
    assert fields_of(exc.value) == ["trackers"]


async def test_batch_over_the_limit_is_rejected_before_any_lookup(w: World) -> None:
    items = [NewTracker(uuid.uuid4(), key(n)) for n in range(MAX_BATCH_TRACKERS + 1)]
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_trackers(ADMIN, items)
    assert fields_of(exc.value) == ["trackers"]
    assert w.uow.opened == []


async def test_batch_at_the_limit_is_created(w: World) -> None:
    run = await w.run()
    created = await w.uc.create_trackers(
        ADMIN, [NewTracker(run.id, key(n)) for n in range(MAX_BATCH_TRACKERS)]
    )
    assert len(created) == MAX_BATCH_TRACKERS
    assert w.stored_count()["trackers"] == MAX_BATCH_TRACKERS


# -- update ----------------------------------------------------------------------------------


async def test_update_applies_the_change_and_bumps_update_time(w: World) -> None:
    client = await w.client("Acme")
    later = w.clock.advance(timedelta(hours=2))
    updated = await w.uc.update_client(ADMIN, client.id, {"display_name": "Acme GmbH"})
    assert updated.display_name == "Acme GmbH"
    assert updated.update_time == later
    assert updated.create_time == client.create_time
    assert await w.uc.get_client(ADMIN, client.id) == updated


async def test_update_of_a_field_that_cannot_change_is_rejected_and_stores_nothing(
    w: World,
) -> None:
    run = await w.run()
    commits = w.uow.commits
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.update_production_run(
            ADMIN, run.id, {"brand_id": uuid.uuid4(), "display_name": "X"}
        )
    assert fields_of(exc.value) == ["update_mask"]
    assert w.uow.commits == commits
    assert await w.uc.get_production_run(ADMIN, run.id) == run


async def test_update_that_breaks_a_rule_is_rejected_and_stores_nothing(w: World) -> None:
    run = await w.run()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.update_production_run(ADMIN, run.id, {"end_time": START - timedelta(days=1)})
    assert fields_of(exc.value) == ["end_time"]
    assert await w.uc.get_production_run(ADMIN, run.id) == run


async def test_update_of_several_fields_of_a_location(w: World) -> None:
    location = await w.location(await w.run())
    w.clock.advance()
    updated = await w.uc.update_location(
        ADMIN,
        location.id,
        {"center": GeoPoint(1.0, 2.0), "radius_m": 42.0, "kind": LocationKind.STORAGE},
    )
    assert (updated.center, updated.radius_m, updated.kind) == (
        GeoPoint(1.0, 2.0),
        42.0,
        LocationKind.STORAGE,
    )
    assert updated.display_name == location.display_name
    assert await w.uc.get_location(ADMIN, location.id) == updated


async def test_update_with_no_changes_does_not_write(w: World) -> None:
    client = await w.client()
    commits = w.uow.commits
    w.clock.advance()
    assert await w.uc.update_client(ADMIN, client.id, {}) == client
    assert w.uow.commits == commits
    assert w.uow.committed.clients[client.id].update_time == client.update_time


async def test_update_to_the_current_values_does_not_write(w: World) -> None:
    client = await w.client("Acme")
    commits = w.uow.commits
    w.clock.advance()
    assert await w.uc.update_client(ADMIN, client.id, {"display_name": "Acme"}) == client
    assert w.uow.commits == commits


@pytest.mark.parametrize(
    "update", ["update_client", "update_brand", "update_production_run", "update_location"]
)
async def test_update_of_an_unknown_resource_is_not_found(w: World, update: str) -> None:
    with pytest.raises(NotFound):
        await getattr(w.uc, update)(ADMIN, uuid.uuid4(), {"display_name": "X"})


async def test_tracker_moves_to_another_run_of_its_client(w: World) -> None:
    brand = await w.brand()
    run_a, run_b = await w.run(brand), await w.run(brand)
    tracker = await w.tracker(run_a)
    moved = await w.uc.update_tracker(ADMIN, tracker.id, {"production_run_id": run_b.id})
    assert moved.production_run_id == run_b.id
    assert moved.mac_address == tracker.mac_address
    assert (await w.uc.get_tracker(ADMIN, tracker.id)).production_run_id == run_b.id


async def test_tracker_cannot_move_to_a_run_of_another_client(w: World) -> None:
    run_a, run_b = await w.run(), await w.run()
    tracker = await w.tracker(run_a)
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.update_tracker(ADMIN, tracker.id, {"production_run_id": run_b.id})
    assert fields_of(exc.value) == ["production_run_id"]
    assert await w.uc.get_tracker(ADMIN, tracker.id) == tracker


async def test_tracker_moved_to_an_unknown_run_is_not_found(w: World) -> None:
    tracker = await w.tracker(await w.run())
    with pytest.raises(NotFound) as exc:
        await w.uc.update_tracker(ADMIN, tracker.id, {"production_run_id": uuid.uuid4()})
    assert exc.value.kind == "production run"


async def test_tracker_display_name_update_keeps_run_and_key(w: World) -> None:
    tracker = await w.tracker(await w.run())
    w.clock.advance()
    updated = await w.uc.update_tracker(ADMIN, tracker.id, {"display_name": "Pallet 7"})
    assert updated.display_name == "Pallet 7"
    assert updated.update_time == w.clock.now()
    assert (updated.production_run_id, updated.advertisement_key) == (
        tracker.production_run_id,
        tracker.advertisement_key,
    )


async def test_tracker_key_cannot_be_updated(w: World) -> None:
    tracker = await w.tracker(await w.run())
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.update_tracker(
            ADMIN, tracker.id, {"advertisement_key": AdvertisementKey(key(5))}
        )
    assert fields_of(exc.value) == ["update_mask"]


# -- get -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("get", "kind"),
    [
        ("get_client", "client"),
        ("get_brand", "brand"),
        ("get_production_run", "production run"),
        ("get_location", "location"),
        ("get_tracker", "tracker"),
    ],
)
async def test_get_of_an_unknown_id_is_not_found_naming_kind_and_id(
    w: World, get: str, kind: str
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await getattr(w.uc, get)(ADMIN, missing)
    assert (exc.value.kind, exc.value.ident) == (kind, str(missing))


# -- delete ----------------------------------------------------------------------------------


async def build_tree(w: World) -> dict[str, Any]:
    """One client with two brands, runs, locations and trackers below them."""
    client = await w.client()
    brands = [await w.brand(client), await w.brand(client)]
    runs = [await w.run(brands[0]), await w.run(brands[0]), await w.run(brands[1])]
    locations = [await w.location(r) for r in runs]
    trackers = [await w.tracker(run) for run in runs for _ in range(2)]
    return {
        "client": client,
        "brands": brands,
        "runs": runs,
        "locations": locations,
        "trackers": trackers,
    }


async def test_delete_of_a_client_with_brands_fails_and_keeps_everything(w: World) -> None:
    tree = await build_tree(w)
    before = w.stored_count()
    with pytest.raises(FailedPrecondition) as exc:
        await w.uc.delete_client(ADMIN, tree["client"].id)
    assert exc.value.subject == str(tree["client"].id)
    assert w.stored_count() == before


@pytest.mark.parametrize(
    ("delete", "parent"), [("delete_brand", "brands"), ("delete_production_run", "runs")]
)
async def test_delete_of_a_parent_with_children_without_force_fails(
    w: World, delete: str, parent: str
) -> None:
    tree = await build_tree(w)
    before = w.stored_count()
    with pytest.raises(FailedPrecondition):
        await getattr(w.uc, delete)(ADMIN, tree[parent][0].id)
    assert w.stored_count() == before


async def test_forced_delete_of_a_client_removes_everything_below_it_only(w: World) -> None:
    tree = await build_tree(w)
    other = await build_tree(w)
    await w.uc.delete_client(ADMIN, tree["client"].id, force=True)
    t = w.uow.committed
    assert set(t.clients) == {other["client"].id}
    assert set(t.brands) == {b.id for b in other["brands"]}
    assert set(t.production_runs) == {r.id for r in other["runs"]}
    assert set(t.locations) == {loc.id for loc in other["locations"]}
    assert set(t.trackers) == {tr.id for tr in other["trackers"]}


async def test_forced_delete_of_a_brand_removes_its_runs_locations_and_trackers(
    w: World,
) -> None:
    tree = await build_tree(w)
    await w.uc.delete_brand(ADMIN, tree["brands"][0].id, force=True)
    t = w.uow.committed
    assert set(t.clients) == {tree["client"].id}
    assert set(t.brands) == {tree["brands"][1].id}
    assert set(t.production_runs) == {tree["runs"][2].id}
    assert set(t.locations) == {tree["locations"][2].id}
    assert set(t.trackers) == {tr.id for tr in tree["trackers"][4:]}


async def test_forced_delete_of_a_run_removes_its_locations_and_trackers(w: World) -> None:
    tree = await build_tree(w)
    await w.uc.delete_production_run(ADMIN, tree["runs"][1].id, force=True)
    t = w.uow.committed
    assert set(t.production_runs) == {tree["runs"][0].id, tree["runs"][2].id}
    assert tree["locations"][1].id not in t.locations
    assert len(t.locations) == 2
    assert set(t.trackers) == {tr.id for i, tr in enumerate(tree["trackers"]) if i // 2 != 1}


@pytest.mark.parametrize("force", [False, True])
async def test_leaves_are_deleted_with_or_without_force(w: World, force: bool) -> None:
    tree = await build_tree(w)
    await w.uc.delete_location(ADMIN, tree["locations"][0].id, force=force)
    await w.uc.delete_tracker(ADMIN, tree["trackers"][0].id, force=force)
    assert tree["locations"][0].id not in w.uow.committed.locations
    assert tree["trackers"][0].id not in w.uow.committed.trackers
    assert w.stored_count()["trackers"] == len(tree["trackers"]) - 1


async def test_client_without_children_is_deleted_without_force(w: World) -> None:
    client = await w.client()
    await w.uc.delete_client(ADMIN, client.id)
    with pytest.raises(NotFound):
        await w.uc.get_client(ADMIN, client.id)


@pytest.mark.parametrize(
    "delete",
    ["delete_client", "delete_brand", "delete_production_run", "delete_location", "delete_tracker"],
)
@pytest.mark.parametrize("force", [False, True])
async def test_delete_of_an_unknown_id_is_not_found(w: World, delete: str, force: bool) -> None:
    await build_tree(w)
    before = w.stored_count()
    with pytest.raises(NotFound):
        await getattr(w.uc, delete)(ADMIN, uuid.uuid4(), force=force)
    assert w.stored_count() == before


# -- list ------------------------------------------------------------------------------------


async def test_lists_filter_by_parent_and_order_by_id(w: World) -> None:
    tree = await build_tree(w)
    other = await build_tree(w)
    await w.location(tree["runs"][0], LocationKind.STORAGE)
    every = PageRequest(size=1000)

    brands = await w.uc.list_brands(ADMIN, BrandFilter(client_id=tree["client"].id), every)
    assert {b.id for b in brands.items} == {b.id for b in tree["brands"]}

    runs = await w.uc.list_production_runs(
        ADMIN, ProductionRunFilter(brand_id=tree["brands"][0].id), every
    )
    assert {r.id for r in runs.items} == {r.id for r in tree["runs"][:2]}
    runs = await w.uc.list_production_runs(
        ADMIN, ProductionRunFilter(client_id=other["client"].id), every
    )
    assert {r.id for r in runs.items} == {r.id for r in other["runs"]}

    run0 = tree["runs"][0].id
    locations = await w.uc.list_locations(ADMIN, LocationFilter(production_run_id=run0), every)
    assert len(locations.items) == 2
    storage = await w.uc.list_locations(
        ADMIN, LocationFilter(production_run_id=run0, kind=LocationKind.STORAGE), every
    )
    assert [loc.kind for loc in storage.items] == [LocationKind.STORAGE]

    trackers = await w.uc.list_trackers(ADMIN, TrackerFilter(client_id=other["client"].id), every)
    assert {t.id for t in trackers.items} == {t.id for t in other["trackers"]}
    trackers = await w.uc.list_trackers(ADMIN, TrackerFilter(production_run_id=run0), every)
    assert {t.id for t in trackers.items} == {t.id for t in tree["trackers"][:2]}

    clients = await w.uc.list_clients(ADMIN, ClientFilter(), every)
    assert [str(c.id) for c in clients.items] == sorted(
        str(c.id) for c in (tree["client"], other["client"])
    )
    all_trackers = await w.uc.list_trackers(ADMIN, TrackerFilter(), every)
    ids = [str(t.id) for t in all_trackers.items]
    assert ids == sorted(ids)
    assert len(ids) == 12
    assert all_trackers.next_after is None


async def test_a_full_last_page_has_no_next_cursor(w: World) -> None:
    for _ in range(4):
        await w.client()
    first = await w.uc.list_clients(ADMIN, ClientFilter(), PageRequest(size=2))
    assert len(first.items) == 2
    assert first.next_after == str(first.items[-1].id)
    second = await w.uc.list_clients(
        ADMIN, ClientFilter(), PageRequest(size=2, after=first.next_after)
    )
    assert len(second.items) == 2
    assert second.next_after is None


async def test_list_after_a_cursor_that_is_not_an_id_is_invalid_argument(w: World) -> None:
    await w.client()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.list_clients(ADMIN, ClientFilter(), PageRequest(size=2, after="not-an-id"))
    assert fields_of(exc.value) == ["page_token"]


async def walk(w: World, page_size: int) -> list[Client]:
    """Every client, page by page, through wire tokens as a caller would."""
    tokens = PageTokens({"k": b"k" * 32}, "k")
    seen: list[Client] = []
    token = ""
    for _ in range(1000):
        page = await w.uc.list_clients(
            ADMIN, ClientFilter(), tokens.request(page_size, token, "clients")
        )
        assert len(page.items) <= page_size
        seen += page.items
        token = tokens.next_token(page, "clients")
        if not token:
            return seen
        assert len(page.items) == page_size
    raise AssertionError("paging did not end")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=0, max_value=30), page_size=st.integers(min_value=1, max_value=12))
async def test_paging_walks_every_item_exactly_once_in_id_order(n: int, page_size: int) -> None:
    w = make_world()
    created = [await w.client(f"C{i}") for i in range(n)]
    seen = await walk(w, page_size)
    assert [c.id for c in seen] == sorted((c.id for c in created), key=str)
