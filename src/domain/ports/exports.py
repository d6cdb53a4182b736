"""Ports of exports (issue 17): where an export's rows and a track picture's fences come
from. Rows are read in pages from one consistent snapshot, never all at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from domain.exports import ExportChange, ExportPoint, ExportQuery, Fence


class ExportReader(Protocol):
    """One export's rows, in pages of at most ``page_rows``, ordered by tracker and time."""

    def changes(self, page_rows: int) -> AsyncIterator[list[ExportChange]]: ...

    def points(self, page_rows: int) -> AsyncIterator[list[ExportPoint]]: ...


class ExportSource(Protocol):
    async def run_client(self, production_run_id: uuid.UUID) -> uuid.UUID | None:
        """The client of the run, None if there is no such run."""
        ...

    async def tracker_run(self, tracker_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
        """The client and production run of the tracker, None if there is no such tracker."""
        ...

    def open(self, query: ExportQuery) -> AbstractAsyncContextManager[ExportReader]:
        """A reader over one snapshot of the query's rows (a checked query)."""
        ...

    async def fences(self, production_run_id: uuid.UUID) -> list[Fence]:
        """The run's storage and delivery locations."""
        ...
