"""Fakes of the setup repositories (``domain.ports.setup``)."""

from __future__ import annotations

import dataclasses
import uuid

from domain.model import (
    Brand,
    Client,
    Location,
    ProductionRun,
    Tracker,
)
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)
from domain.reports import TrackerRef
from tests.unit.fakes.base import (
    FakeRepository,
    FakeTables,
    _drop,
    _missing_parent,
)


class FakeClientRepository(FakeRepository[Client, ClientFilter]):
    table, kind = "clients", "client"

    def _has_children(self, entity_id: uuid.UUID, t: FakeTables) -> bool:
        return (
            any(b.client_id == entity_id for b in t.brands.values())
            or any(tr.client_id == entity_id for tr in t.trackers.values())
            or any(row.key.client_id == entity_id for row in t.tag_keys.values())
        )

    def _cascade(self, entity_id: uuid.UUID, t: FakeTables) -> None:
        _drop(t.trackers, lambda tr: tr.client_id != entity_id)
        # Tags allocated to the client go back to the unallocated pool.
        for key_id, row in list(t.tag_keys.items()):
            if row.key.client_id == entity_id:
                t.tag_keys[key_id] = dataclasses.replace(
                    row, key=dataclasses.replace(row.key, client_id=None)
                )
        _drop(t.locations, lambda loc: loc.client_id != entity_id)
        _drop(t.production_runs, lambda r: r.client_id != entity_id)
        _drop(t.brands, lambda b: b.client_id != entity_id)

    def _after_delete(self, entity_id: uuid.UUID, t: FakeTables) -> None:
        # memberships.client_id REFERENCES clients ON DELETE CASCADE
        for user in list(t.users.values()):
            if entity_id in user.memberships:
                rest = {c: r for c, r in user.memberships.items() if c != entity_id}
                t.users[user.id] = dataclasses.replace(user, memberships=rest)


class FakeBrandRepository(FakeRepository[Brand, BrandFilter]):
    table, kind = "brands", "brand"

    def _check_parents(self, entity: Brand, t: FakeTables) -> None:
        if entity.client_id not in t.clients:
            raise _missing_parent(self.kind, "client_id", entity.client_id, "clients")

    def _has_children(self, entity_id: uuid.UUID, t: FakeTables) -> bool:
        return any(r.brand_id == entity_id for r in t.production_runs.values())

    def _cascade(self, entity_id: uuid.UUID, t: FakeTables) -> None:
        runs = {r.id for r in t.production_runs.values() if r.brand_id == entity_id}
        _drop(t.trackers, lambda tr: tr.production_run_id not in runs)
        _drop(t.locations, lambda loc: loc.production_run_id not in runs)
        _drop(t.production_runs, lambda r: r.id not in runs)

    def _matches(self, entity: Brand, filter: BrandFilter) -> bool:
        return filter.client_id in (None, entity.client_id)


class FakeProductionRunRepository(FakeRepository[ProductionRun, ProductionRunFilter]):
    table, kind = "production_runs", "production run"

    def _check_parents(self, entity: ProductionRun, t: FakeTables) -> None:
        brand = t.brands.get(entity.brand_id)
        if brand is None or brand.client_id != entity.client_id:
            raise _missing_parent(self.kind, "brand_id, client_id", entity.brand_id, "brands")

    def _has_children(self, entity_id: uuid.UUID, t: FakeTables) -> bool:
        return any(loc.production_run_id == entity_id for loc in t.locations.values()) or any(
            tr.production_run_id == entity_id for tr in t.trackers.values()
        )

    def _cascade(self, entity_id: uuid.UUID, t: FakeTables) -> None:
        _drop(t.trackers, lambda tr: tr.production_run_id != entity_id)
        _drop(t.locations, lambda loc: loc.production_run_id != entity_id)

    def _matches(self, entity: ProductionRun, filter: ProductionRunFilter) -> bool:
        return filter.brand_id in (None, entity.brand_id) and filter.client_id in (
            None,
            entity.client_id,
        )


class FakeLocationRepository(FakeRepository[Location, LocationFilter]):
    table, kind = "locations", "location"

    def _check_parents(self, entity: Location, t: FakeTables) -> None:
        run = t.production_runs.get(entity.production_run_id)
        if run is None or run.client_id != entity.client_id:
            raise _missing_parent(
                self.kind,
                "production_run_id, client_id",
                entity.production_run_id,
                "production_runs",
            )

    def _matches(self, entity: Location, filter: LocationFilter) -> bool:
        return filter.production_run_id in (None, entity.production_run_id) and filter.kind in (
            None,
            entity.kind,
        )


class FakeTrackerRepository(FakeRepository[Tracker, TrackerFilter]):
    table, kind = "trackers", "tracker"
    unique = (
        ("mac_address", lambda t: t.mac_address.value),
        ("advertisement_key", lambda t: t.advertisement_key.value),
    )

    def _check_parents(self, entity: Tracker, t: FakeTables) -> None:
        if entity.client_id not in t.clients:
            raise _missing_parent(self.kind, "client_id", entity.client_id, "clients")
        run = t.production_runs.get(entity.production_run_id)
        if run is None or run.client_id != entity.client_id:
            raise _missing_parent(
                self.kind,
                "production_run_id, client_id",
                entity.production_run_id,
                "production_runs",
            )

    def _matches(self, entity: Tracker, filter: TrackerFilter) -> bool:
        return filter.client_id in (None, entity.client_id) and filter.production_run_id in (
            None,
            entity.production_run_id,
        )

    async def by_hashed_keys(self, hashed: list[bytes]) -> dict[bytes, Tracker]:
        """Like ``WHERE hashed_advertisement_key = ANY(..)``: unknown keys are simply absent."""
        wanted = set(hashed)
        return {
            t.hashed_advertisement_key: t
            for t in self._rows().values()
            if t.hashed_advertisement_key in wanted
        }

    async def refs(self, ids: list[uuid.UUID], hashed: list[bytes]) -> list[TrackerRef]:
        """Like ``WHERE id = ANY(..) OR hashed_advertisement_key = ANY(..)``."""
        want_ids, want_keys = set(ids), set(hashed)
        return [
            TrackerRef(t.id, t.client_id, t.hashed_advertisement_key)
            for t in self._rows().values()
            if t.id in want_ids or t.hashed_advertisement_key in want_keys
        ]

    async def add_many(self, trackers: list[Tracker]) -> None:
        self._insert(list(trackers))
