"""Outage detection: the worker's turn (cohort shares against their baselines, events
opened and ended) and the read of outage events by the users of their client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from domain.access import Principal
from domain.outages import Outage, OutageRule, baseline_of, has_ended, jumps
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock
from domain.ports.outages import OutageFilter, OutageRepository


@dataclass(frozen=True, slots=True)
class OutageTurn:
    cohorts: int
    opened: list[Outage]
    ended: list[Outage]
    open: list[Outage]
    """Every outage open after the turn."""


class DetectOutages:
    """One turn: each cohort's silent share now, against the mean of its own snapshots of the
    baseline window; a jump opens an outage (one per cohort at a time), a fall back ends it;
    the snapshot, new and ended outages are saved together."""

    def __init__(self, repo: OutageRepository, clock: Clock, rule: OutageRule) -> None:
        self._repo, self._clock, self._rule = repo, clock, rule

    async def __call__(self) -> OutageTurn:
        now = self._clock.now()
        shares = await self._repo.shares(now, self._rule)
        baseline = await self._repo.baseline(now, self._rule.baseline_window)
        already = await self._repo.open_outages()
        current = {s.cohort: s for s in shares}
        found = [
            Outage(
                cohort=s.cohort,
                trackers=s.trackers,
                silent=s.silent,
                share=s.share,
                baseline=baseline_of(s.cohort, baseline) or 0.0,
                start_time=now,
            )
            for s in jumps(shares, baseline, self._rule)
            if s.cohort not in already
        ]
        ended = [o for c, o in already.items() if has_ended(o, current.get(c), self._rule)]
        opened = await self._repo.save(now, shares, found, [o.id for o in ended])
        gone = {o.id for o in ended}
        still = [o for o in already.values() if o.id not in gone] + opened
        return OutageTurn(len(shares), opened, ended, still)


class OutageQueries:
    def __init__(self, repo: OutageRepository) -> None:
        self._repo = repo

    async def list(
        self, caller: Principal, client_id: uuid.UUID | None, open_only: bool, page: PageRequest
    ) -> Page[Outage]:
        readable = caller.readable_clients()
        if client_id is not None and readable is not None and client_id not in readable:
            return Page([], None)
        return await self._repo.list_outages(OutageFilter(readable, client_id, open_only), page)
