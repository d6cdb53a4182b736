"""Fetching reports of trackers from the location source and storing them. The fetcher
process (scheduling, leases, backoff) builds on this; ``trackerctl findmy fetch`` runs it once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from domain.access import Principal, require_manage
from domain.fetching import TrackerKey
from domain.model import Tracker
from domain.pagination import PageRequest
from domain.ports import Clock, LocationSource, TrackerFilter, UnitOfWorkFactory

MAX_REPORT_AGE = timedelta(days=7)  # Apple keeps about a week
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
