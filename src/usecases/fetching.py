"""Fetching reports of trackers from the location source and storing them. The fetcher
process (scheduling, leases, backoff) builds on this; ``trackerctl findmy fetch`` runs it once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from domain.access import Principal, require_admin, require_manage
from domain.errors import DependencyUnavailable, DomainError, FailedPrecondition
from domain.fetching import FetchOutcome, SourceError, TrackerKey
from domain.model import Tracker
from domain.pagination import PageRequest
from domain.ports import (
    AccountGate,
    Clock,
    FetchMetrics,
    FetchQueue,
    LocationSource,
    TrackerFilter,
    UnitOfWorkFactory,
)
from domain.scheduling import (
    MAX_REPORT_AGE,
    AccountPolicy,
    FetchPolicy,
    FetchResult,
    FetchState,
    QueueEntry,
    QueueStats,
    SyncResult,
)

log = logging.getLogger("tracker.fetcher")
T = TypeVar("T")

DEFAULT_KEYS_PER_REQUEST = 64


@dataclass(frozen=True, slots=True)
class FetchSummary:
    trackers: int
    without_key: int
    requests: int
    reports: int
    stored: int
    malformed: int


def tracker_key(t: Tracker) -> TrackerKey | None:
    if t.sealed_private_key is None:
        return None
    return TrackerKey(t.id, t.advertisement_key, t.sealed_private_key)


class FetchRunReports:
    """Fetch every tracker of a production run once (batched per request) and store what
    comes back. Trackers without a private key cannot be decrypted and are counted."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        source: LocationSource,
        clock: Clock,
        keys_per_request: int = DEFAULT_KEYS_PER_REQUEST,
    ) -> None:
        self._uow, self._source, self._clock = uow, source, clock
        self._per_request = keys_per_request

    async def __call__(self, caller: Principal, run_id: uuid.UUID) -> FetchSummary:
        async with self._uow() as uow:
            run = await uow.production_runs.get(run_id)
            require_manage(caller, run.client_id, run.KIND, run_id)
            trackers: list[Tracker] = []
            after = None
            while True:
                page = await uow.trackers.list(
                    TrackerFilter(production_run_id=run.id), PageRequest(size=1000, after=after)
                )
                trackers += page.items
                if page.next_after is None:
                    break
                after = page.next_after
        keys = [k for k in map(tracker_key, trackers) if k is not None]
        return await self._fetch(keys, without_key=len(trackers) - len(keys))

    async def _fetch(self, keys: Sequence[TrackerKey], without_key: int) -> FetchSummary:
        now = self._clock.now()
        requests = reports = stored = malformed = 0
        for start in range(0, len(keys), self._per_request):
            outcome = await self._source.fetch(
                keys[start : start + self._per_request], now - MAX_REPORT_AGE, now
            )
            requests += 1
            reports += len(outcome.reports)
            malformed += outcome.malformed
            async with self._uow() as uow:
                stored += await uow.reports.add_many(outcome.reports)
                await uow.commit()
        return FetchSummary(
            trackers=len(keys) + without_key,
            without_key=without_key,
            requests=requests,
            reports=reports,
            stored=stored,
            malformed=malformed,
        )


# -- the fetcher: a shared queue, leases, backoff, paced accounts ---------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """One source account (a Find My login) and the source that fetches with it."""

    name: str
    source: LocationSource


@dataclass(frozen=True, slots=True)
class FetcherConfig:
    worker_id: str
    policy: FetchPolicy
    account_policy: AccountPolicy = field(default_factory=AccountPolicy)
    keys_per_request: int = DEFAULT_KEYS_PER_REQUEST
    lease: timedelta = timedelta(minutes=2)
    heartbeat: timedelta = timedelta(seconds=5)
    worker_ttl: timedelta = timedelta(seconds=15)
    queue_check: timedelta = timedelta(minutes=1)
    idle_poll: timedelta = timedelta(seconds=1)
    request_timeout: timedelta = timedelta(seconds=30)
    max_retry_wait: timedelta = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Turn:
    served: int
    """Trackers claimed and requeued."""
    requested: bool
    """A request went to the source (the account must then keep its pace)."""
    next_due: datetime | None
    """When the earliest tracker still queued falls due."""


class NullFetchMetrics:
    def claimed(self, n: int) -> None: ...

    def request(self, account: str, outcome: str, seconds: float) -> None: ...

    def finished(self, result: str, factor: int) -> None: ...

    def reports(self, fetched: int, stored: int, malformed: int) -> None: ...

    def queue(self, stats: QueueStats) -> None: ...

    def synced(self, reason: str, result: SyncResult) -> None: ...

    def error(self, kind: str) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


class FetchWorker:
    """One fetcher process's work. Any number of them share the queue.

    Per account, a loop: take the account's gate (one request at a time across every
    process, paced), claim up to ``keys_per_request`` due trackers, fetch them in one request,
    store the reports and the trackers' new state in PostgreSQL, then requeue them in Redis
    (in that order: a crash in between only means a harmless second fetch). Beside it, a
    heartbeat, and a periodic rebuild of the queue from PostgreSQL (which also adds trackers of
    new or extended runs and removes those of ended ones). Outages of PostgreSQL or Redis are
    waited out with growing pauses; reports already fetched are kept until they are stored.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        queue: FetchQueue,
        gate: AccountGate,
        accounts: Sequence[Account],
        clock: Clock,
        config: FetcherConfig,
        metrics: FetchMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not accounts:
            raise FailedPrecondition("the fetcher needs at least one source account")
        self._uow, self._queue, self._gate = uow, queue, gate
        self._accounts = list(accounts)
        self._clock, self._config = clock, config
        self._metrics = metrics or NullFetchMetrics()
        self._sleep = sleep
        self._stopping = asyncio.Event()
        self._sync_wanted = asyncio.Event()
        self._sync_reason = "start"
        self._account_failures: dict[str, int] = {}
        self._retry_after: dict[str, float | None] = {}
        self.turns = 0

    # -- life cycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Until ``stop``: rebuild the queue, then fetch with every account."""
        self.want_sync("start")
        # Registered before holding any account: a holder must be known alive to keep it.
        await self._retry(
            "redis",
            lambda: self._queue.heartbeat(
                self._config.worker_id, self._clock.now() + self._config.worker_ttl
            ),
        )
        tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="fetch-heartbeat"),
            asyncio.create_task(self._sync_loop(), name="fetch-sync"),
            *(
                asyncio.create_task(self._account_loop(a), name=f"fetch-{a.name}")
                for a in self._accounts
            ),
        ]
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                back = await self._queue.leave(self._config.worker_id, self._clock.now())
                log.info("fetcher left the queue", extra={"returned_claims": back})
            except DomainError as exc:
                log.warning("could not return claims on stop", extra={"error": str(exc)})

    def stop(self) -> None:
        self._stopping.set()

    def want_sync(self, reason: str) -> None:
        self._sync_reason = reason
        self._sync_wanted.set()

    # -- one turn (public for tests and benchmarks) --------------------------------------
    async def turn(self, account: Account) -> Turn:
        """Claim, fetch and complete one batch with ``account`` (whose gate the caller
        holds)."""
        cfg, now = self._config, self._clock.now()
        batch = await self._queue.claim(cfg.worker_id, cfg.keys_per_request, now, cfg.lease)
        if batch.lost:
            self.want_sync("queue lost")
        if batch.reclaimed:
            log.info("reclaimed stalled claims", extra={"count": batch.reclaimed})
        if not batch.claims:
            return Turn(0, False, batch.next_due)
        self._metrics.claimed(len(batch.claims))
        claims = {c.tracker_id: c for c in batch.claims}
        try:
            requested = await self._serve(account, claims, now)
        except Exception:
            # A defect, not an outage: hand the claims back with a failure's backoff rather
            # than leave them to the lease (best effort: the lease still covers a failure).
            later = self._clock.now() + cfg.policy.delay(2)
            with contextlib.suppress(Exception):
                await self._queue.complete(cfg.worker_id, [(i, later) for i in claims])
            raise
        self.turns += 1
        return Turn(len(batch.claims), requested, batch.next_due)

    async def _serve(self, account: Account, claims: Collection[uuid.UUID], now: datetime) -> bool:
        """Fetch, store and requeue the claimed trackers; True if a request went out."""
        cfg = self._config
        found = await self._retry("postgres", lambda: self._keys(list(claims), now))
        keys = {i: key for i, (key, _) in found.items()}
        gone = [i for i in claims if i not in keys]
        if gone:  # deleted, run ended, or no private key: not ours to fetch any more
            await self._retry("redis", lambda: self._queue.remove(gone))
        results: dict[uuid.UUID, FetchResult] = {}
        outcome = FetchOutcome([])
        if keys:
            started = self._clock.now()
            try:
                outcome = await account.source.fetch(
                    list(keys.values()), started - cfg.policy.max_report_age, started
                )
            except SourceError as exc:
                results = dict.fromkeys(keys, FetchResult(exc.kind))
                self._metrics.request(account.name, exc.kind, self._elapsed(started))
                self._account_failed(account, exc)
            else:
                self._metrics.request(account.name, "ok", self._elapsed(started))
                self._account_failures[account.name] = 0
                seen = {r.tracker_id for r in outcome.reports}
                results = {
                    i: FetchResult.REPORTED if i in seen else FetchResult.NO_REPORTS for i in keys
                }
        done_at = self._clock.now()
        states = [
            (i, found[i][1].after(result, done_at, cfg.policy)) for i, result in results.items()
        ]
        stored = await self._retry("postgres", lambda: self._store(outcome, states))
        self._metrics.reports(len(outcome.reports), stored, outcome.malformed)
        requeue = [(i, s.next_due or done_at) for i, s in states]
        await self._retry("redis", lambda: self._queue.complete(cfg.worker_id, requeue))
        for _, state in states:
            self._metrics.finished(
                state.last_result.value if state.last_result else "", state.factor
            )
        return bool(keys)

    def next_allowed(self, account: Account) -> datetime:
        failures = self._account_failures.get(account.name, 0)
        retry_after = self._retry_after.get(account.name)
        return self._config.account_policy.next_allowed(self._clock.now(), failures, retry_after)

    async def sync(self, reason: str) -> SyncResult | None:
        """Rebuild the queue from PostgreSQL: add every active tracker that is neither queued
        nor claimed (at its saved due time, or spread over one interval), remove trackers
        that are no longer active. One process at a time; None if another one is at it."""
        cfg = self._config
        if not await self._queue.try_lock_sync(cfg.worker_id, cfg.lease):
            return None
        try:
            now = self._clock.now()
            async with self._uow() as uow:
                active = await uow.fetch_states.active_targets(now)
            present = await self._queue.members()
            wanted = {i for i, _ in active}
            entries = [
                (i, due or cfg.policy.first_due(i, now)) for i, due in active if i not in present
            ]
            added = await self._queue.add_missing(entries)
            removed = await self._queue.remove([i for i in present if i not in wanted])
            await self._queue.mark_synced(now)
        finally:
            with contextlib.suppress(DomainError):
                await self._queue.unlock_sync(cfg.worker_id)
        result = SyncResult(added=added, removed=removed, active=len(active))
        self._metrics.synced(reason, result)
        if added or removed or reason != "periodic":
            log.info(
                "fetch queue synced",
                extra={"reason": reason, "added": added, "removed": removed, "active": len(active)},
            )
        return result

    # -- internals -----------------------------------------------------------------------
    def _account_failed(self, account: Account, exc: SourceError) -> None:
        self._account_failures[account.name] = self._account_failures.get(account.name, 0) + 1
        self._retry_after[account.name] = exc.retry_after_s
        self._metrics.error(exc.kind)
        level = logging.ERROR if not exc.retryable else logging.WARNING
        log.log(
            level,
            "fetch failed",
            extra={"account": account.name, "kind": exc.kind, "error": str(exc)},
        )

    def _elapsed(self, since: datetime) -> float:
        return (self._clock.now() - since).total_seconds()

    async def _keys(
        self, ids: list[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, tuple[TrackerKey, FetchState]]:
        """Keys (asking from each one's latest report) and saved states of the trackers."""
        policy = self._config.policy
        async with self._uow() as uow:
            found = await uow.fetch_states.keys_for(ids, now, now - policy.max_report_age)
        return {
            key.tracker_id: (
                replace(key, since=policy.window_start(last, now)),
                state or FetchState(),
            )
            for key, last, state in found
        }

    async def _store(
        self, outcome: FetchOutcome, states: Sequence[tuple[uuid.UUID, FetchState]]
    ) -> int:
        async with self._uow() as uow:
            stored = await uow.reports.add_many(outcome.reports)
            await uow.fetch_states.save_many(states)
            await uow.commit()
        return stored

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` until it works: a dependency outage is waited out (1 s, 2 s, ... up to
        ``max_retry_wait``), so nothing fetched is dropped. After a Redis outage the queue is
        checked against PostgreSQL."""
        wait = 1.0
        while True:
            try:
                return await call()
            except DependencyUnavailable as exc:
                wait = await self._wait_out(exc, wait, what)

    def _longer(self, wait: float) -> float:
        return min(wait * 2, self._config.max_retry_wait.total_seconds())

    async def _wait_out(self, exc: DependencyUnavailable, wait: float, during: str) -> float:
        """Count, log and sit out a dependency outage for ``wait`` seconds; returns the next,
        longer pause. Once Redis is back, the queue is checked against PostgreSQL."""
        self._metrics.error(f"{exc.dependency}_unavailable")
        log.warning(
            "dependency unavailable",
            extra={"dependency": exc.dependency, "during": during, "wait_s": wait},
        )
        if exc.dependency == "redis":
            self.want_sync("redis reconnected")
        await self._sleep(wait)
        return self._longer(wait)

    async def _account_loop(self, account: Account) -> None:
        cfg = self._config
        hold = cfg.request_timeout + timedelta(seconds=5)
        wait = 1.0
        while not self._stopping.is_set():
            try:
                pause = await self._gate.acquire(
                    account.name,
                    cfg.worker_id,
                    self._clock.now(),
                    hold,
                    cfg.account_policy.min_interval,
                )
                if pause > 0:
                    await self._sleep(min(pause, cfg.idle_poll.total_seconds()))
                    continue
                turn = None
                try:
                    turn = await self.turn(account)
                finally:
                    # A turn that sent no request leaves the account free at once.
                    nxt = self._clock.now()
                    if turn is None or turn.requested:
                        nxt = self.next_allowed(account)
                    await self._gate.release(account.name, cfg.worker_id, nxt)
                wait = 1.0
                if not turn.served:
                    idle = cfg.idle_poll.total_seconds()
                    if turn.next_due is not None:
                        ahead = (turn.next_due - self._clock.now()).total_seconds()
                        idle = min(idle, max(ahead, 0.01))
                    await self._sleep(idle)
            except DependencyUnavailable as exc:
                wait = await self._wait_out(exc, wait, account.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.error("internal")
                log.exception("fetch turn failed", extra={"account": account.name})
                await self._sleep(wait)
                wait = self._longer(wait)

    async def _heartbeat_loop(self) -> None:
        cfg = self._config
        while True:
            try:
                await self._queue.heartbeat(cfg.worker_id, self._clock.now() + cfg.worker_ttl)
                self._metrics.queue(await self._queue.stats(self._clock.now()))
            except DependencyUnavailable:
                self.want_sync("redis reconnected")
            except Exception:
                log.exception("heartbeat failed")
            await self._sleep(cfg.heartbeat.total_seconds())

    async def _sync_loop(self) -> None:
        cfg = self._config
        wait = 1.0
        while True:
            try:
                await asyncio.wait_for(
                    self._sync_wanted.wait(), timeout=cfg.queue_check.total_seconds()
                )
                reason = self._sync_reason
            except TimeoutError:
                reason = "periodic"
            self._sync_wanted.clear()
            try:
                await self.sync(reason)
                wait = 1.0
            except DependencyUnavailable as exc:
                log.warning("queue sync postponed", extra={"dependency": exc.dependency})
                self.want_sync(reason)
                await self._sleep(wait)
                wait = self._longer(wait)
            except Exception:
                log.exception("queue sync failed")
                await self._sleep(wait)


class FetchStateQueries:
    """The admin's view of the fetcher: one tracker's place and counts, the whole queue."""

    def __init__(self, uow: UnitOfWorkFactory, queue: FetchQueue, clock: Clock) -> None:
        self._uow, self._queue, self._clock = uow, queue, clock

    async def tracker(self, caller: Principal, tracker_id: uuid.UUID) -> QueueEntry:
        require_admin(caller, "reading fetch state")
        async with self._uow() as uow:
            await uow.trackers.get(tracker_id)  # NotFound for an unknown tracker
            saved = await uow.fetch_states.get(tracker_id)
        place = await self._queue.entry(tracker_id)
        return QueueEntry(tracker_id, place, saved or FetchState())

    async def queue(self, caller: Principal) -> QueueStats:
        require_admin(caller, "reading the fetch queue")
        return await self._queue.stats(self._clock.now())
