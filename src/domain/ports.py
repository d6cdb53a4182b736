"""Ports: what use cases need from the outside world, declared by their consumer.

Implementations live in ``adapters`` (``Postgres*``, ``Redis*``); in-memory fakes in tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, TypeVar

from domain.access import AccessClaims, RefreshToken, User
from domain.fetching import FetchOutcome, FetchTarget, TrackerKey
from domain.geo import NearestCity
from domain.history import CurrentStatus, Granularity, LocationPoint, TrackerStatusChange
from domain.keys import GeneratedKey, KeyBatch, SealedSecret, TagKey
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    Entity,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    Tracker,
)
from domain.pagination import Page, PageRequest
from domain.processing import ProcessingBacklog, QuarantinedTracker
from domain.reports import Report, ReportRows, TrackerRef
from domain.scheduling import (
    Capacity,
    ClaimBatch,
    FetchState,
    QueuePlace,
    QueueStats,
    SyncResult,
)
from domain.status import (
    Reading,
    ReportKey,
    ResumePoint,
    RuleState,
    StatusChange,
    StatusRule,
)
from domain.throttling import ThrottleKey

E = TypeVar("E", bound=Entity)
F_contra = TypeVar("F_contra", contravariant=True)
T = TypeVar("T")


# Every filter has ``visible_clients``: the clients the caller may read (None: all). Use cases
# set it from the caller; repositories must never return a row outside it.


@dataclass(frozen=True, slots=True)
class ClientFilter:
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class BrandFilter:
    client_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class ProductionRunFilter:
    brand_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class LocationFilter:
    production_run_id: uuid.UUID | None = None
    kind: LocationKind | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class TrackerFilter:
    client_id: uuid.UUID | None = None
    production_run_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Users with a membership in one of ``visible_clients`` (None: every user)."""

    visible_clients: frozenset[uuid.UUID] | None = None


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
    async def by_hashed_keys(self, hashed: list[bytes]) -> dict[bytes, Tracker]:
        """The trackers of these hashed advertisement keys (those that exist)."""
        ...

    async def refs(self, ids: list[uuid.UUID], hashed: list[bytes]) -> list[TrackerRef]:
        """The trackers with these ids or these hashed advertisement keys (those that
        exist), in one round trip: only what storing their reports needs."""
        ...

    async def add_many(self, trackers: list[Tracker]) -> None:
        """Insert all or none; AlreadyExists names the first clashing MAC or key."""
        ...


class UserRepository(Protocol):
    """Users with their memberships. ``add`` raises AlreadyExists(field "email")."""

    async def add(self, user: User) -> None: ...

    async def get(self, user_id: uuid.UUID) -> User: ...

    async def find_by_email(self, email: str) -> User | None: ...

    async def update(self, user: User) -> None:
        """Store the user's fields and replace its memberships. ``token_version`` never
        decreases, and a user read before the latest password change (an older version)
        does not overwrite the newer password hash."""
        ...

    async def delete(self, user_id: uuid.UUID) -> None: ...

    async def list(self, filter: UserFilter, page: PageRequest) -> Page[User]: ...


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def find(self, token_hash: bytes) -> RefreshToken | None:
        """The token, locked until the unit of work ends: two refreshes with one token run
        one after the other, and the second sees the first one's revocation."""
        ...

    async def revoke(self, token_id: uuid.UUID) -> None: ...

    async def revoke_all(self, user_id: uuid.UUID) -> None: ...


class ReportRepository(Protocol):
    async def add_many(self, reports: list[Report]) -> int:
        """Store reports idempotently; returns how many were not stored before."""
        ...

    async def add_rows(self, rows: ReportRows) -> int:
        """The same for reports in columns (the bulk path: no entity per report)."""
        ...


class FetchStateRepository(Protocol):
    """The fetcher's view of PostgreSQL."""

    async def active_targets(
        self, now: datetime, end_grace: timedelta = timedelta(0)
    ) -> list[tuple[uuid.UUID, datetime | None]]:
        """Trackers of runs active at ``now`` (started, and ended less than ``end_grace``
        ago) that have a private key, with the due time saved after their last turn (None:
        never fetched)."""
        ...

    async def keys_for(
        self,
        ids: Sequence[uuid.UUID],
        now: datetime,
        floor: datetime,
        end_grace: timedelta = timedelta(0),
    ) -> list[FetchTarget]:
        """Keys of those of ``ids`` still active, each with its latest report time (>= floor),
        its saved state and its run's window."""
        ...

    async def with_new_reports(self, reports: Sequence[Report]) -> set[uuid.UUID]:
        """Trackers of which at least one of ``reports`` is not stored yet (asked before
        storing them, in the same transaction)."""
        ...

    async def save_many(self, states: Sequence[tuple[uuid.UUID, FetchState]]) -> None: ...

    async def get(self, tracker_id: uuid.UUID) -> FetchState | None: ...


class UnitOfWork(Protocol):
    """One transaction over the repositories; rolled back unless ``commit`` was awaited."""

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

    async def retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` again after a transient failure (connection lost, deadlock, ...), a
        bounded number of times with jittered pauses; the last failure is raised as
        ``TransientError``. Only for work that is safe to repeat: it opens its own units of
        work, and running it twice leaves the same state as once."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class PasswordHasher(Protocol):
    """A memory-hard KDF; slow on purpose, so implementations run off the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...


class TokenCodec(Protocol):
    """Signs and checks access tokens; ``decode`` raises Unauthenticated for any defect."""

    def encode(self, claims: AccessClaims) -> str: ...

    def decode(self, token: str) -> AccessClaims: ...


class KeyPairFactory(Protocol):
    """Makes P-224 key pairs the way Find My tags use them (the keys adapter wraps findmy)."""

    def generate(self) -> tuple[bytes, AdvertisementKey]:
        """A new (private key, advertisement key) pair."""
        ...

    def public_of(self, private_key: bytes) -> AdvertisementKey:
        """The advertisement key of a private key; InvalidArgument if it is not one."""
        ...


class SecretSealer(Protocol):
    """Authenticated encryption under a key-encryption key (KEK) with an id, for rotation.
    ``context`` is bound into the ciphertext (a sealed value cannot be moved to another row)."""

    active_kek_id: str

    def seal(self, plaintext: bytes, context: bytes) -> SealedSecret: ...

    def unseal(self, sealed: SealedSecret, context: bytes) -> bytes: ...


class TagKeyRepository(Protocol):
    async def add_batch(self, batch: KeyBatch, keys: list[GeneratedKey], first_seq: int) -> None:
        """Store keys of a batch (in chunks; ``first_seq`` numbers them within the batch).
        AlreadyExists on a clashing key or MAC."""
        ...

    async def add_batch_header(self, batch: KeyBatch, kek_id: str) -> None: ...

    async def get_batch(self, batch_id: uuid.UUID) -> KeyBatch: ...

    async def batch_keys(
        self, batch_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[tuple[int, TagKey]]:
        """Keys of a batch in order, after sequence number ``after_seq``."""
        ...

    async def by_macs(self, macs: list[str]) -> dict[str, TagKey]: ...

    async def allocate(self, key_ids: list[uuid.UUID], client_id: uuid.UUID | None) -> None: ...


class LocationSource(Protocol):
    """Where reports come from (Find My). Raises a ``SourceError`` when a fetch fails as a
    whole; undecryptable or malformed single reports are counted in the outcome instead."""

    async def fetch(
        self, keys: Sequence[TrackerKey], since: datetime, until: datetime
    ) -> FetchOutcome: ...


class DependencyProbe(Protocol):
    """A live check of one backing service, used by health reporting."""

    name: str

    async def check(self) -> None:
        """Return if the dependency answers; raise anything otherwise."""
        ...


class FetchQueue(Protocol):
    """The shared queue of trackers to fetch, ordered by due time (Redis). Every method is
    atomic; connection failures raise DependencyUnavailable."""

    async def claim(
        self,
        worker: str,
        limit: int,
        now: datetime,
        lease: timedelta,
        horizon: timedelta = timedelta(0),
    ) -> ClaimBatch:
        """Up to ``limit`` trackers leased to ``worker``, most overdue first: nothing unless
        one is due at ``now``; then the batch is filled with those due before ``now +
        horizon``, soonest first. Claims of dead workers and expired leases go back to the
        queue first."""
        ...

    async def complete(self, worker: str, done: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        """Requeue ``worker``'s claims at the given due times; claims it no longer holds
        (reclaimed, or removed from the queue) are left alone. Returns how many."""
        ...

    async def heartbeat(self, worker: str, alive_until: datetime) -> None: ...

    async def leave(self, worker: str, now: datetime) -> int:
        """A clean stop: ``worker``'s claims go back to the queue, due now."""
        ...

    async def members(self) -> set[uuid.UUID]:
        """Every tracker queued or claimed."""
        ...

    async def add_missing(self, entries: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        """Queue those entries that are neither queued nor claimed; returns how many."""
        ...

    async def remove(self, ids: Sequence[uuid.UUID]) -> int: ...

    async def mark_synced(self, now: datetime) -> None:
        """Record that the queue holds the whole active fleet (``lost`` turns false)."""
        ...

    async def try_lock_sync(self, worker: str, ttl: timedelta) -> bool: ...

    async def unlock_sync(self, worker: str) -> None: ...

    async def stats(self, now: datetime) -> QueueStats: ...

    async def entry(self, tracker_id: uuid.UUID) -> QueuePlace | None: ...

    async def publish_capacity(self, capacity: Capacity, now: datetime) -> None:
        """Record the fleet's capacity figure, read back by ``stats``."""
        ...


class AccountGate(Protocol):
    """One request at a time per source account, across every fetcher process, and a
    minimum gap between requests (Redis)."""

    async def acquire(
        self,
        account: str,
        holder: str,
        now: datetime,
        hold: timedelta,
        pace: timedelta = timedelta(0),
    ) -> float:
        """0 if ``holder`` now holds the account (for at most ``hold``), else seconds to wait.
        An account with no record of its last request (never used, or the record was lost)
        waits ``pace`` first: the last request may have been a moment ago."""
        ...

    async def renew(self, account: str, holder: str, hold: timedelta) -> bool:
        """Extend ``holder``'s hold on the account to ``hold`` from now; False if it does
        not hold it."""
        ...

    async def release(self, account: str, holder: str, next_allowed: datetime) -> None: ...


class FetchMetrics(Protocol):
    """What the fetcher reports about its work (Prometheus in production)."""

    def claimed(self, n: int) -> None: ...

    def request(self, account: str, outcome: str, seconds: float) -> None: ...

    def finished(self, result: str, factor: int) -> None: ...

    def reports(self, fetched: int, stored: int, malformed: int) -> None: ...

    def queue(self, stats: QueueStats) -> None: ...

    def synced(self, reason: str, result: SyncResult) -> None: ...

    def capacity(self, capacity: Capacity) -> None: ...

    def error(self, kind: str) -> None: ...


# --- Processing: geocoding, roll-ups, status (issue 6) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A tracker with new reports, claimed by one worker: since when, which hours, and the
    queue row's version (new reports meanwhile change it, so the row stays queued)."""

    tracker_id: uuid.UUID
    since: datetime
    hours: tuple[datetime, ...]
    version: int
    enqueue_time: datetime
    attempts: int = 0  # failures in a row before this claim (> 0: quarantined, retried)


class ProcessingQueue(Protocol):
    """Trackers with reports not yet processed (written with the reports themselves)."""

    async def claim(self, token: uuid.UUID, limit: int, lease_s: float) -> list[Claim]:
        """Up to ``limit`` unclaimed (or lease-expired) trackers, oldest first, leased to
        ``token`` for ``lease_s`` seconds; no two live claims share a tracker. Quarantined
        trackers come only once their retry time has come."""
        ...

    async def release(self, token: uuid.UUID) -> None:
        """Hand back every claim still held by ``token`` at once (a failed batch)."""
        ...

    async def quarantine(
        self, token: uuid.UUID, tracker_id: uuid.UUID, reason: str, delay_s: float
    ) -> None:
        """The claim of ``tracker_id`` failed on its own: release it, count the failure,
        keep ``reason`` and hold it back ``delay_s`` seconds."""
        ...

    async def backlog(self) -> ProcessingBacklog: ...

    async def quarantined(self, page: PageRequest) -> Page[QuarantinedTracker]:
        """Quarantined trackers by id."""
        ...

    async def retry_now(self, tracker_id: uuid.UUID) -> bool:
        """Make a quarantined tracker due at once; False if it is not quarantined."""
        ...


class Geocoder(Protocol):
    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        """The nearest city of each point (None when no city is known at all)."""
        ...


@dataclass(frozen=True, slots=True)
class StatusInput:
    """What re-evaluating one tracker starts from."""

    tracker_id: uuid.UUID
    rule: StatusRule
    checkpoint: tuple[ReportKey, RuleState] | None
    last_change_before_since: StatusChange | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome for one tracker: history after ``resume.after`` is replaced by
    ``changes``; ``state``/``last`` are the new checkpoint (``last`` None: no new reading)."""

    tracker_id: uuid.UUID
    resume: ResumePoint
    state: RuleState
    changes: list[StatusChange]
    last: Reading | None


class ProcessingUnitOfWork(Protocol):
    """One transaction of a worker over a batch of claimed trackers."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def lock(self, token: uuid.UUID, claims: Sequence[Claim]) -> list[Claim]:
        """The claims still held by ``token`` whose tracker could be locked until commit
        (a worker whose lease ran out cannot race a newer worker)."""
        ...

    async def ungeocoded(
        self, claims: Sequence[Claim]
    ) -> list[tuple[uuid.UUID, ReportKey, GeoPoint]]:
        """Reports in the claimed hours without a nearest city."""
        ...

    async def set_nearest_cities(
        self, rows: Sequence[tuple[uuid.UUID, ReportKey, int]]
    ) -> None: ...

    async def reroll(self, claims: Sequence[Claim]) -> int:
        """Recompute the hourly buckets the claims touch and their days; returns how many
        hourly buckets were recomputed."""
        ...

    async def status_inputs(self, claims: Sequence[Claim]) -> list[StatusInput]: ...

    async def readings(
        self, starts: Mapping[uuid.UUID, ReportKey | None]
    ) -> dict[uuid.UUID, list[Reading]]:
        """Each tracker's reports after its start key that count under its run's rule,
        classified against its run's geofences, in key order."""
        ...

    async def save_statuses(self, evaluations: Sequence[Evaluation]) -> None: ...

    async def complete(
        self, token: uuid.UUID, done: Sequence[Claim], claimed: Sequence[Claim]
    ) -> None:
        """Dequeue the claims ``done``, except those with newer reports meanwhile, and the
        claims of trackers that no longer exist; release the other claims of ``claimed``
        (still ``token``'s) for another try. Queue rows are locked in tracker order."""
        ...


class ProcessingUnitOfWorkFactory(Protocol):
    def __call__(self) -> ProcessingUnitOfWork: ...


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Status or location history: one tracker (or every visible one), a time range."""

    tracker_id: uuid.UUID | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


class StatusRepository(Protocol):
    """What the query server reads of processing, and the per-run status rules."""

    async def tracker_clients(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """The client of each tracker that exists."""
        ...

    async def current(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CurrentStatus]:
        """Current status of each existing tracker (with its client, for access checks)."""
        ...

    async def status_history(
        self, filter: HistoryFilter, page: PageRequest
    ) -> Page[TrackerStatusChange]: ...

    async def location_history(
        self,
        filter: HistoryFilter,
        granularity: Granularity,
        min_confidence: int,
        page: PageRequest,
    ) -> Page[LocationPoint]: ...

    async def status_rule(self, production_run_id: uuid.UUID) -> StatusRule: ...

    async def set_status_rule(self, production_run_id: uuid.UUID, rule: StatusRule) -> None: ...

    async def reevaluate_run(self, production_run_id: uuid.UUID) -> int:
        """Queue every tracker of the run for a full re-evaluation; returns how many."""
        ...


class AttemptThrottle(Protocol):
    """Counts attempts per key (an account, an address) and locks keys that had too many,
    after the rule of ``domain.throttling``; shared by every replica where it can be."""

    async def attempt(self, keys: Sequence[ThrottleKey]) -> timedelta | None:
        """None: go ahead (one attempt is counted on every key). Otherwise how long the
        caller must wait: a key is locked (nothing counted), or this attempt was one too
        many and locked it."""
        ...

    async def succeeded(self, reset: Sequence[ThrottleKey], refund: Sequence[ThrottleKey]) -> None:
        """The attempt succeeded: clear the counts of ``reset``, hand one back on ``refund``."""
        ...
