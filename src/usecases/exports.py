"""Exports of a production run's or a tracker's location and status history (issue 17):
checked and authorised before the first byte, then streamed as chunks of text written as
the rows are read, page by page, so memory stays bounded whatever the export's size. And
what a track picture needs: one tracker's points, status changes and its run's fences."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

from domain.access import Principal, require_read
from domain.errors import InvalidArgument, NotFound
from domain.exports import (
    ExportChange,
    ExportFormat,
    ExportPoint,
    ExportQuery,
    Fence,
    writer_for,
)
from domain.limits import MAX_TRACK_POINTS
from domain.model import ProductionRun, Tracker
from domain.ports.exports import ExportSource

PAGE_ROWS = 5000
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Track:
    """What a track picture shows: a tracker's reports and status changes in time order,
    and its run's fences."""

    tracker_id: uuid.UUID
    points: list[ExportPoint]
    changes: list[ExportChange]
    fences: list[Fence]


class HistoryExports:
    def __init__(
        self, source: ExportSource, page_rows: int = PAGE_ROWS, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self._source, self._page_rows, self._chunk_bytes = source, page_rows, chunk_bytes

    async def _authorize(self, caller: Principal, q: ExportQuery) -> uuid.UUID:
        """The run whose history (or whose tracker's) is asked for; a run or tracker of a
        client the caller cannot read is NOT_FOUND, as if it did not exist."""
        if q.tracker_id is not None:
            found = await self._source.tracker_run(q.tracker_id)
            if found is None:
                raise NotFound(Tracker.KIND, str(q.tracker_id))
            require_read(caller, found[0], Tracker.KIND, q.tracker_id)
            return found[1]
        assert q.production_run_id is not None
        client = await self._source.run_client(q.production_run_id)
        if client is None:
            raise NotFound(ProductionRun.KIND, str(q.production_run_id))
        require_read(caller, client, ProductionRun.KIND, q.production_run_id)
        return q.production_run_id

    async def export(self, caller: Principal, query: ExportQuery) -> AsyncGenerator[bytes, None]:
        """Checks the query and the caller's access now (errors before any data), and returns
        the export's chunks (UTF-8, about ``chunk_bytes`` each). Close it (``aclosing``) when
        not read to the end: that ends the snapshot and gives its connection back at once."""
        q = query.checked()
        await self._authorize(caller, q)
        return self._chunks(q)

    async def _chunks(self, q: ExportQuery) -> AsyncGenerator[bytes, None]:
        writer = writer_for(q.format)
        parts: list[str] = [writer.begin()]
        size = len(parts[0])
        async with self._source.open(q) as reader:
            if q.include_status_changes:
                async for changes in reader.changes(self._page_rows):
                    for c in changes:
                        text = writer.change(c)
                        parts.append(text)
                        size += len(text)
                    if size >= self._chunk_bytes:
                        yield "".join(parts).encode()
                        parts, size = [], 0
            async for points in reader.points(self._page_rows):
                for p in points:
                    text = writer.point(p)
                    parts.append(text)
                    size += len(text)
                    if size >= self._chunk_bytes:
                        yield "".join(parts).encode()
                        parts, size = [], 0
        parts.append(writer.end())
        yield "".join(parts).encode()

    async def track(
        self,
        caller: Principal,
        tracker_id: uuid.UUID,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        min_confidence: int = 0,
    ) -> Track:
        """One tracker's track for a picture (at most MAX_TRACK_POINTS reports: narrow the
        time range for more)."""
        q = ExportQuery(
            ExportFormat.CSV, tracker_id, None, start_time, end_time, min_confidence, True
        ).checked()
        run_id = await self._authorize(caller, q)
        points: list[ExportPoint] = []
        changes: list[ExportChange] = []
        async with self._source.open(q) as reader:
            async for page in reader.changes(self._page_rows):
                changes.extend(page)
            async for pts in reader.points(self._page_rows):
                points.extend(pts)
                if len(points) > MAX_TRACK_POINTS:
                    raise InvalidArgument(
                        "start_time",
                        f"more than {MAX_TRACK_POINTS} reports: narrow the time range",
                    )
        return Track(tracker_id, points, changes, await self._source.fences(run_id))
