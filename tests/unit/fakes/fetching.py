"""Fakes of the fetching ports (``domain.ports.fetching``): fetch state, the queue and the
account gate (the queue's contract: ``tests/contract/test_fetch_queue_ports.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.fetching import FetchTarget, TrackerKey
from domain.model import (
    Tracker,
)
from domain.reports import Report
from domain.scheduling import (
    Capacity,
    Claim,
    ClaimBatch,
    FetchState,
    QueuePlace,
    QueueStats,
)

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork


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
        overlap: timedelta = timedelta(0),
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
                latest = max(times) if times else None
                held = tuple(sorted(t for t in times if latest and t >= latest - overlap))
                key = TrackerKey(tr.id, tr.advertisement_key, tr.sealed_private_key, held=held)
                run = self._uow.tables.production_runs[tr.production_run_id]
                out.append(
                    FetchTarget(
                        key,
                        latest,
                        self._uow.tables.fetch_states.get(tr.id),
                        run.start_time,
                        run.end_time,
                    )
                )
        return out

    async def with_new_reports(self, reports: Sequence[Report]) -> set[uuid.UUID]:
        return {r.tracker_id for r in reports if r.identity not in self._uow.tables.reports}

    async def save_many(
        self, states: Sequence[tuple[uuid.UUID, FetchState]], account: str | None = None
    ) -> None:
        for tracker_id, state in states:
            if tracker_id in self._uow.tables.trackers:
                self._uow.tables.fetch_states[tracker_id] = state
                if account is not None:
                    self._uow.tables.fetch_accounts[tracker_id] = account

    async def get(self, tracker_id: uuid.UUID) -> FetchState | None:
        return self._uow.tables.fetch_states.get(tracker_id)


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
        return ClaimBatch(
            claims, head, lost=self.synced is None and self.sync_lock is None, reclaimed=reclaimed
        )

    async def complete(self, worker: str, done: Sequence[tuple[uuid.UUID, datetime]]) -> int:
        n = 0
        for m, due in done:
            if self.owner.get(m) == worker:
                del self.owner[m]
                del self.leases[m]
                self.due[m] = due
                n += 1
        return n

    async def hold(
        self, worker: str, ids: Sequence[uuid.UUID], now: datetime, lease: timedelta
    ) -> set[uuid.UUID]:
        mine = {m for m in ids if self.owner.get(m) == worker}
        for m in mine:
            self.leases[m] = now + lease
        if mine:
            self.workers[worker] = now + self.worker_ttl
        return mine

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

    async def last_synced(self) -> datetime | None:
        return self.synced

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
