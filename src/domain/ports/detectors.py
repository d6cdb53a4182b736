"""Ports of the detectors capability: detectors and links (setup), sightings and statuses
(ingestion and retrieval), travel times (the worker and its queries)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from domain.detectors import Detector, DetectorEvent, DetectorStatusReading, Link
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.ports.reports import ReportRepository
from domain.ports.setup import ClientRepository


@dataclass(frozen=True, slots=True)
class DetectorFilter:
    client_id: uuid.UUID | None = None
    visible_clients: frozenset[uuid.UUID] | None = None  # None: every client


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Events of ``detector_ids`` (empty: every detector of the visible clients)."""

    detector_ids: tuple[uuid.UUID, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class TravelTimeFilter:
    destination_id: uuid.UUID | None = None
    source_id: uuid.UUID | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    visible_clients: frozenset[uuid.UUID] | None = None


@dataclass(slots=True)
class SightingRows:
    """Valid sightings of one detector, in columns: keyed device ids (16 bytes), times in
    microseconds since 1970 UTC, RSSI (None: unknown), radio numbers."""

    detector_id: uuid.UUID
    key_id: int
    device_keys: list[bytes] = field(default_factory=list)
    times_us: list[int] = field(default_factory=list)
    rssi: list[int | None] = field(default_factory=list)
    radios: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_us)


@dataclass(frozen=True, slots=True)
class TravelTimeBin:
    destination_id: uuid.UUID
    source_id: uuid.UUID
    bin_start: datetime
    bin_seconds: int
    estimate_s: float | None
    p10_s: float | None
    p90_s: float | None
    used: int
    rejected: int
    mean_s: float
    update_time: datetime


@dataclass(frozen=True, slots=True)
class Detection:
    """One sighting as the worker reads it."""

    detector_id: uuid.UUID
    device_key: bytes
    seen_s: float
    rssi_dbm: int | None


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed destination: ``done_until`` is how far its travel times are computed."""

    destination_id: uuid.UUID
    done_until: datetime | None


class DetectorRepository(Protocol):
    async def add(self, detector: Detector) -> None: ...

    async def get(self, detector_id: uuid.UUID) -> Detector | None: ...

    async def get_many(self, ids: Sequence[uuid.UUID]) -> builtins.list[Detector]: ...

    async def update(self, detector: Detector) -> None: ...

    async def delete(self, detector_id: uuid.UUID) -> None:
        """The detector and everything of it (links, sightings, statuses, travel times)."""
        ...

    async def list(self, filter: DetectorFilter, page: PageRequest) -> Page[Detector]: ...

    async def trackers_heard(
        self, client_id: uuid.UUID, macs: Sequence[str]
    ) -> dict[str, uuid.UUID]:
        """The client's trackers among these MAC addresses (``AA:BB:..``), by address."""
        ...


class LinkRepository(Protocol):
    async def add(self, link: Link) -> None:
        """AlreadyExists if the two detectors are linked already."""
        ...

    async def get(self, destination_id: uuid.UUID, source_id: uuid.UUID) -> Link | None: ...

    async def update(self, link: Link) -> None: ...

    async def delete(self, destination_id: uuid.UUID, source_id: uuid.UUID) -> None: ...

    async def list(
        self,
        destination_id: uuid.UUID | None,
        visible: frozenset[uuid.UUID] | None,
        page: PageRequest,
    ) -> Page[Link]: ...

    async def into(self, destination_id: uuid.UUID) -> builtins.list[Link]:
        """Every link into a destination."""
        ...


class SightingRepository(Protocol):
    async def add_rows(self, rows: SightingRows) -> int:
        """Store idempotently; returns how many were new."""
        ...

    async def add_status(self, reading: DetectorStatusReading) -> bool:
        """Store one status; False if that detector already has one at that time."""
        ...

    async def events(self, filter: EventFilter, page: PageRequest) -> Page[DetectorEvent]: ...

    async def statuses(
        self, filter: EventFilter, page: PageRequest
    ) -> Page[DetectorStatusReading]: ...

    async def detections(
        self, detector_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> builtins.list[Detection]:
        """Sightings of these detectors in [start, end), for the travel-time worker."""
        ...

    async def earliest(self, detector_id: uuid.UUID) -> datetime | None: ...


class TravelTimeRepository(Protocol):
    async def claim(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> builtins.list[WorkItem]:
        """Destinations due and not leased (or whose lease ran out), oldest due first; each
        leased to ``owner`` until ``now + lease_s``."""
        ...

    async def complete(
        self, owner: str, destination_id: uuid.UUID, done_until: datetime, due: datetime
    ) -> bool:
        """Record progress and release the lease; False if the lease was lost meanwhile."""
        ...

    async def save(self, bins: Sequence[TravelTimeBin]) -> None:
        """Insert or replace these bins."""
        ...

    async def list(self, filter: TravelTimeFilter, page: PageRequest) -> Page[TravelTimeBin]: ...

    async def latest(self, destination_id: uuid.UUID) -> builtins.list[TravelTimeBin]: ...


class Feed(Protocol):
    """New rows of a table as they are committed, each once: ``start`` returns a position,
    ``after`` what was committed since the position, and the next position. A position is
    opaque: a caller may keep one and resume from it later."""

    async def start(self) -> str: ...

    async def events_after(
        self, position: str, detector_ids: Sequence[uuid.UUID], limit: int
    ) -> tuple[builtins.list[DetectorEvent], str]:
        """At most ``limit`` events and the position after them (fewer: caught up). Raises
        ``InvalidArgument`` (``after_cursor``) for a position this feed never handed out,
        ``FailedPrecondition`` kind ``CURSOR_EXPIRED`` when sightings committed after it
        were deleted by retention (resuming would skip them)."""
        ...

    async def travel_times_after(
        self, position: str, destination_id: uuid.UUID
    ) -> tuple[builtins.list[TravelTimeBin], str]: ...


class DetectorsUnitOfWork(Transaction, Protocol):
    """A transaction over detectors, links, sightings, travel times and (for our own
    trackers heard by a detector) reports."""

    clients: ClientRepository
    detectors: DetectorRepository
    links: LinkRepository
    sightings: SightingRepository
    travel_times: TravelTimeRepository
    reports: ReportRepository
