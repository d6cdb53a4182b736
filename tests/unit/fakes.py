"""In-memory fakes of the ports in ``domain.ports``, for unit tests.

The repositories behave like the PostgreSQL adapter (``adapters.postgres``): foreign keys
(NotFound "parent of ..."), unique constraints checked in index order (id, mac_address,
advertisement_key; users: email), delete with or without cascade (memberships and refresh tokens
always cascade), keyset pages ordered by id, and every list narrowed to the filter's
``visible_clients``. A unit of work works on a private copy of the committed state and
publishes it only on ``commit``.

The password hasher and the token codec are deterministic stand-ins (not argon2, not JWT) with
the same contracts: ``verify`` is true only for the hashed password, ``decode`` raises
Unauthenticated for any unknown, tampered or expired token.

Tag keys (``adapters.postgres.keys``): key batches and their keys numbered by ``seq``, unique MAC
address and advertisement key, allocation to a client (a client with allocated tags is deleted
only with cascade, which returns its tags to the unallocated pool). The key-pair factory and
the sealer are deterministic stand-ins for findmy and AES-GCM with the same contracts:
``public_of`` of a generated private key is its advertisement key, and a sealed secret opens only
with the context it was sealed with.

Reports (``adapters.postgres.reports``): stored idempotently by ``Report.identity`` (tracker,
time, position in 1e-7 degrees; like ``ON CONFLICT DO NOTHING`` the first one stored wins, also
within one call); ``add_many`` returns how many were new. No foreign key to trackers, as in the
partitioned table.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from domain.access import AccessClaims, RefreshToken, User
from domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    TransientError,
    Unauthenticated,
)
from domain.fetching import FetchTarget, TrackerKey
from domain.keys import PRIVATE_KEY_LENGTH, GeneratedKey, KeyBatch, TagKey
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    Entity,
    Location,
    ProductionRun,
    SealedSecret,
    Tracker,
)
from domain.pagination import Page, PageRequest
from domain.ports.access import RefreshTokenRepository, UserFilter, UserRepository
from domain.ports.fetching import FetchStateRepository
from domain.ports.keys import TagKeyRepository
from domain.ports.reports import ReportRepository
from domain.ports.setup import (
    BrandFilter,
    BrandRepository,
    ClientFilter,
    ClientRepository,
    LocationFilter,
    LocationRepository,
    ProductionRunFilter,
    ProductionRunRepository,
    TrackerFilter,
    TrackerRepository,
)
from domain.reports import Report, ReportRows, TrackerRef
from domain.scheduling import (
    Capacity,
    Claim,
    ClaimBatch,
    FetchState,
    QueuePlace,
    QueueStats,
)


class _Filter(Protocol):
    @property
    def visible_clients(self) -> frozenset[uuid.UUID] | None: ...


E = TypeVar("E", bound=Entity)
F = TypeVar("F", bound=_Filter)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredKeyBatch:
    """A ``key_batches`` row: the batch and the KEK its keys were sealed under."""

    batch: KeyBatch
    kek_id: str


@dataclass(frozen=True, slots=True)
class StoredTagKey:
    """A ``tag_keys`` row: the key and its place in its batch."""

    seq: int
    key: TagKey


ReportIdentity = tuple[uuid.UUID, datetime, int, int]


@dataclass
class FakeTables:
    """Rows of every setup table, by id. Entities are immutable: copying the dicts is enough."""

    clients: dict[uuid.UUID, Client] = field(default_factory=dict)
    brands: dict[uuid.UUID, Brand] = field(default_factory=dict)
    production_runs: dict[uuid.UUID, ProductionRun] = field(default_factory=dict)
    locations: dict[uuid.UUID, Location] = field(default_factory=dict)
    trackers: dict[uuid.UUID, Tracker] = field(default_factory=dict)
    users: dict[uuid.UUID, User] = field(default_factory=dict)
    refresh_tokens: dict[uuid.UUID, RefreshToken] = field(default_factory=dict)
    key_batches: dict[uuid.UUID, StoredKeyBatch] = field(default_factory=dict)
    tag_keys: dict[uuid.UUID, StoredTagKey] = field(default_factory=dict)
    reports: dict[ReportIdentity, Report] = field(default_factory=dict)
    fetch_states: dict[uuid.UUID, FetchState] = field(default_factory=dict)

    def copy(self) -> FakeTables:
        return FakeTables(**{f.name: dict(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _shown(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _missing_parent(kind: str, column: str, value: uuid.UUID, table: str) -> NotFound:
    return NotFound(
        "parent of " + kind, f'Key ({column})=({value}) is not present in table "{table}".'
    )


class FakeRepository(Generic[E, F]):
    """Shared mechanics; subclasses name their table, parents, children and filters."""

    table: ClassVar[str]
    kind: ClassVar[str]
    # Unique columns besides the id, in the order PostgreSQL checks their indexes.
    unique: ClassVar[tuple[tuple[str, Callable[[Any], object]], ...]] = ()

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    # -- per table ------------------------------------------------------------------------
    def _check_parents(self, entity: E, t: FakeTables) -> None:
        """Raise NotFound("parent of <kind>") like a foreign-key violation."""

    def _has_children(self, entity_id: uuid.UUID, t: FakeTables) -> bool:
        return False

    def _cascade(self, entity_id: uuid.UUID, t: FakeTables) -> None:
        """Delete everything below the row (the adapter's ``cascade`` statements)."""

    def _matches(self, entity: E, filter: F) -> bool:
        return True

    def _after_delete(self, entity_id: uuid.UUID, t: FakeTables) -> None:
        """What the database removes on its own (``ON DELETE CASCADE``)."""

    # -- shared mechanics -----------------------------------------------------------------
    @property
    def _tables(self) -> FakeTables:
        return self._uow.tables

    def _rows(self, t: FakeTables | None = None) -> dict[uuid.UUID, E]:
        rows: dict[uuid.UUID, E] = getattr(self._tables if t is None else t, self.table)
        return rows

    def _index(self, rows: dict[uuid.UUID, E]) -> dict[str, dict[object, uuid.UUID]]:
        """Unique column -> value -> id of the row holding it (a unique index)."""
        return {name: {value_of(e): e.id for e in rows.values()} for name, value_of in self.unique}

    def _check_unique(self, entity: E, index: dict[str, dict[object, uuid.UUID]]) -> None:
        for name, value_of in self.unique:
            value = value_of(entity)
            holder = index[name].get(value)
            if holder is not None and holder != entity.id:
                raise AlreadyExists(self.kind, name, _shown(value))

    def _insert(self, entities: list[E]) -> None:
        """Insert in order, all or none: later rows clash with earlier ones of the batch."""
        staged = self._tables.copy()
        rows = self._rows(staged)
        index = self._index(rows)
        for entity in entities:
            if entity.id in rows:
                raise AlreadyExists(self.kind, "id", str(entity.id))
            self._check_unique(entity, index)
            self._check_parents(entity, staged)
            rows[entity.id] = entity
            for name, value_of in self.unique:
                index[name][value_of(entity)] = entity.id
        self._rows().update({e.id: e for e in entities})

    async def add(self, entity: E) -> None:
        self._insert([entity])

    async def get(self, entity_id: uuid.UUID) -> E:
        try:
            return self._rows()[entity_id]
        except KeyError:
            raise NotFound(self.kind, str(entity_id)) from None

    async def update(self, entity: E) -> None:
        rows = self._rows()
        if entity.id not in rows:
            raise NotFound(self.kind, str(entity.id))
        self._check_unique(entity, self._index(rows))
        self._check_parents(entity, self._tables)
        rows[entity.id] = entity

    async def delete(self, entity_id: uuid.UUID, *, cascade: bool) -> None:
        t = self._tables
        if cascade:
            self._cascade(entity_id, t)
        if entity_id not in self._rows(t):
            raise NotFound(self.kind, str(entity_id))
        if self._has_children(entity_id, t):
            raise FailedPrecondition(
                f"{self.kind} {entity_id} still has dependent resources; delete them first "
                "or set force",
                subject=str(entity_id),
            )
        del self._rows(t)[entity_id]
        self._after_delete(entity_id, t)

    async def list(self, filter: F, page: PageRequest) -> Page[E]:
        visible = filter.visible_clients
        return _keyset_page(
            (
                e
                for e in self._rows().values()
                if (visible is None or e.owner_client_id in visible) and self._matches(e, filter)
            ),
            page,
        )


class _Identified(Protocol):
    @property
    def id(self) -> uuid.UUID: ...


R = TypeVar("R", bound=_Identified)


def _keyset_page(rows: Iterable[R], page: PageRequest) -> Page[R]:
    """Rows ordered by id, strictly after ``page.after``, at most ``page.size`` of them."""
    after: str | None = None
    if page.after is not None:
        try:
            after = str(uuid.UUID(page.after))
        except ValueError:
            raise InvalidArgument("page_token", "malformed page token") from None
    # PostgreSQL orders uuid by its bytes: the same order as the lowercase canonical text.
    ordered = sorted(rows, key=lambda e: str(e.id))
    if after is not None:
        ordered = [e for e in ordered if str(e.id) > after]
    items = ordered[: page.size]
    return Page(items, str(items[-1].id) if len(ordered) > page.size else None)


def _drop(rows: dict[uuid.UUID, Any], keep: Callable[[Any], bool]) -> None:
    for key in [k for k, v in rows.items() if not keep(v)]:
        del rows[key]


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


class FakeUserRepository:
    """Users with their memberships (adapter: ``users`` + ``memberships``, both cascading)."""

    kind: ClassVar[str] = "user"

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[uuid.UUID, User]:
        return self._uow.tables.users

    def _check(self, user: User) -> None:
        """users_email_key, then memberships.client_id REFERENCES clients."""
        for other in self._rows.values():
            if other.email == user.email and other.id != user.id:
                raise AlreadyExists(self.kind, "email", user.email)
        clients = self._uow.tables.clients
        for client_id in user.memberships:
            if client_id not in clients:
                raise _missing_parent("membership", "client_id", client_id, "clients")

    async def add(self, user: User) -> None:
        if user.id in self._rows:
            raise AlreadyExists(self.kind, "id", str(user.id))
        self._check(user)
        self._rows[user.id] = user

    async def get(self, user_id: uuid.UUID) -> User:
        try:
            return self._rows[user_id]
        except KeyError:
            raise NotFound(self.kind, str(user_id)) from None

    async def find_by_email(self, email: str) -> User | None:
        return next((u for u in self._rows.values() if u.email == email), None)

    async def update(self, user: User) -> None:
        if user.id not in self._rows:
            raise NotFound(self.kind, str(user.id))
        self._check(user)
        # As in PostgreSQL: token_version never decreases, and a writer that read the user
        # before the latest password change keeps the newer password hash.
        stored = self._rows[user.id]
        if user.token_version < stored.token_version:
            user = dataclasses.replace(
                user, token_version=stored.token_version, password_hash=stored.password_hash
            )
        self._rows[user.id] = user

    async def delete(self, user_id: uuid.UUID) -> None:
        if user_id not in self._rows:
            raise NotFound(self.kind, str(user_id))
        del self._rows[user_id]
        _drop(self._uow.tables.refresh_tokens, lambda rt: rt.user_id != user_id)

    async def list(self, filter: UserFilter, page: PageRequest) -> Page[User]:
        visible = filter.visible_clients
        return _keyset_page(
            (
                u
                for u in self._rows.values()
                if visible is None or not visible.isdisjoint(u.memberships)
            ),
            page,
        )


class FakeRefreshTokenRepository:
    """Stored refresh tokens, found by hash; revoking keeps the row, marked revoked."""

    kind: ClassVar[str] = "refresh token"

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[uuid.UUID, RefreshToken]:
        return self._uow.tables.refresh_tokens

    async def add(self, token: RefreshToken) -> None:
        if token.id in self._rows:
            raise AlreadyExists(self.kind, "id", str(token.id))
        if any(t.token_hash == token.token_hash for t in self._rows.values()):
            raise AlreadyExists(self.kind, "token_hash", token.token_hash.hex())
        if token.user_id not in self._uow.tables.users:
            raise _missing_parent(self.kind, "user_id", token.user_id, "users")
        self._rows[token.id] = token

    async def find(self, token_hash: bytes) -> RefreshToken | None:
        return next((t for t in self._rows.values() if t.token_hash == token_hash), None)

    async def revoke(self, token_id: uuid.UUID) -> None:
        """Like ``UPDATE ... WHERE id = $1``: an unknown id changes nothing."""
        token = self._rows.get(token_id)
        if token is not None:
            self._rows[token_id] = dataclasses.replace(token, revoked=True)

    async def revoke_all(self, user_id: uuid.UUID) -> None:
        for token in list(self._rows.values()):
            if token.user_id == user_id:
                self._rows[token.id] = dataclasses.replace(token, revoked=True)


class FakeTagKeyRepository:
    """Key batches and tag keys (adapter: ``key_batches`` + ``tag_keys``)."""

    kind: ClassVar[str] = "tag key"

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _batches(self) -> dict[uuid.UUID, StoredKeyBatch]:
        return self._uow.tables.key_batches

    @property
    def _keys(self) -> dict[uuid.UUID, StoredTagKey]:
        return self._uow.tables.tag_keys

    async def add_batch_header(self, batch: KeyBatch, kek_id: str) -> None:
        if batch.id in self._batches:
            raise AlreadyExists("key batch", "id", str(batch.id))
        self._batches[batch.id] = StoredKeyBatch(batch, kek_id)

    async def add_batch(self, batch: KeyBatch, keys: list[GeneratedKey], first_seq: int) -> None:
        """One COPY: all rows or none; unique indexes checked in order (MAC, key, seq)."""
        if batch.id not in self._batches:
            raise _missing_parent(self.kind, "batch_id", batch.id, "key_batches")
        rows = self._keys.values()
        macs = {r.key.mac_address.value for r in rows}
        advs = {r.key.advertisement_key.value for r in rows}
        seqs = {(r.key.batch_id, r.seq) for r in rows}
        staged: list[StoredTagKey] = []
        for i, generated in enumerate(keys):
            seq = first_seq + i
            mac, adv = generated.mac_address.value, generated.advertisement_key.value
            if mac in macs:
                raise AlreadyExists(self.kind, "mac_address", mac)
            if adv in advs:
                raise AlreadyExists(self.kind, "advertisement_key", adv.hex())
            if (batch.id, seq) in seqs:
                raise AlreadyExists(self.kind, "seq", str(seq))
            macs.add(mac)
            advs.add(adv)
            seqs.add((batch.id, seq))
            key = TagKey(
                id=uuid.uuid4(),
                batch_id=batch.id,
                advertisement_key=generated.advertisement_key,
                sealed_private_key=generated.sealed_private_key,
            )
            staged.append(StoredTagKey(seq, key))
        self._keys.update({row.key.id: row for row in staged})

    async def get_batch(self, batch_id: uuid.UUID) -> KeyBatch:
        try:
            return self._batches[batch_id].batch
        except KeyError:
            raise NotFound("key batch", str(batch_id)) from None

    async def batch_keys(
        self, batch_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[tuple[int, TagKey]]:
        rows = sorted(
            (r for r in self._keys.values() if r.key.batch_id == batch_id and r.seq > after_seq),
            key=lambda r: r.seq,
        )
        return [(r.seq, r.key) for r in rows[:limit]]

    async def by_macs(self, macs: list[str]) -> dict[str, TagKey]:
        """The keys found, by MAC; unknown MACs are simply absent."""
        wanted = set(macs)
        return {
            r.key.mac_address.value: r.key
            for r in self._keys.values()
            if r.key.mac_address.value in wanted
        }

    async def allocate(self, key_ids: list[uuid.UUID], client_id: uuid.UUID | None) -> None:
        """Like ``UPDATE ... WHERE id = ANY(..)``: unknown ids change nothing."""
        if client_id is not None and client_id not in self._uow.tables.clients:
            raise _missing_parent(self.kind, "client_id", client_id, "clients")
        for key_id in key_ids:
            row = self._keys.get(key_id)
            if row is not None:
                key = dataclasses.replace(row.key, client_id=client_id)
                self._keys[key_id] = StoredTagKey(row.seq, key)


class FakeReportRepository:
    """Reports by identity (adapter: ``reports``, primary key (tracker_id, report_time,
    latitude_e7, longitude_e7), ``INSERT ... ON CONFLICT DO NOTHING``)."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[ReportIdentity, Report]:
        return self._uow.tables.reports

    async def add_many(self, reports: list[Report]) -> int:
        new = 0
        for report in reports:
            if report.identity not in self._rows:
                self._rows[report.identity] = report
                new += 1
        return new

    async def add_rows(self, rows: ReportRows) -> int:
        return await self.add_many(rows.reports())

    async def count(self, tracker_id: uuid.UUID) -> int:
        """How many reports of the tracker are stored (as seen by this unit of work)."""
        return sum(1 for r in self._rows.values() if r.tracker_id == tracker_id)


class FakeFetchStateRepository:
    """The fetcher's view (adapter: ``adapters.postgres.fetching``): active trackers are those
    with a private key whose run is active; states of deleted trackers are not saved."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def _active(self, now: datetime, end_grace: timedelta = timedelta(0)) -> list[Tracker]:
        t = self._uow.tables
        out = []
        for tr in t.trackers.values():
            run = t.production_runs.get(tr.production_run_id)
            if tr.sealed_private_key is None or run is None:
                continue
            if run.start_time <= now < run.end_time + end_grace:
                out.append(tr)
        return out

    async def active_targets(
        self, now: datetime, end_grace: timedelta = timedelta(0)
    ) -> list[tuple[uuid.UUID, datetime | None]]:
        states = self._uow.tables.fetch_states
        return [
            (tr.id, states[tr.id].next_due if tr.id in states else None)
            for tr in self._active(now, end_grace)
        ]

    async def keys_for(
        self,
        ids: Sequence[uuid.UUID],
        now: datetime,
        floor: datetime,
        end_grace: timedelta = timedelta(0),
    ) -> list[FetchTarget]:
        wanted = set(ids)
        out = []
        for tr in self._active(now, end_grace):
            if tr.id in wanted and tr.sealed_private_key is not None:
                times = [
                    r.report_time
                    for r in self._uow.tables.reports.values()
                    if r.tracker_id == tr.id and r.report_time >= floor
                ]
                key = TrackerKey(tr.id, tr.advertisement_key, tr.sealed_private_key)
                run = self._uow.tables.production_runs[tr.production_run_id]
                out.append(
                    FetchTarget(
                        key,
                        max(times) if times else None,
                        self._uow.tables.fetch_states.get(tr.id),
                        run.start_time,
                        run.end_time,
                    )
                )
        return out

    async def with_new_reports(self, reports: Sequence[Report]) -> set[uuid.UUID]:
        return {r.tracker_id for r in reports if r.identity not in self._uow.tables.reports}

    async def save_many(self, states: Sequence[tuple[uuid.UUID, FetchState]]) -> None:
        for tracker_id, state in states:
            if tracker_id in self._uow.tables.trackers:
                self._uow.tables.fetch_states[tracker_id] = state

    async def get(self, tracker_id: uuid.UUID) -> FetchState | None:
        return self._uow.tables.fetch_states.get(tracker_id)


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


class FakeClock:
    """A settable clock, always timezone-aware UTC."""

    START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __init__(self, now: datetime = START) -> None:
        self._now = self.START
        self.set(now)

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("FakeClock needs a timezone-aware time")
        self._now = now.astimezone(UTC)

    def advance(self, delta: timedelta = timedelta(seconds=1)) -> datetime:
        self._now += delta
        return self._now


class FakePasswordHasher:
    """Deterministic and fast: ``fake$`` + SHA-256 of the password. Counts its calls."""

    PREFIX = "fake$"

    def __init__(self) -> None:
        self.hashed = 0
        self.verified = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1
        return self.PREFIX + hashlib.sha256(password.encode()).hexdigest()

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verified += 1
        expected = self.PREFIX + hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(password_hash.encode(), expected.encode())


class FakeTokenCodec:
    """``base64(json claims).hmac`` with a fixed key; expiry judged by the given clock."""

    def __init__(self, clock: FakeClock, key: bytes = b"unit-test-key") -> None:
        self._clock, self._key = clock, key

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def encode(self, claims: AccessClaims) -> str:
        raw = json.dumps(
            {
                "sub": str(claims.user_id),
                "jti": claims.token_id,
                "kind": claims.kind,
                "iat": claims.issued_at.isoformat(),
                "exp": claims.expires_at.isoformat(),
                "ver": claims.token_version,
            },
            separators=(",", ":"),
        )
        body = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def decode(self, token: str) -> AccessClaims:
        body, _, signature = token.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise Unauthenticated("invalid token")
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            claims = AccessClaims(
                user_id=uuid.UUID(data["sub"]),
                token_id=data["jti"],
                kind=data["kind"],
                issued_at=datetime.fromisoformat(data["iat"]),
                expires_at=datetime.fromisoformat(data["exp"]),
                token_version=int(data.get("ver", 0)),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise Unauthenticated("invalid token") from None
        if claims.expires_at <= self._clock.now():
            raise Unauthenticated("token expired")
        return claims


class FakeKeyPairFactory:
    """Deterministic key pairs: the n-th private key is ``sha256(n)[:28]``, its advertisement
    key ``sha256(b"pub" + private)[:28]``. All-zero and all-0xff private keys are rejected, as
    findmy rejects scalars outside the curve order. Safe to call from worker threads."""

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self._lock = threading.Lock()
        self.generated: list[tuple[bytes, AdvertisementKey]] = []
        self.threads: set[int] = set()

    @staticmethod
    def private_key(n: int) -> bytes:
        return hashlib.sha256(n.to_bytes(8, "big")).digest()[:PRIVATE_KEY_LENGTH]

    @staticmethod
    def derive(private_key: bytes) -> AdvertisementKey:
        return AdvertisementKey(hashlib.sha256(b"pub" + private_key).digest()[:28])

    def generate(self) -> tuple[bytes, AdvertisementKey]:
        with self._lock:
            n, self._next = self._next, self._next + 1
            self.threads.add(threading.get_ident())
            pair = (self.private_key(n), self.derive(self.private_key(n)))
            self.generated.append(pair)
        return pair

    def public_of(self, private_key: bytes) -> AdvertisementKey:
        if len(private_key) != PRIVATE_KEY_LENGTH or private_key in (
            bytes(PRIVATE_KEY_LENGTH),
            b"\xff" * PRIVATE_KEY_LENGTH,
        ):
            raise InvalidArgument("private_key", "not a valid P-224 private key")
        return self.derive(private_key)


class FakeSealer:
    """``tag(16) || plaintext XOR keystream``; keystream and tag depend on the key, the KEK id
    and the context, so the ciphertext never shows the plaintext and opens only with the same
    context (ValueError otherwise, like AesGcmSealer). Counts its seals."""

    active_kek_id: str

    def __init__(self, key: bytes = b"fake-kek", kek_id: str = "fake") -> None:
        self._key = key
        self.active_kek_id = kek_id
        self._lock = threading.Lock()
        self.seals = 0

    def _stream(self, kek_id: str, context: bytes, n: int) -> bytes:
        seed = self._key + kek_id.encode() + b"\x00" + context
        blocks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(n // 32 + 1))
        return b"".join(blocks)[:n]

    def _tag(self, kek_id: str, context: bytes, plaintext: bytes) -> bytes:
        msg = kek_id.encode() + b"\x00" + hashlib.sha256(context).digest() + plaintext
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:16]

    def seal(self, plaintext: bytes, context: bytes) -> SealedSecret:
        with self._lock:
            self.seals += 1
        kek = self.active_kek_id
        stream = self._stream(kek, context, len(plaintext))
        body = bytes(a ^ b for a, b in zip(plaintext, stream, strict=True))
        return SealedSecret(kek, self._tag(kek, context, plaintext) + body)

    def unseal(self, sealed: SealedSecret, context: bytes) -> bytes:
        if sealed.kek_id != self.active_kek_id:
            raise ValueError(f"KEK {sealed.kek_id!r} is not known")
        tag, body = sealed.ciphertext[:16], sealed.ciphertext[16:]
        stream = self._stream(sealed.kek_id, context, len(body))
        plaintext = bytes(a ^ b for a, b in zip(body, stream, strict=True))
        if not hmac.compare_digest(tag, self._tag(sealed.kek_id, context, plaintext)):
            raise ValueError("sealed secret does not open with its KEK and context")
        return plaintext


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


class FakeFetchQueue:
    """The Redis queue's contract (``adapters.redis.queue``) in memory: claims take the lowest
    due times first, ties by id; dead workers' claims and expired leases go back due now."""

    def __init__(self, worker_ttl: timedelta = timedelta(seconds=15)) -> None:
        self.due: dict[uuid.UUID, datetime] = {}
        self.leases: dict[uuid.UUID, datetime] = {}
        self.owner: dict[uuid.UUID, str] = {}
        self.workers: dict[str, datetime] = {}
        self.synced: datetime | None = None
        self.sync_lock: str | None = None
        self.worker_ttl = worker_ttl
        self.capacity: Capacity | None = None

    def _back(self, tracker_id: uuid.UUID, now: datetime) -> None:
        self.leases.pop(tracker_id, None)
        self.owner.pop(tracker_id, None)
        self.due[tracker_id] = now

    async def claim(
        self,
        worker: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        horizon: timedelta = timedelta(0),
    ) -> ClaimBatch:
        reclaimed = 0
        for w, until in list(self.workers.items()):
            if until < now and w != worker:
                for m in [m for m, o in self.owner.items() if o == w]:
                    self._back(m, now)
                    reclaimed += 1
                del self.workers[w]
        self.workers[worker] = now + self.worker_ttl
        for m, until in list(self.leases.items()):
            if until < now:
                self._back(m, now)
                reclaimed += 1
        ready = []
        if any(d <= now for d in self.due.values()):
            ready = sorted((d, str(m), m) for m, d in self.due.items() if d <= now + horizon)
            ready = ready[:limit]
        claims = []
        for d, _, m in ready:
            del self.due[m]
            self.leases[m] = now + lease
            self.owner[m] = worker
            claims.append(Claim(m, d))
        head = min(self.due.values(), default=None)
        return ClaimBatch(claims, head, lost=self.synced is None, reclaimed=reclaimed)

    async def complete(self, worker: str, done: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        n = 0
        for m, due in done:
            if self.owner.get(m) == worker:
                del self.owner[m]
                del self.leases[m]
                self.due[m] = due
                n += 1
        return n

    async def heartbeat(self, worker: str, alive_until: datetime) -> None:
        self.workers[worker] = alive_until

    async def leave(self, worker: str, now: datetime) -> int:
        mine = [m for m, o in self.owner.items() if o == worker]
        for m in mine:
            self._back(m, now)
        self.workers.pop(worker, None)
        return len(mine)

    async def members(self) -> set[uuid.UUID]:
        return set(self.due) | set(self.leases)

    async def add_missing(self, entries: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        n = 0
        for m, due in entries:
            if m not in self.due and m not in self.leases:
                self.due[m] = due
                n += 1
        return n

    async def remove(self, ids: Sequence[uuid.UUID]) -> int:
        n = 0
        for m in ids:
            n += (self.due.pop(m, None) is not None) + (self.leases.pop(m, None) is not None)
            self.owner.pop(m, None)
        return n

    async def mark_synced(self, now: datetime) -> None:
        self.synced = now

    async def try_lock_sync(self, worker: str, ttl: timedelta) -> bool:
        if self.sync_lock is not None:
            return False
        self.sync_lock = worker
        return True

    async def unlock_sync(self, worker: str) -> None:
        if self.sync_lock == worker:
            self.sync_lock = None

    async def stats(self, now: datetime) -> QueueStats:
        return QueueStats(
            queued=len(self.due),
            due_now=sum(1 for d in self.due.values() if d <= now),
            claimed=len(self.leases),
            workers=sum(1 for d in self.workers.values() if d >= now),
            oldest_due=min(self.due.values(), default=None),
            capacity=self.capacity,
        )

    async def publish_capacity(self, capacity: Capacity, now: datetime) -> None:
        self.capacity = capacity

    async def entry(self, tracker_id: uuid.UUID) -> QueuePlace | None:
        if tracker_id not in self.due and tracker_id not in self.leases:
            return None
        return QueuePlace(
            tracker_id=tracker_id,
            queued=tracker_id in self.due,
            claimed_by=self.owner.get(tracker_id),
            due=self.due.get(tracker_id),
            lease_until=self.leases.get(tracker_id),
        )


class FakeAccountGate:
    """One holder per account at a time and an earliest next request (``adapters.redis``);
    a holder that is not a live worker of ``queue`` loses the account to the next asking."""

    def __init__(self, queue: FakeFetchQueue | None = None) -> None:
        self.holder: dict[str, str] = {}
        self.next: dict[str, datetime] = {}
        self.acquired = 0
        self._queue = queue or FakeFetchQueue()

    async def acquire(
        self,
        account: str,
        holder: str,
        now: datetime,
        hold: timedelta,
        pace: timedelta = timedelta(0),
    ) -> float:
        if account not in self.next and pace > timedelta(0):
            self.next[account] = now + pace
            return pace.total_seconds()
        allowed = self.next.get(account)
        if allowed is not None and allowed > now:
            return (allowed - now).total_seconds()
        current = self.holder.get(account)
        alive = self._queue.workers.get(current or "")
        if current not in (None, holder) and alive is not None and alive >= now:
            return 0.001
        self.holder[account] = holder
        self.acquired += 1
        return 0.0

    async def renew(self, account: str, holder: str, hold: timedelta) -> bool:
        return self.holder.get(account) == holder

    async def release(self, account: str, holder: str, next_allowed: datetime) -> None:
        self.next[account] = next_allowed
        if self.holder.get(account) == holder:
            del self.holder[account]
