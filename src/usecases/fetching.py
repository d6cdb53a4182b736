"""Fetching reports of trackers from the location source and storing them: the fetcher's
work (a shared queue, leases, backoff, paced accounts) and ``trackerctl findmy fetch`` (the
same accounts, gate and pacing, once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from domain.access import Principal, require_admin
from domain.errors import DependencyUnavailable, DomainError, FailedPrecondition
from domain.fetching import FetchOutcome, SourceError, SourceUnavailable, TrackerKey
from domain.ports.common import Clock, NullTracer, Tracer, UnitOfWorkFactory
from domain.ports.fetching import (
    AccountGate,
    FetchingUnitOfWork,
    FetchMetrics,
    FetchQueue,
    LocationSource,
)
from domain.scheduling import (
    AccountPolicy,
    Capacity,
    Claim,
    FetchPolicy,
    FetchResult,
    FetchState,
    QueueEntry,
    QueueStats,
    SyncResult,
    capacity,
    turn_results,
)

log = logging.getLogger("tracker.fetcher")
T = TypeVar("T")

DEFAULT_KEYS_PER_REQUEST = 64


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
    """The whole request, Anisette included; past it we stop waiting."""
    source_busy: timedelta = timedelta(seconds=60)
    """After we stopped waiting for a request, the source may still work on it this long:
    the account stays held until then."""
    max_retry_wait: timedelta = timedelta(seconds=30)
    redis_probe: timedelta = timedelta(milliseconds=500)
    """While Redis is down, how often the rebuild tries again (it runs as soon as it is
    back)."""

    @property
    def gate_hold(self) -> timedelta:
        """How long one acquisition or renewal holds an account; renewed every third of it
        while the turn runs, so only a dead holder loses it."""
        return self.request_timeout + timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Turn:
    served: int
    """Trackers claimed and requeued."""
    requested: bool
    """A request went to the source (the account must then keep its pace)."""
    next_due: datetime | None
    """When the earliest tracker still queued falls due."""
    failure: SourceError | None = None
    """Why the request failed, if it did."""
    sent_at: datetime | None = None
    """When the request went out."""


class NullFetchMetrics:
    def claimed(self, n: int) -> None: ...

    def request(self, account: str, outcome: str, seconds: float) -> None: ...

    def finished(self, turns: Mapping[tuple[str, int], int]) -> None: ...

    def reports(self, fetched: int, stored: int, malformed: int) -> None: ...

    def queue(self, stats: QueueStats) -> None: ...

    def synced(self, reason: str, result: SyncResult) -> None: ...

    def capacity(self, capacity: Capacity) -> None: ...

    def error(self, kind: str) -> None: ...


Sleep = Callable[[float], Awaitable[None]]
RunWindow = tuple[datetime, datetime]
"""A production run's start and end."""


async def bounded_fetch(
    source: LocationSource,
    keys: Sequence[TrackerKey],
    since: datetime,
    until: datetime,
    limit: timedelta,
) -> FetchOutcome:
    """One request, Anisette and all, within ``limit``; past it the source may still be
    answering (``timed_out``)."""
    try:
        return await asyncio.wait_for(source.fetch(keys, since, until), limit.total_seconds())
    except TimeoutError:
        raise SourceUnavailable(
            f"no answer within {limit.total_seconds():g}s", timed_out=True
        ) from None


def account_free_at(
    policy: AccountPolicy,
    failure: SourceError | None,
    failures_in_row: int,
    now: datetime,
    sent_at: datetime | None,
    source_busy: timedelta,
    max_cooldown: timedelta,
) -> datetime:
    """When an account may send its next request after one ended at ``now``: its pace, a
    pause after a failure (Retry-After, else a short probe pause; an operator's problem
    such as refused credentials waits the longest pause), and never before the source
    must be done with a request we stopped waiting for."""
    if failure is None:
        return policy.next_allowed(now, 0)
    retry_after = failure.retry_after_s
    if not failure.retryable:
        retry_after = max_cooldown.total_seconds()
    free = policy.next_allowed(now, max(failures_in_row, 1), retry_after)
    if isinstance(failure, SourceUnavailable) and failure.timed_out and sent_at is not None:
        # When the request left is not known (Anisette came first): count from giving up.
        free = max(free, now + source_busy)
    return free


def inside_runs(
    outcome: FetchOutcome,
    targets: Mapping[uuid.UUID, tuple[TrackerKey, FetchState, RunWindow]],
    floor: datetime,
) -> FetchOutcome:
    """Only reports dated inside their tracker's run (and Apple's retention): Apple has been
    seen to ignore a request's dates, so the window is also enforced on what comes back."""
    kept = []
    for r in outcome.reports:
        _, _, (run_start, run_end) = targets[r.tracker_id]
        if max(run_start, floor) <= r.report_time <= run_end:
            kept.append(r)
    return replace(
        outcome, reports=kept, outside=outcome.outside + len(outcome.reports) - len(kept)
    )


class HeldAccount:
    """An account held by ``holder`` through the gate: renewed every third of ``hold``
    while held (with the holder's heartbeat, if it has one), released on exit with the time
    the account may send next (``free_at``, set by the holder before leaving)."""

    def __init__(
        self,
        gate: AccountGate,
        account: str,
        holder: str,
        hold: timedelta,
        free_at: datetime,
        alive: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._gate, self._account, self._holder, self._hold = gate, account, holder, hold
        self.free_at = free_at
        self._alive = alive
        self._renewer: asyncio.Task[None] | None = None
        self.lost = False

    async def __aenter__(self) -> HeldAccount:
        self._renewer = asyncio.create_task(self._renew(), name=f"hold-{self._account}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
        await self._gate.release(self._account, self._holder, self.free_at)

    async def _renew(self) -> None:
        every = max(self._hold.total_seconds() / 3, 0.01)
        while True:
            await asyncio.sleep(every)
            try:
                if self._alive is not None:
                    await self._alive()
                if not await self._gate.renew(self._account, self._holder, self._hold):
                    self.lost = True
                    log.error("account gate lost while held", extra={"account": self._account})
            except DomainError as exc:
                log.warning(
                    "account gate not renewed", extra={"account": self._account, "error": str(exc)}
                )


class FetchWorker:
    """One fetcher process's work. Any number of them share the queue.

    Per account, a loop: take the account's gate (one request at a time across every
    process, paced by the account's budget), claim up to ``keys_per_request`` trackers (the
    due ones, filled with those due soonest within the policy's horizon), fetch them in one
    request, store the reports and the trackers' new state in PostgreSQL, then requeue them
    in Redis (in that order: a crash in between only means a harmless second fetch). The gate
    is held, and renewed, for the whole turn, Anisette included; after a request we stopped
    waiting for it stays held until the source must be done with it. Beside it, a heartbeat,
    and a periodic rebuild of the queue from PostgreSQL (which also adds trackers of new or
    extended runs, removes those of ended ones and publishes the capacity figure). Outages of
    PostgreSQL or Redis are waited out; reports already fetched are kept until stored.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory[FetchingUnitOfWork],
        queue: FetchQueue,
        gate: AccountGate,
        accounts: Sequence[Account],
        clock: Clock,
        config: FetcherConfig,
        metrics: FetchMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
        tracer: Tracer | None = None,
        pause: Callable[[int], float] | None = None,
    ) -> None:
        if not accounts:
            raise FailedPrecondition("the fetcher needs at least one source account")
        self._uow, self._queue, self._gate = uow, queue, gate
        self._accounts = list(accounts)
        self._clock, self._config = clock, config
        self._metrics = metrics or NullFetchMetrics()
        self._sleep = sleep
        # Seconds to sit out the n-th consecutive outage (n >= 1). The process injects a
        # jittered exponential schedule from tenacity (servers/retrying.py); alone, the use
        # case doubles from 1 s up to ``max_retry_wait``.
        self._pause = pause or self._doubling
        self.sync_reason = "start"
        self._sync_listeners: list[Callable[[], None]] = []
        self.tracer: Tracer = tracer or NullTracer()
        self._account_failures: dict[str, int] = {}
        self._last_failure: dict[str, tuple[SourceError, datetime | None]] = {}
        self.turns = 0
        self.last_capacity: Capacity | None = None

    # -- what the runtime (servers/fetcher_runtime.py) drives --------------------------------
    @property
    def accounts(self) -> Sequence[Account]:
        return self._accounts

    @property
    def config(self) -> FetcherConfig:
        return self._config

    def want_sync(self, reason: str) -> None:
        """Ask for a rebuild of the queue (the runtime's sync loop runs it)."""
        self.sync_reason = reason
        for listener in self._sync_listeners:
            listener()

    def on_sync_wanted(self, listener: Callable[[], None]) -> None:
        self._sync_listeners.append(listener)

    async def register(self) -> None:
        """The first heartbeat, a Redis outage waited out: a holder of an account must be
        known alive to keep it."""
        await self._retry("redis", self.heartbeat)

    async def leave(self) -> int:
        """Hand this worker's claims back to the queue (on stop); how many."""
        return await self._queue.leave(self._config.worker_id, self._clock.now())

    # -- one turn (public for tests and benchmarks) --------------------------------------
    async def turn(self, account: Account) -> Turn:
        """Claim, fetch and complete one batch with ``account`` (whose gate the caller
        holds)."""
        cfg, now = self._config, self._clock.now()
        batch = await self._queue.claim(
            cfg.worker_id, cfg.keys_per_request, now, cfg.lease, cfg.policy.horizon
        )
        if batch.lost:
            self.want_sync("queue lost")
        if batch.reclaimed:
            log.info("reclaimed stalled claims", extra={"count": batch.reclaimed})
        if not batch.claims:
            return Turn(0, False, batch.next_due)
        self._metrics.claimed(len(batch.claims))
        claims = {c.tracker_id: c for c in batch.claims}
        try:
            requested, failure, sent_at = await self._serve(account, claims, now)
        except Exception:
            # A defect, not the trackers' fault: hand the claims back at their due times (kept
            # factor, served first) rather than leave them to the lease; the account loop
            # pauses longer after each defect, so this is no hot loop.
            with contextlib.suppress(Exception):
                await self._queue.complete(cfg.worker_id, [(i, c.due) for i, c in claims.items()])
            raise
        self.turns += 1
        return Turn(len(batch.claims), requested, batch.next_due, failure, sent_at)

    async def _serve(
        self, account: Account, claims: Mapping[uuid.UUID, Claim], now: datetime
    ) -> tuple[bool, SourceError | None, datetime | None]:
        """Fetch, store and requeue the claimed trackers. Returns whether a request went
        out, why it failed (if it did) and when it was sent."""
        cfg = self._config
        found = await self._retry("postgres", lambda: self._targets(list(claims), now))
        gone = [i for i in claims if i not in found]
        if gone:  # deleted, run ended, or no private key: not ours to fetch any more
            await self._retry("redis", lambda: self._queue.remove(gone))
        # Still ours? A fetcher that stalled past its TTL (a loaded machine) has lost its
        # claims to another, which serves them: no request of ours for them (issue 11).
        found = await self._still_held(found, "before the request")
        outcome = FetchOutcome([])
        failure: SourceError | None = None
        started: datetime | None = None
        if found:
            started = self._clock.now()
            try:
                outcome = await bounded_fetch(
                    account.source,
                    [key for key, _, _ in found.values()],
                    started - cfg.policy.max_report_age,
                    started,
                    cfg.request_timeout,
                )
            except SourceError as exc:
                failure = exc
                self._metrics.request(account.name, exc.kind, self._elapsed(started))
                self._account_failed(account, exc, started)
            else:
                self._metrics.request(account.name, "ok", self._elapsed(started))
                self._account_failures[account.name] = 0
                outcome = inside_runs(outcome, found, started - cfg.policy.max_report_age)
        done_at = self._clock.now()
        # ... and again before storing: a turn that lost them while its request was out
        # leaves their reports and state to the new holder (storing its copy of the reports
        # first would make the holder's turn find them held: "no news", backed off x2).
        kept = await self._still_held(found, "after the request")
        if len(kept) < len(found):
            outcome = replace(outcome, reports=[r for r in outcome.reports if r.tracker_id in kept])
            found = kept
        due = {i: claims[i].due for i in found}
        saved = {i: state for i, (_, state, _) in found.items()}
        stored, states = await self._retry(
            "postgres", lambda: self._store(outcome, saved, due, failure, done_at, account.name)
        )
        self._metrics.reports(len(outcome.reports) + outcome.held, stored, outcome.malformed)
        requeue = [(i, s.next_due or done_at) for i, s in states]
        await self._retry("redis", lambda: self._queue.complete(cfg.worker_id, requeue))
        self._metrics.finished(
            Counter((s.last_result.value if s.last_result else "", s.factor) for _, s in states)
        )
        return bool(found), failure, started

    async def _still_held(self, found: dict[uuid.UUID, T], when: str) -> dict[uuid.UUID, T]:
        """Those of ``found`` this worker still holds (their leases renewed)."""
        if not found:
            return found
        cfg = self._config
        held = await self._retry(
            "redis",
            lambda: self._queue.hold(cfg.worker_id, list(found), self._clock.now(), cfg.lease),
        )
        if len(held) == len(found):
            return found
        lost = len(found) - len(held)
        self._metrics.error("claims_taken_over")
        log.warning(
            "claims taken over by another fetcher (this one stalled past its TTL)",
            extra={"count": lost, "when": when},
        )
        return {i: v for i, v in found.items() if i in held}

    def next_allowed(self, account: Account) -> datetime:
        """When ``account`` may send again after its last request ended now."""
        cfg = self._config
        failures = self._account_failures.get(account.name, 0)
        failure, sent_at = self._last_failure.get(account.name, (None, None))
        return account_free_at(
            cfg.account_policy,
            failure if failures else None,
            failures,
            self._clock.now(),
            sent_at,
            cfg.source_busy,
            cfg.account_policy.max_cooldown,
        )

    async def sync(self, reason: str) -> SyncResult | None:
        """Rebuild the queue from PostgreSQL: add every active tracker that is neither queued
        nor claimed (at its saved due time, or spread over one interval), remove trackers
        that are no longer active, publish the capacity figure. One process at a time; None
        if another one is at it."""
        cfg = self._config
        if not await self._queue.try_lock_sync(cfg.worker_id, cfg.lease):
            return None
        try:
            now = self._clock.now()
            async with self._uow() as uow:
                active = await uow.fetch_states.active_targets(now, cfg.policy.end_grace)
            present = await self._queue.members()
            wanted = {i for i, _ in active}
            entries = [
                (i, due or cfg.policy.first_due(i, now)) for i, due in active if i not in present
            ]
            added = await self._queue.add_missing(entries)
            removed = await self._queue.remove([i for i in present if i not in wanted])
            await self._queue.mark_synced(now)
            await self._publish_capacity(len(active), now)
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

    async def synced_lately(self) -> bool:
        """Whether any fetcher rebuilt the queue within (most of) the check period: the
        periodic check is one for the fleet, not one per process."""
        last = await self._queue.last_synced()
        return last is not None and self._clock.now() - last < self._config.queue_check * 0.9

    async def _publish_capacity(self, trackers: int, now: datetime) -> None:
        cfg = self._config
        cap = capacity(
            trackers,
            len(self._accounts),
            cfg.keys_per_request,
            cfg.policy.interval,
            cfg.account_policy,
        )
        self.last_capacity = cap
        self._metrics.capacity(cap)
        await self._queue.publish_capacity(cap, now)
        if not cap.sufficient:
            log.warning(
                "fetch capacity short: trackers will fall behind their interval",
                extra={
                    "trackers": cap.trackers,
                    "accounts": cap.accounts,
                    "requests_needed_per_interval": cap.needed_per_interval,
                    "requests_allowed_per_interval": round(cap.allowed_per_interval, 1),
                    "accounts_needed": cap.accounts_needed,
                },
            )

    # -- internals -----------------------------------------------------------------------
    def _account_failed(self, account: Account, exc: SourceError, sent_at: datetime) -> None:
        self._account_failures[account.name] = self._account_failures.get(account.name, 0) + 1
        self._last_failure[account.name] = (exc, sent_at)
        self._metrics.error(exc.kind)
        level = logging.ERROR if not exc.retryable else logging.WARNING
        log.log(
            level,
            "fetch failed",
            extra={
                "account": account.name,
                "kind": exc.kind,
                "error": str(exc),
                "retry_after_s": exc.retry_after_s,
                "failures_in_row": self._account_failures[account.name],
            },
        )

    def _elapsed(self, since: datetime) -> float:
        return (self._clock.now() - since).total_seconds()

    async def _targets(
        self, ids: list[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, tuple[TrackerKey, FetchState, RunWindow]]:
        """Keys of the claimed trackers, each asking for its own window (see
        ``FetchPolicy.window``), with their saved states and their runs' start and end."""
        policy = self._config.policy
        async with self._uow() as uow:
            found = await uow.fetch_states.keys_for(
                ids,
                now,
                now - policy.max_report_age - policy.overlap,
                policy.end_grace,
                policy.overlap,
            )
        out = {}
        for t in found:
            w, k = policy.window(t.last_report, now, t.run_start, t.run_end), t.key
            key = TrackerKey(
                k.tracker_id, k.advertisement_key, k.sealed_private_key, w.since, w.until, k.held
            )
            out[k.tracker_id] = (key, t.state or FetchState(), (t.run_start, t.run_end))
        return out

    async def _store(
        self,
        outcome: FetchOutcome,
        saved: Mapping[uuid.UUID, FetchState],
        due: Mapping[uuid.UUID, datetime],
        failure: SourceError | None,
        done_at: datetime,
        account: str | None = None,
    ) -> tuple[int, list[tuple[uuid.UUID, FetchState]]]:
        """Store the reports and the trackers' states in one transaction. A tracker is
        reported when one of its reports was not held (a report we held is no news): the
        insert itself tells, so a race with another fetcher storing the same report counts
        it once."""
        policy, keys = self._config.policy, saved
        async with self._uow() as uow:
            new = await uow.reports.add_new(outcome.reports)
            if failure is not None:
                result = FetchResult(failure.kind)
                states = [(i, saved[i].after_failed_request(result, done_at, due[i])) for i in keys]
            else:
                results = turn_results(keys, set(new))
                states = [
                    (i, saved[i].after(r, done_at, policy, due=due[i])) for i, r in results.items()
                ]
            await uow.fetch_states.save_many(states, account)
            await uow.commit()
        return len(new), states

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` until it works: a dependency outage is waited out (1 s, 2 s, ... up to
        ``max_retry_wait``), so nothing fetched is dropped. After a Redis outage the queue is
        checked against PostgreSQL."""
        failures = 0
        while True:
            try:
                return await call()
            except DependencyUnavailable as exc:
                failures += 1
                await self.wait_out(exc, self.pause(failures), what)

    def _doubling(self, failures: int) -> float:
        return float(min(2 ** min(failures - 1, 30), self._config.max_retry_wait.total_seconds()))

    def pause(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        return self._pause(failures)

    async def wait_out(self, exc: DependencyUnavailable, wait: float, during: str) -> None:
        """Count, log and sit out a dependency outage for ``wait`` seconds. Once Redis is
        back, the queue is checked against PostgreSQL."""
        self._metrics.error(f"{exc.dependency}_unavailable")
        log.warning(
            "dependency unavailable",
            extra={"dependency": exc.dependency, "during": during, "wait_s": wait},
        )
        if exc.dependency == "redis":
            self.want_sync("redis reconnected")
        await self._sleep(wait)

    async def heartbeat(self) -> None:
        """Tell the queue this worker is alive (its claims stay its own)."""
        cfg = self._config
        await self._queue.heartbeat(cfg.worker_id, self._clock.now() + cfg.worker_ttl)


class FetchStateQueries:
    """The admin's view of the fetcher: one tracker's place and counts, the whole queue."""

    def __init__(
        self, uow: UnitOfWorkFactory[FetchingUnitOfWork], queue: FetchQueue, clock: Clock
    ) -> None:
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
