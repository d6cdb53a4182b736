"""``trackerctl findmy fetch``: a production run, or one tracker, fetched once with the
fetcher's accounts, gate, pacing and windows (``usecases.fetching`` is the fetcher itself)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from domain.access import Principal, require_manage
from domain.errors import DomainError, FailedPrecondition
from domain.fetching import FetchOutcome, SourceError, TrackerKey
from domain.model import Tracker
from domain.pagination import MAX_PAGE_SIZE, PageRequest
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.fetching import AccountGate, FetchingUnitOfWork, FetchQueue
from domain.ports.setup import TrackerFilter
from usecases.fetching import (
    Account,
    FetcherConfig,
    HeldAccount,
    Sleep,
    account_free_at,
    bounded_fetch,
)

log = logging.getLogger("tracker.fetcher")


@dataclass(frozen=True, slots=True)
class FetchSummary:
    trackers: int
    without_key: int
    requests: int
    reports: int
    stored: int
    malformed: int
    inactive: int = 0
    """Trackers not fetched because their run is not active (before its start, or ended
    longer ago than the grace period)."""
    waits: int = 0
    """Pauses the account asked for (429, 5xx) that were waited out."""
    failed: int = 0
    """Trackers whose request kept failing (given up after the last attempt)."""


class FetchRunReports:
    """``trackerctl findmy fetch``: the trackers of a production run, or one tracker, fetched
    once and stored, with the fetcher's accounts and under its rules: the same account gate
    (never beside a running fetcher's request on the same account), the same pacing and
    budget, the same windows; a 429 or 5xx is waited out (Retry-After, else the probe pause)
    and the request sent again, up to ``max_attempts`` times. Tracker states and the queue
    are left to the fetcher."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[FetchingUnitOfWork],
        queue: FetchQueue,
        gate: AccountGate,
        accounts: Sequence[Account],
        clock: Clock,
        config: FetcherConfig,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 5,
    ) -> None:
        if not accounts:
            raise FailedPrecondition("a fetch needs at least one source account")
        self._uow, self._queue, self._gate = uow, queue, gate
        self._accounts, self._clock, self._config = list(accounts), clock, config
        self._sleep, self._max_attempts = sleep, max_attempts
        self._next_account = 0
        self._failures: dict[str, int] = {}

    async def __call__(
        self,
        caller: Principal,
        run_id: uuid.UUID | None = None,
        tracker_id: uuid.UUID | None = None,
    ) -> FetchSummary:
        trackers = await self._trackers(caller, run_id, tracker_id)
        with_key = [t.id for t in trackers if t.sealed_private_key is not None]
        now, policy = self._clock.now(), self._config.policy
        async with self._uow() as uow:
            found = await uow.fetch_states.keys_for(
                with_key,
                now,
                now - policy.max_report_age - policy.overlap,
                policy.end_grace,
                policy.overlap,
            )
        keys = []
        for t in found:
            w = policy.window(t.last_report, now, t.run_start, t.run_end)
            keys.append(replace(t.key, since=w.since, until=w.until))
        await self._beat()
        try:
            totals = await self._fetch_all(keys)
        finally:
            with contextlib.suppress(DomainError):
                await self._queue.leave(self._config.worker_id, self._clock.now())
        requests, reports, stored, malformed, waits, failed = totals
        return FetchSummary(
            trackers=len(trackers),
            without_key=len(trackers) - len(with_key),
            requests=requests,
            reports=reports,
            stored=stored,
            malformed=malformed,
            inactive=len(with_key) - len(keys),
            waits=waits,
            failed=failed,
        )

    async def _trackers(
        self, caller: Principal, run_id: uuid.UUID | None, tracker_id: uuid.UUID | None
    ) -> list[Tracker]:
        async with self._uow() as uow:
            if tracker_id is not None:
                tracker = await uow.trackers.get(tracker_id)
                run = await uow.production_runs.get(tracker.production_run_id)
                require_manage(caller, run.client_id, run.KIND, run.id)
                return [tracker]
            if run_id is None:
                raise FailedPrecondition("name a production run or a tracker")
            run = await uow.production_runs.get(run_id)
            require_manage(caller, run.client_id, run.KIND, run_id)
            trackers: list[Tracker] = []
            after = None
            while True:
                page = await uow.trackers.list(
                    TrackerFilter(production_run_id=run.id),
                    PageRequest(size=MAX_PAGE_SIZE, after=after),
                )
                trackers += page.items
                if page.next_after is None:
                    return trackers
                after = page.next_after

    async def _beat(self) -> None:
        cfg = self._config
        await self._queue.heartbeat(cfg.worker_id, self._clock.now() + cfg.worker_ttl)

    async def _fetch_all(self, keys: Sequence[TrackerKey]) -> tuple[int, int, int, int, int, int]:
        per = self._config.keys_per_request
        requests = reports = stored = malformed = waits = failed = 0
        for start in range(0, len(keys), per):
            batch = keys[start : start + per]
            for attempt in range(self._max_attempts):
                requests += 1
                try:
                    outcome = await self._one_request(batch)
                except SourceError as exc:
                    if not exc.retryable or attempt == self._max_attempts - 1:
                        log.warning(
                            "fetch gave up", extra={"kind": exc.kind, "trackers": len(batch)}
                        )
                        failed += len(batch)
                        break
                    waits += 1
                    continue
                reports += len(outcome.reports) + outcome.held  # held: fetched, not decrypted
                malformed += outcome.malformed
                async with self._uow() as uow:
                    stored += await uow.reports.add_many(outcome.reports)
                    await uow.commit()
                break
        return requests, reports, stored, malformed, waits, failed

    async def _one_request(self, keys: Sequence[TrackerKey]) -> FetchOutcome:
        """One request with the next account, once its gate lets us (waiting its pace or
        pause, or a fetcher's request on it)."""
        cfg = self._config
        account = self._accounts[self._next_account % len(self._accounts)]
        self._next_account += 1
        while True:
            pause = await self._gate.acquire(
                account.name,
                cfg.worker_id,
                self._clock.now(),
                cfg.gate_hold,
                cfg.account_policy.pace,
            )
            if pause <= 0:
                break
            await self._sleep(pause)
            await self._beat()
        async with HeldAccount(
            self._gate, account.name, cfg.worker_id, cfg.gate_hold, self._clock.now(), self._beat
        ) as held:
            sent_at = self._clock.now()
            try:
                outcome = await bounded_fetch(
                    account.source,
                    keys,
                    sent_at - cfg.policy.max_report_age,
                    sent_at,
                    cfg.request_timeout,
                )
            except SourceError as exc:
                n = self._failures[account.name] = self._failures.get(account.name, 0) + 1
                held.free_at = account_free_at(
                    cfg.account_policy,
                    exc,
                    n,
                    self._clock.now(),
                    sent_at,
                    cfg.source_busy,
                    cfg.account_policy.max_cooldown,
                )
                log.warning(
                    "fetch failed",
                    extra={
                        "account": account.name,
                        "kind": exc.kind,
                        "retry_after_s": exc.retry_after_s,
                    },
                )
                raise
            self._failures[account.name] = 0
            held.free_at = cfg.account_policy.next_allowed(self._clock.now(), 0)
            return outcome
