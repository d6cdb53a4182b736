"""Client-stream read-ahead shared by the ingestion servicers (reports, sightings).

A reader task reads and converts the next messages while the servicer stores the previous
ones, so the protobuf work overlaps the database's. The servicer takes converted messages
in stream order; ``None`` means the stream ended (by its end, or by an error in reading,
which ``finish`` then raises). Leaving the block early cancels the reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Generic, TypeVar

M = TypeVar("M")
T = TypeVar("T")

READ_AHEAD = 4  # messages read and converted ahead of the one being stored


class ReadAhead(Generic[M, T]):
    def __init__(
        self,
        requests: AsyncIterator[M],
        convert: Callable[[M], T],
        depth: int = READ_AHEAD,
    ) -> None:
        self._requests, self._convert = requests, convert
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize=depth)
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReadAhead[M, T]:
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._reader is not None:
            self._reader.cancel()

    async def next(self) -> T | None:
        """The next converted message; None once the stream has ended."""
        return await self._queue.get()

    def ready(self) -> tuple[bool, T | None]:
        """(True, the next message or None at the end) if one is read already; else
        (False, None). For gathering what arrived meanwhile into one transaction."""
        if self._queue.empty():
            return False, None
        return True, self._queue.get_nowait()

    async def finish(self) -> None:
        """After ``next`` gave None: raises what ended the reading early, if anything."""
        assert self._reader is not None
        await self._reader

    async def _read(self) -> None:
        try:
            async for message in self._requests:
                await self._queue.put(self._convert(message))
        finally:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # after an error, too: the end
                await self._queue.put(None)
