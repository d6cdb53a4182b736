"""Travel times (seed 003): the worker's turn and the queries.

``ComputeTravelTimes`` is one turn of a worker: claim a few destination detectors (the
seed's unit of work: all links into one destination), each leased for ``lease_s`` so
several workers share the detectors and a dead worker's claims come back; for each, read
the sightings of the destination and its sources, collapse them into passes, match, filter
and bin (``domain.travel_times``), save the bins, record how far it got and release. Each
turn recomputes the bins of the last ``redo_s`` too, so passes that arrived late (a
detector that uploads in batches) and bins whose sliding window was still open are
revised; a bin is replaced whole, so recomputing is idempotent.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.access import Principal
from domain.errors import InvalidArgument
from domain.history import check_time_range
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.detectors import (
    DetectorsUnitOfWork,
    Feed,
    TravelTimeBin,
    TravelTimeFilter,
    WorkItem,
)
from domain.travel_times import PassRules, bin_estimates, collapse_passes, match_passes
from usecases.detectors import readable_detector

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TravelTimeSettings:
    rules: PassRules = field(default_factory=PassRules)
    lease_s: float = 60.0
    interval_s: float = 30.0  # a destination is due again this long after a turn
    redo_s: float = 1800.0  # recomputed on every turn (late passes, open windows)
    chunk_s: float = 6 * 3600.0  # the sightings read at once
    claim: int = 4


@dataclass(frozen=True, slots=True)
class TurnResult:
    destinations: int
    bins: int
    lost: int  # leases lost to another worker meanwhile


def _floor(t: datetime, step_s: int) -> datetime:
    s = (t - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=(s // step_s) * step_s)


class ComputeTravelTimes:
    def __init__(
        self,
        uow: UnitOfWorkFactory[DetectorsUnitOfWork],
        clock: Clock,
        owner: str,
        settings: TravelTimeSettings | None = None,
    ) -> None:
        self._uow, self._clock, self._owner = uow, clock, owner
        self._s = settings or TravelTimeSettings()

    async def __call__(self) -> TurnResult:
        now = self._clock.now()
        async with self._uow() as uow:
            items = await uow.travel_times.claim(self._owner, now, self._s.lease_s, self._s.claim)
            await uow.commit()
        bins = lost = 0
        for item in items:
            done, count = await self.compute(item, self._clock.now())
            bins += count
            async with self._uow() as uow:
                due = self._clock.now() + timedelta(seconds=self._s.interval_s)
                ok = await uow.travel_times.complete(self._owner, item.destination_id, done, due)
                await uow.commit()
            lost += not ok
        return TurnResult(len(items), bins, lost)

    async def compute(self, item: WorkItem, now: datetime) -> tuple[datetime, int]:
        """Bins of the destination from ``done_until - redo_s`` (or its first sighting) to
        ``now``; returns how far it got and how many bins it saved."""
        rules = self._s.rules
        async with self._uow() as uow:
            links = await uow.links.into(item.destination_id)
            start = (
                item.done_until - timedelta(seconds=self._s.redo_s)
                if item.done_until is not None
                else await uow.sightings.earliest(item.destination_id)
            )
        if not links or start is None:
            return now, 0
        start = _floor(start, rules.bin_s)
        saved = 0
        longest = max(link.max_seconds for link in links)
        chunk = timedelta(seconds=max(self._s.chunk_s, rules.bin_s))
        margin = timedelta(seconds=rules.bin_s + rules.pass_gap_s)
        lo = start
        while lo < now:
            hi = min(lo + chunk, now)
            # Arrivals in [lo - bin, hi + bin) feed the windows of the bins in [lo, hi).
            d_lo, d_hi = lo - margin, hi + margin
            s_lo = d_lo - timedelta(seconds=longest)
            async with self._uow() as uow:
                dest = await uow.sightings.detections([item.destination_id], d_lo, d_hi)
                src = await uow.sightings.detections([link.source_id for link in links], s_lo, d_hi)
            dest_passes = collapse_passes(
                [(d.device_key, d.seen_s, d.rssi_dbm) for d in dest], rules.pass_gap_s
            )
            by_source: dict[uuid.UUID, list[tuple[bytes, float, int | None]]] = {
                link.source_id: [] for link in links
            }
            for d in src:
                by_source[d.detector_id].append((d.device_key, d.seen_s, d.rssi_dbm))
            out: list[TravelTimeBin] = []
            stamp = self._clock.now()
            lo_s, hi_s = (lo - _EPOCH).total_seconds(), (hi - _EPOCH).total_seconds()
            for link in links:
                src_passes = collapse_passes(by_source[link.source_id], rules.pass_gap_s)
                matches = match_passes(src_passes, dest_passes, link.max_seconds)
                for b in bin_estimates(matches, rules):
                    if not lo_s <= b.bin_start_s < hi_s:
                        continue
                    out.append(
                        TravelTimeBin(
                            destination_id=item.destination_id,
                            source_id=link.source_id,
                            bin_start=_EPOCH + timedelta(seconds=b.bin_start_s),
                            bin_seconds=rules.bin_s,
                            estimate_s=b.estimate_s,
                            p10_s=b.p10_s,
                            p90_s=b.p90_s,
                            used=b.used,
                            rejected=b.rejected,
                            mean_s=b.mean_s,
                            update_time=stamp,
                        )
                    )
            if out:
                async with self._uow() as uow:
                    await uow.travel_times.save(out)
                    await uow.commit()
                saved += len(out)
            lo = hi
        return now, saved


class TravelTimeQueries:
    """``live_uow``: the database the feed's positions come from (``uow`` may be a replica
    behind it); ``follow`` reads its starting picture there."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[DetectorsUnitOfWork],
        feed: Feed,
        live_uow: UnitOfWorkFactory[DetectorsUnitOfWork] | None = None,
    ) -> None:
        self._uow, self._feed = uow, feed
        self._live_uow = uow if live_uow is None else live_uow

    async def list(
        self,
        caller: Principal,
        destination_id: uuid.UUID | None,
        source_id: uuid.UUID | None,
        start: datetime | None,
        end: datetime | None,
        page: PageRequest,
    ) -> Page[TravelTimeBin]:
        check_time_range(start, end)
        if source_id is not None and destination_id is None:
            raise InvalidArgument("source_detector_id", "needs destination_detector_id")
        async with self._uow() as uow:
            for i in (destination_id, source_id):
                if i is not None:
                    await readable_detector(caller, uow.detectors, i)
            filter = TravelTimeFilter(
                destination_id, source_id, start, end, caller.readable_clients()
            )
            return await uow.travel_times.list(filter, page)

    async def latest(
        self,
        caller: Principal,
        destination_id: uuid.UUID,
        uow_factory: UnitOfWorkFactory[DetectorsUnitOfWork] | None = None,
    ) -> builtins.list[TravelTimeBin]:
        async with (uow_factory or self._uow)() as uow:
            await readable_detector(caller, uow.detectors, destination_id)
            return await uow.travel_times.latest(destination_id)

    async def follow(
        self, caller: Principal, destination_id: uuid.UUID
    ) -> tuple[builtins.list[TravelTimeBin], str]:
        """The latest of each link and the feed position to poll from, both from the feed's
        database (a replica's latest may predate the position: bins between would be lost)."""
        position = await self._feed.start()
        return await self.latest(caller, destination_id, self._live_uow), position

    async def poll(
        self, destination_id: uuid.UUID, position: str
    ) -> tuple[builtins.list[TravelTimeBin], str]:
        return await self._feed.travel_times_after(position, destination_id)


__all__ = ["ComputeTravelTimes", "TravelTimeQueries", "TravelTimeSettings", "WorkItem"]
