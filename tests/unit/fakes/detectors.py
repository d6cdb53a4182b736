"""Fakes of the detectors ports (``domain.ports.detectors``), over ``FakeTables``."""

from __future__ import annotations

import builtins
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain.detectors import Detector, DetectorEvent, DetectorStatusReading, Link, Radio
from domain.errors import AlreadyExists, InvalidArgument
from domain.pagination import Page, PageRequest, cursor_id, cursor_parts, cursor_time
from domain.ports.detectors import (
    Detection,
    DetectorFilter,
    EventFilter,
    SightingRows,
    TravelTimeBin,
    TravelTimeFilter,
    WorkItem,
)
from domain.reports import from_us

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Work:
    due: datetime
    owner: str | None
    until: datetime | None
    done_until: datetime | None


def _page(items: list[Any], page: PageRequest, key: Any, cursor: Any) -> Page[Any]:
    """Items sorted by ``key``, after the page's cursor (``cursor``: text -> key)."""
    items = sorted(items, key=key)
    if page.after is not None:
        after = cursor(page.after)
        items = [x for x in items if key(x) > after]
    out = items[: page.size]
    return Page(out, _text(key(out[-1])) if len(items) > page.size else None)


def _text(key: tuple[Any, ...]) -> str:
    return "|".join(
        k.hex() if isinstance(k, bytes) else k.isoformat() if isinstance(k, datetime) else str(k)
        for k in key
    )


class FakeDetectorRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[uuid.UUID, Detector]:
        return self._uow.tables.detectors

    async def add(self, detector: Detector) -> None:
        if detector.id in self._rows:
            raise AlreadyExists("detector", "id", str(detector.id))
        self._rows[detector.id] = detector

    async def get(self, detector_id: uuid.UUID) -> Detector | None:
        return self._rows.get(detector_id)

    async def get_many(self, ids: Sequence[uuid.UUID]) -> builtins.list[Detector]:
        return [self._rows[i] for i in ids if i in self._rows]

    async def update(self, detector: Detector) -> None:
        self._rows[detector.id] = detector

    async def delete(self, detector_id: uuid.UUID) -> None:
        t = self._uow.tables
        t.detectors.pop(detector_id, None)
        for table in (t.links, t.travel_times):
            for k in [k for k in table if detector_id in k[:2]]:
                del table[k]
        for table in (t.sightings, t.statuses):
            for k in [k for k in table if k[0] == detector_id]:
                del table[k]
        t.travel_work.pop(detector_id, None)

    async def list(self, filter: DetectorFilter, page: PageRequest) -> Page[Detector]:
        items = [
            d
            for d in self._rows.values()
            if (filter.client_id is None or d.client_id == filter.client_id)
            and (filter.visible_clients is None or d.client_id in filter.visible_clients)
        ]
        return _page(items, page, lambda d: (d.id,), lambda a: (cursor_id(a),))

    async def trackers_heard(
        self, client_id: uuid.UUID, macs: Sequence[str]
    ) -> dict[str, uuid.UUID]:
        wanted = set(macs)
        return {
            t.mac_address.value: t.id
            for t in self._uow.tables.trackers.values()
            if t.client_id == client_id and t.mac_address.value in wanted
        }


class FakeLinkRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[tuple[uuid.UUID, uuid.UUID], Link]:
        return self._uow.tables.links

    async def add(self, link: Link) -> None:
        key = (link.destination_id, link.source_id)
        if key in self._rows:
            raise AlreadyExists("link", "link", f"{link.destination_id}/{link.source_id}")
        self._rows[key] = link
        work = self._uow.tables.travel_work
        work.setdefault(
            link.destination_id, Work(datetime.min.replace(tzinfo=UTC), None, None, None)
        )

    async def get(self, destination_id: uuid.UUID, source_id: uuid.UUID) -> Link | None:
        return self._rows.get((destination_id, source_id))

    async def update(self, link: Link) -> None:
        self._rows[(link.destination_id, link.source_id)] = link

    async def delete(self, destination_id: uuid.UUID, source_id: uuid.UUID) -> None:
        self._rows.pop((destination_id, source_id), None)

    async def list(
        self,
        destination_id: uuid.UUID | None,
        visible: frozenset[uuid.UUID] | None,
        page: PageRequest,
    ) -> Page[Link]:
        items = [
            x
            for x in self._rows.values()
            if (destination_id is None or x.destination_id == destination_id)
            and (visible is None or x.client_id in visible)
        ]
        return _page(
            items,
            page,
            lambda x: (x.destination_id, x.source_id),
            lambda a: tuple(cursor_id(p) for p in cursor_parts(a, 2)),
        )

    async def into(self, destination_id: uuid.UUID) -> builtins.list[Link]:
        return sorted(
            (x for x in self._rows.values() if x.destination_id == destination_id),
            key=lambda x: x.source_id,
        )


class FakeSightingRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def add_rows(self, rows: SightingRows) -> int:
        table = self._uow.tables.sightings
        new = 0
        for key, t, rssi, radio in zip(
            rows.device_keys, rows.times_us, rows.rssi, rows.radios, strict=True
        ):
            when = from_us(t)
            ident = (rows.detector_id, when, key)
            if ident not in table:
                table[ident] = DetectorEvent(
                    rows.detector_id, key, rows.key_id, when, rssi, Radio(radio)
                )
                new += 1
        return new

    async def add_status(self, reading: DetectorStatusReading) -> bool:
        key = (reading.detector_id, reading.report_time)
        if key in self._uow.tables.statuses:
            return False
        self._uow.tables.statuses[key] = reading
        return True

    def _visible(self, detector_id: uuid.UUID, f: EventFilter) -> bool:
        d = self._uow.tables.detectors.get(detector_id)
        return (
            d is not None
            and (not f.detector_ids or detector_id in f.detector_ids)
            and (f.visible_clients is None or d.client_id in f.visible_clients)
        )

    async def events(self, filter: EventFilter, page: PageRequest) -> Page[DetectorEvent]:
        items = [
            e
            for e in self._uow.tables.sightings.values()
            if self._visible(e.detector_id, filter) and _within(e.seen_time, filter)
        ]

        def cursor(a: str) -> tuple[Any, ...]:
            d, t, k = cursor_parts(a, 3)
            try:
                key = bytes.fromhex(k)
            except ValueError:
                raise InvalidArgument("page_token", "page token cursor out of range") from None
            return (cursor_id(d), cursor_time(t), key)

        return _page(items, page, lambda e: (e.detector_id, e.seen_time, e.device_key), cursor)

    async def statuses(self, filter: EventFilter, page: PageRequest) -> Page[DetectorStatusReading]:
        items = [
            x
            for x in self._uow.tables.statuses.values()
            if self._visible(x.detector_id, filter) and _within(x.report_time, filter)
        ]
        return _page(
            items,
            page,
            lambda x: (x.detector_id, x.report_time),
            lambda a: (lambda d, t: (cursor_id(d), cursor_time(t)))(*cursor_parts(a, 2)),
        )

    async def detections(
        self, detector_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> builtins.list[Detection]:
        wanted = set(detector_ids)
        return [
            Detection(
                e.detector_id, e.device_key, (e.seen_time - _EPOCH).total_seconds(), e.rssi_dbm
            )
            for e in self._uow.tables.sightings.values()
            if e.detector_id in wanted and start <= e.seen_time < end
        ]

    async def earliest(self, detector_id: uuid.UUID) -> datetime | None:
        times = [
            e.seen_time for e in self._uow.tables.sightings.values() if e.detector_id == detector_id
        ]
        return min(times) if times else None


def _within(t: datetime, f: EventFilter) -> bool:
    return (f.start_time is None or t >= f.start_time) and (f.end_time is None or t < f.end_time)


class FakeTravelTimeRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _work(self) -> dict[uuid.UUID, Work]:
        return self._uow.tables.travel_work

    async def claim(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> builtins.list[WorkItem]:
        free = sorted(
            (w.due, d)
            for d, w in self._work.items()
            if w.due <= now and (w.until is None or w.until < now)
        )[:limit]
        out = []
        for _, d in free:
            w = self._work[d]
            self._work[d] = dataclasses.replace(
                w, owner=owner, until=now + timedelta(seconds=lease_s)
            )
            out.append(WorkItem(d, w.done_until))
        return out

    async def complete(
        self, owner: str, destination_id: uuid.UUID, done_until: datetime, due: datetime
    ) -> bool:
        w = self._work.get(destination_id)
        if w is None or w.owner != owner:
            return False
        self._work[destination_id] = Work(due, None, None, done_until)
        return True

    async def save(self, bins: Sequence[TravelTimeBin]) -> None:
        for b in bins:
            self._uow.tables.travel_times[(b.destination_id, b.source_id, b.bin_start)] = b

    async def list(self, filter: TravelTimeFilter, page: PageRequest) -> Page[TravelTimeBin]:
        detectors = self._uow.tables.detectors
        items = [
            b
            for b in self._uow.tables.travel_times.values()
            if (filter.destination_id is None or b.destination_id == filter.destination_id)
            and (filter.source_id is None or b.source_id == filter.source_id)
            and (filter.start_time is None or b.bin_start >= filter.start_time)
            and (filter.end_time is None or b.bin_start < filter.end_time)
            and b.destination_id in detectors
            and (
                filter.visible_clients is None
                or detectors[b.destination_id].client_id in filter.visible_clients
            )
        ]

        def cursor(a: str) -> tuple[Any, ...]:
            d, s, t = cursor_parts(a, 3)
            return (cursor_id(d), cursor_id(s), cursor_time(t))

        return _page(items, page, lambda b: (b.destination_id, b.source_id, b.bin_start), cursor)

    async def latest(self, destination_id: uuid.UUID) -> builtins.list[TravelTimeBin]:
        best: dict[uuid.UUID, TravelTimeBin] = {}
        for b in self._uow.tables.travel_times.values():
            if b.destination_id != destination_id or b.estimate_s is None:
                continue
            if b.source_id not in best or best[b.source_id].bin_start < b.bin_start:
                best[b.source_id] = b
        return [best[k] for k in sorted(best)]
