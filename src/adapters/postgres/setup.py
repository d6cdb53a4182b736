"""Repositories of the setup resources, on one connection inside a transaction.

The mechanics (get, list with keyset paging, update, delete with cascade) are shared by
``_Table``; each subclass says how its rows map to entities and which tables hang below it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg

from domain.errors import AlreadyExists, FailedPrecondition, NotFound
from domain.instants import clamp_run_window
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    Entity,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    SealedSecret,
    Tracker,
)
from domain.pagination import Page, PageRequest, cursor_id
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)
from domain.reports import TrackerRef

E = TypeVar("E", bound=Entity)
F = TypeVar("F")

_TIMES = ("create_time", "update_time")

# Unique constraints, by name, and the public field they protect.
_UNIQUE_FIELDS = {
    "trackers_mac_address_key": "mac_address",
    "trackers_advertisement_key_key": "advertisement_key",
    "trackers_hashed_advertisement_key_key": "advertisement_key",
}


def _already_exists(
    kind: str, exc: asyncpg.UniqueViolationError, values: dict[str, Any]
) -> AlreadyExists:
    field = _UNIQUE_FIELDS.get(exc.constraint_name or "", "id")
    value = values.get(field)
    shown = value.hex() if isinstance(value, bytes) else str(value)
    return AlreadyExists(kind, field, shown)


class _Table(Generic[E, F]):
    table: ClassVar[str]
    kind: ClassVar[str]
    # (column, SQL expression to read it) in entity order; writes use ``_write_values``.
    read_columns: ClassVar[str]
    write_columns: ClassVar[tuple[str, ...]]
    # Statements deleting everything below one row, bottom-up, each taking the row id as $1.
    cascade: ClassVar[tuple[str, ...]] = ()

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    # -- mapping, per table --------------------------------------------------------------
    def _from_record(self, r: asyncpg.Record) -> E:
        raise NotImplementedError  # abstract: every concrete table defines it

    def _write_values(self, e: E) -> tuple[Any, ...]:
        raise NotImplementedError  # abstract: every concrete table defines it

    def _filter_sql(self, f: F) -> tuple[list[str], list[Any]]:
        return [], []

    # -- shared mechanics ----------------------------------------------------------------
    def _placeholders(self) -> list[str]:
        """One SQL value expression per write column, numbered from $1."""
        return [f"${i}" for i in range(1, len(self.write_columns) + 1)]

    async def add(self, entity: E) -> None:
        await self._insert([entity])

    async def _insert(self, entities: Sequence[E]) -> None:
        cols = ", ".join(self.write_columns)
        sql = f"INSERT INTO {self.table} ({cols}) VALUES ({', '.join(self._placeholders())})"
        try:
            await self._conn.executemany(sql, [self._write_values(e) for e in entities])
        except asyncpg.UniqueViolationError as exc:
            clash = self._clashing(exc, entities)
            raise _already_exists(self.kind, exc, clash) from None
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("parent of " + self.kind, exc.detail or "") from None

    def _clashing(self, exc: asyncpg.UniqueViolationError, entities: Sequence[E]) -> dict[str, Any]:
        """The public field values of the entity named in the violation's detail."""
        detail = exc.detail or ""
        for e in entities:
            values = dict(zip(self.write_columns, self._write_values(e), strict=True))
            for v in values.values():
                text = "\\x" + v.hex() if isinstance(v, bytes) else str(v)
                if text and f"=({text})" in detail:
                    return values
        return {}

    async def get(self, entity_id: uuid.UUID) -> E:
        row = await self._conn.fetchrow(
            f"SELECT {self.read_columns} FROM {self.table} WHERE id = $1", entity_id
        )
        if row is None:
            raise NotFound(self.kind, str(entity_id))
        return self._from_record(row)

    async def update(self, entity: E) -> None:
        values = self._write_values(entity)
        sets = [
            f"{c} = {p}"
            for c, p in zip(self.write_columns, self._placeholders(), strict=True)
            if c != "id"
        ]
        try:
            status = await self._conn.execute(
                f"UPDATE {self.table} SET {', '.join(sets)} WHERE id = $1", *values
            )
        except asyncpg.UniqueViolationError as exc:
            raise _already_exists(
                self.kind, exc, dict(zip(self.write_columns, values, strict=True))
            ) from None
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("parent of " + self.kind, exc.detail or "") from None
        if status.endswith(" 0"):
            raise NotFound(self.kind, str(entity.id))

    async def delete(self, entity_id: uuid.UUID, *, cascade: bool) -> None:
        if cascade:
            for statement in self.cascade:
                await self._conn.execute(statement, entity_id)
        try:
            deleted = await self._conn.fetchval(
                f"DELETE FROM {self.table} WHERE id = $1 RETURNING id", entity_id
            )
        except asyncpg.ForeignKeyViolationError:
            raise FailedPrecondition(
                f"{self.kind} {entity_id} still has dependent resources; delete them first "
                "or set force",
                subject=str(entity_id),
            ) from None
        if deleted is None:
            raise NotFound(self.kind, str(entity_id))

    async def list(self, filter: F, page: PageRequest) -> Page[E]:
        where, args = self._filter_sql(filter)
        if page.after is not None:
            args.append(cursor_id(page.after))
            where.append(f"id > ${len(args)}")
        args.append(page.size + 1)
        sql = (
            f"SELECT {self.read_columns} FROM {self.table}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY id LIMIT ${len(args)}"
        )
        rows = await self._conn.fetch(sql, *args)
        items = [self._from_record(r) for r in rows[: page.size]]
        next_after = str(items[-1].id) if len(rows) > page.size else None
        return Page(items, next_after)


def _eq_filters(
    pairs: Sequence[tuple[str, Any]],
    visible: frozenset[uuid.UUID] | None,
    owner_column: str = "client_id",
) -> tuple[list[str], list[Any]]:
    """Equality filters, plus the tenant restriction: only rows of ``visible`` clients."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in pairs:
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if visible is not None:
        args.append(list(visible))
        where.append(f"{owner_column} = ANY(${len(args)}::uuid[])")
    return where, args


class PostgresClientRepository(_Table[Client, ClientFilter]):
    table, kind = "clients", "client"
    read_columns = "id, display_name, create_time, update_time"
    write_columns = ("id", "display_name", "create_time", "update_time")
    cascade = (
        # Devices and firmware (issue 18): rollouts, devices, profiles, then the types.
        "DELETE FROM rollouts WHERE client_id = $1",
        "DELETE FROM devices WHERE client_id = $1",
        "DELETE FROM device_profiles WHERE client_id = $1",
        "DELETE FROM device_types WHERE client_id = $1",
        "DELETE FROM reports WHERE tracker_id IN (SELECT id FROM trackers WHERE client_id = $1)",
        "DELETE FROM trackers WHERE client_id = $1",
        # Detectors (issue 16): their sightings have no foreign key; the rest cascades.
        "DELETE FROM sightings WHERE detector_id IN "
        "(SELECT id FROM detectors WHERE client_id = $1)",
        "DELETE FROM detectors WHERE client_id = $1",
        # Tags allocated to the client go back to the unallocated pool; their keys stay.
        "UPDATE tag_keys SET client_id = NULL, allocate_time = NULL WHERE client_id = $1",
        "DELETE FROM locations WHERE client_id = $1",
        "DELETE FROM production_runs WHERE client_id = $1",
        "DELETE FROM brands WHERE client_id = $1",
    )

    def _from_record(self, r: asyncpg.Record) -> Client:
        return Client(**dict(r))

    def _write_values(self, e: Client) -> tuple[Any, ...]:
        return (e.id, e.display_name, e.create_time, e.update_time)

    def _filter_sql(self, f: ClientFilter) -> tuple[list[str], list[Any]]:
        return _eq_filters([], f.visible_clients, owner_column="id")


class PostgresBrandRepository(_Table[Brand, BrandFilter]):
    table, kind = "brands", "brand"
    read_columns = "id, client_id, display_name, create_time, update_time"
    write_columns = ("id", "client_id", "display_name", "create_time", "update_time")
    cascade = (
        "DELETE FROM reports WHERE tracker_id IN (SELECT t.id FROM trackers t "
        "JOIN production_runs r ON r.id = t.production_run_id WHERE r.brand_id = $1)",
        "DELETE FROM trackers WHERE production_run_id IN "
        "(SELECT id FROM production_runs WHERE brand_id = $1)",
        "DELETE FROM locations WHERE production_run_id IN "
        "(SELECT id FROM production_runs WHERE brand_id = $1)",
        "DELETE FROM production_runs WHERE brand_id = $1",
    )

    def _from_record(self, r: asyncpg.Record) -> Brand:
        return Brand(**dict(r))

    def _write_values(self, e: Brand) -> tuple[Any, ...]:
        return (e.id, e.client_id, e.display_name, e.create_time, e.update_time)

    def _filter_sql(self, f: BrandFilter) -> tuple[list[str], list[Any]]:
        return _eq_filters([("client_id", f.client_id)], f.visible_clients)


class PostgresProductionRunRepository(_Table[ProductionRun, ProductionRunFilter]):
    table, kind = "production_runs", "production run"
    read_columns = (
        "id, brand_id, client_id, display_name, start_time, end_time, create_time, update_time"
    )
    write_columns = (
        "id",
        "brand_id",
        "client_id",
        "display_name",
        "start_time",
        "end_time",
        "create_time",
        "update_time",
    )
    cascade = (
        "DELETE FROM reports WHERE tracker_id IN "
        "(SELECT id FROM trackers WHERE production_run_id = $1)",
        "DELETE FROM trackers WHERE production_run_id = $1",
        "DELETE FROM locations WHERE production_run_id = $1",
    )

    def _from_record(self, r: asyncpg.Record) -> ProductionRun:
        # Tolerant of rows stored before the time bounds (±infinity arrives as a naive
        # datetime.min/max): read clamped, as migration 0008 clamps them.
        fields = dict(r)
        fields["start_time"], fields["end_time"] = clamp_run_window(
            fields["start_time"], fields["end_time"]
        )
        return ProductionRun(**fields)

    def _write_values(self, e: ProductionRun) -> tuple[Any, ...]:
        return (
            e.id,
            e.brand_id,
            e.client_id,
            e.display_name,
            e.start_time,
            e.end_time,
            e.create_time,
            e.update_time,
        )

    def _filter_sql(self, f: ProductionRunFilter) -> tuple[list[str], list[Any]]:
        return _eq_filters(
            [("brand_id", f.brand_id), ("client_id", f.client_id)], f.visible_clients
        )


class PostgresLocationRepository(_Table[Location, LocationFilter]):
    table, kind = "locations", "location"
    read_columns = (
        "id, production_run_id, client_id, kind, display_name, "
        "ST_Y(center::geometry) AS latitude, ST_X(center::geometry) AS longitude, "
        "radius_m, create_time, update_time"
    )
    write_columns = (
        "id",
        "production_run_id",
        "client_id",
        "kind",
        "display_name",
        "center",
        "radius_m",
        "create_time",
        "update_time",
    )

    def _placeholders(self) -> list[str]:
        """``center`` is built from two parameters, longitude then latitude."""
        return [
            "$1",
            "$2",
            "$3",
            "$4",
            "$5",
            "ST_SetSRID(ST_MakePoint($6, $7), 4326)::geography",
            "$8",
            "$9",
            "$10",
        ]

    def _from_record(self, r: asyncpg.Record) -> Location:
        return Location(
            id=r["id"],
            production_run_id=r["production_run_id"],
            client_id=r["client_id"],
            kind=LocationKind(r["kind"]),
            display_name=r["display_name"],
            center=GeoPoint(latitude=r["latitude"], longitude=r["longitude"]),
            radius_m=r["radius_m"],
            create_time=r["create_time"],
            update_time=r["update_time"],
        )

    def _write_values(self, e: Location) -> tuple[Any, ...]:
        return (
            e.id,
            e.production_run_id,
            e.client_id,
            e.kind.value,
            e.display_name,
            e.center.longitude,
            e.center.latitude,
            e.radius_m,
            e.create_time,
            e.update_time,
        )

    def _filter_sql(self, f: LocationFilter) -> tuple[list[str], list[Any]]:
        return _eq_filters(
            [
                ("production_run_id", f.production_run_id),
                ("kind", f.kind.value if f.kind else None),
            ],
            f.visible_clients,
        )


class PostgresTrackerRepository(_Table[Tracker, TrackerFilter]):
    table, kind = "trackers", "tracker"
    read_columns = (
        "id, client_id, production_run_id, advertisement_key, display_name, "
        "create_time, update_time, private_key_ciphertext, private_key_kek_id"
    )
    write_columns = (
        "id",
        "client_id",
        "production_run_id",
        "mac_address",
        "advertisement_key",
        "hashed_advertisement_key",
        "display_name",
        "create_time",
        "update_time",
        "private_key_ciphertext",
        "private_key_kek_id",
    )

    def _from_record(self, r: asyncpg.Record) -> Tracker:
        sealed = None
        if r["private_key_ciphertext"] is not None:
            sealed = SealedSecret(r["private_key_kek_id"], bytes(r["private_key_ciphertext"]))
        return Tracker(
            id=r["id"],
            client_id=r["client_id"],
            production_run_id=r["production_run_id"],
            advertisement_key=AdvertisementKey(bytes(r["advertisement_key"])),
            display_name=r["display_name"],
            create_time=r["create_time"],
            update_time=r["update_time"],
            sealed_private_key=sealed,
        )

    def _write_values(self, e: Tracker) -> tuple[Any, ...]:
        return (
            e.id,
            e.client_id,
            e.production_run_id,
            e.mac_address.value,
            e.advertisement_key.value,
            e.hashed_advertisement_key,
            e.display_name,
            e.create_time,
            e.update_time,
            e.sealed_private_key.ciphertext if e.sealed_private_key else None,
            e.sealed_private_key.kek_id if e.sealed_private_key else None,
        )

    def _filter_sql(self, f: TrackerFilter) -> tuple[list[str], list[Any]]:
        return _eq_filters(
            [("client_id", f.client_id), ("production_run_id", f.production_run_id)],
            f.visible_clients,
        )

    async def add_many(self, trackers: list[Tracker]) -> None:
        await self._insert(trackers)

    async def delete(self, entity_id: uuid.UUID, *, cascade: bool) -> None:
        """Reports are not tied by a foreign key (COPY speed): checked or removed here."""
        if cascade:
            await self._conn.execute("DELETE FROM reports WHERE tracker_id = $1", entity_id)
        elif await self._conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM reports WHERE tracker_id = $1)", entity_id
        ):
            raise FailedPrecondition(
                f"tracker {entity_id} has location reports; set force to delete them too",
                subject=str(entity_id),
            )
        await super().delete(entity_id, cascade=cascade)

    async def refs(self, ids: list[uuid.UUID], hashed: list[bytes]) -> list[TrackerRef]:
        rows = await self._conn.fetch(
            "SELECT id, client_id, hashed_advertisement_key FROM trackers "
            "WHERE id = ANY($1::uuid[]) OR hashed_advertisement_key = ANY($2::bytea[])",
            ids,
            hashed,
        )
        return [TrackerRef(r[0], r[1], bytes(r[2])) for r in rows]

    async def by_hashed_keys(self, hashed: list[bytes]) -> dict[bytes, Tracker]:
        rows = await self._conn.fetch(
            f"SELECT {self.read_columns} FROM trackers "
            "WHERE hashed_advertisement_key = ANY($1::bytea[])",
            hashed,
        )
        trackers = [self._from_record(r) for r in rows]
        return {t.hashed_advertisement_key: t for t in trackers}
