"""The fakes' shared store (the committed tables a unit of work copies), the generic
repository of setup resources, and the settable clock.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from domain.access import RefreshToken, User
from domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from domain.keys import KeyBatch, TagKey
from domain.model import (
    Brand,
    Client,
    Entity,
    Location,
    ProductionRun,
    Tracker,
)
from domain.pagination import Page, PageRequest
from domain.reports import Report
from domain.scheduling import (
    FetchState,
)

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork


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


ReportIdentity = tuple[uuid.UUID, datetime, int, int]


@dataclass(frozen=True, slots=True)
class StoredTagKey:
    """A ``tag_keys`` row: the key and its place in its batch."""

    seq: int
    key: TagKey


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
    fetch_accounts: dict[uuid.UUID, str] = field(default_factory=dict)
    # detectors (issue 16); rows are immutable values, so copying the dicts is enough
    detectors: dict[uuid.UUID, Any] = field(default_factory=dict)
    links: dict[tuple[uuid.UUID, uuid.UUID], Any] = field(default_factory=dict)
    sightings: dict[tuple[uuid.UUID, Any, bytes], Any] = field(default_factory=dict)
    statuses: dict[tuple[uuid.UUID, Any], Any] = field(default_factory=dict)
    travel_times: dict[tuple[uuid.UUID, uuid.UUID, Any], Any] = field(default_factory=dict)
    travel_work: dict[uuid.UUID, Any] = field(default_factory=dict)
    # bulk jobs (tests/unit/fakes/jobs.py): rows as immutable values, by key
    jobs: dict[uuid.UUID, Any] = field(default_factory=dict)
    job_batches: dict[tuple[uuid.UUID, int], Any] = field(default_factory=dict)
    job_items: dict[tuple[uuid.UUID, int, int], Any] = field(default_factory=dict)
    job_failures: dict[tuple[uuid.UUID, int, int], Any] = field(default_factory=dict)
    processing_inbox: dict[int, tuple[uuid.UUID, datetime]] = field(default_factory=dict)

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
