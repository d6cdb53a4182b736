"""Ports of the fetching capability: the fleet's fetch state, the source of reports (Find
My), the shared queue, the per-account gate and the fetcher's metrics.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from domain.fetching import FetchOutcome, FetchTarget, TrackerKey
from domain.ports.common import Transaction
from domain.ports.reports import ReportRepository
from domain.ports.setup import ProductionRunRepository, TrackerRepository
from domain.reports import Report
from domain.scheduling import (
    Capacity,
    ClaimBatch,
    FetchState,
    QueuePlace,
    QueueStats,
    SyncResult,
)


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
        overlap: timedelta = timedelta(0),
    ) -> list[FetchTarget]:
        """Keys of those of ``ids`` still active, each with its latest report time (>= floor),
        its saved state and its run's window; each key with the times of the reports held
        from its latest minus ``overlap`` on (``TrackerKey.held``)."""
        ...

    async def with_new_reports(self, reports: Sequence[Report]) -> set[uuid.UUID]:
        """Trackers of which at least one of ``reports`` is not stored yet (asked before
        storing them, in the same transaction)."""
        ...

    async def save_many(
        self, states: Sequence[tuple[uuid.UUID, FetchState]], account: str | None = None
    ) -> None:
        """Upsert the states; ``account``: the source account that fetched them (kept per
        tracker, for the Apple-account cohort of outage detection)."""
        ...

    async def get(self, tracker_id: uuid.UUID) -> FetchState | None: ...


class LocationSource(Protocol):
    """Where reports come from (Find My). Raises a ``SourceError`` when a fetch fails as a
    whole; undecryptable or malformed single reports are counted in the outcome instead."""

    async def fetch(
        self, keys: Sequence[TrackerKey], since: datetime, until: datetime
    ) -> FetchOutcome: ...


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

    async def hold(
        self, worker: str, ids: Sequence[uuid.UUID], now: datetime, lease: timedelta
    ) -> set[uuid.UUID]:
        """Of ``ids``, those ``worker`` still holds, their leases renewed to ``now + lease``
        (and the worker known alive); the others were taken over (it looked dead, or its
        lease ran out) and are another fetcher's to serve now."""
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

    async def last_synced(self) -> datetime | None:
        """When the queue was last rebuilt (by any fetcher); None: never, or Redis lost it."""
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

    def finished(self, turns: Mapping[tuple[str, int], int]) -> None:
        """Trackers requeued after a turn, counted by (result, backoff factor): once per
        batch, not per tracker."""
        ...

    def reports(self, fetched: int, stored: int, malformed: int) -> None: ...

    def queue(self, stats: QueueStats) -> None: ...

    def synced(self, reason: str, result: SyncResult) -> None: ...

    def capacity(self, capacity: Capacity) -> None: ...

    def error(self, kind: str) -> None: ...


class FetchingUnitOfWork(Transaction, Protocol):
    """A transaction of the fetcher: reports fetched and each tracker's fetch state."""

    production_runs: ProductionRunRepository
    trackers: TrackerRepository
    reports: ReportRepository
    fetch_states: FetchStateRepository
