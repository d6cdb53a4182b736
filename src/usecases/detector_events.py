"""Event retrieval (seed 003's events retriever, with the time range it ignored): stored
sightings of detectors in a time range, keyset-paged; statuses (battery history); and a
feed of new events for ``StreamDetectorEvents`` (one call per poll: the polling loop is the
servicer's)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from domain.access import Principal
from domain.detectors import DetectorEvent, DetectorStatusReading
from domain.history import check_time_range
from domain.limits import MAX_EVENT_DETECTORS, MAX_STREAM_DETECTORS, check_count
from domain.pagination import Page, PageRequest
from domain.ports.common import UnitOfWorkFactory
from domain.ports.detectors import DetectorsUnitOfWork, EventFilter, Feed
from usecases.detectors import readable_detector


class DetectorEvents:
    def __init__(self, uow: UnitOfWorkFactory[DetectorsUnitOfWork], feed: Feed) -> None:
        self._uow, self._feed = uow, feed

    async def _filter(
        self,
        caller: Principal,
        uow: DetectorsUnitOfWork,
        ids: Sequence[uuid.UUID],
        start: datetime | None,
        end: datetime | None,
    ) -> EventFilter:
        check_time_range(start, end)
        for i in ids:
            await readable_detector(caller, uow.detectors, i)
        return EventFilter(tuple(ids), start, end, caller.readable_clients())

    async def events(
        self,
        caller: Principal,
        ids: Sequence[uuid.UUID],
        start: datetime | None,
        end: datetime | None,
        page: PageRequest,
    ) -> Page[DetectorEvent]:
        check_count("detector_ids", len(ids), MAX_EVENT_DETECTORS, minimum=0)
        async with self._uow() as uow:
            filter = await self._filter(caller, uow, ids, start, end)
            return await uow.sightings.events(filter, page)

    async def statuses(
        self,
        caller: Principal,
        detector_id: uuid.UUID | None,
        start: datetime | None,
        end: datetime | None,
        page: PageRequest,
    ) -> Page[DetectorStatusReading]:
        async with self._uow() as uow:
            ids = [detector_id] if detector_id is not None else []
            filter = await self._filter(caller, uow, ids, start, end)
            return await uow.sightings.statuses(filter, page)

    async def follow(
        self, caller: Principal, ids: Sequence[uuid.UUID], after: str | None = None
    ) -> str:
        """Check access and return the feed position to poll from: ``after`` (a position
        an earlier stream handed out, checked by the first poll), or events committed after
        this call."""
        check_count("detector_ids", len(ids), MAX_STREAM_DETECTORS)
        async with self._uow() as uow:
            for i in ids:
                await readable_detector(caller, uow.detectors, i)
        return after if after else await self._feed.start()

    async def poll(
        self, ids: Sequence[uuid.UUID], position: str, limit: int
    ) -> tuple[list[DetectorEvent], str]:
        """Events committed since ``position`` (of detectors ``follow`` let through), and
        the position after them; a position older than the sightings kept is refused
        (``CURSOR_EXPIRED``) rather than resumed with a gap."""
        return await self._feed.events_after(position, ids, limit)
