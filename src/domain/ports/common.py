"""Ports every capability shares: the clock, tracing, and the shape of a unit of work (one
transaction) and of its factory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar

T = TypeVar("T")
U_co = TypeVar("U_co", covariant=True)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class Tracer(Protocol):
    """Marks a unit of work (a fetch turn) as one span of a trace, so what it does (requests,
    queries, the reports it stores) is seen together (OpenTelemetry in production)."""

    def span(self, name: str) -> AbstractContextManager[object]: ...


class NullTracer:
    def span(self, name: str) -> AbstractContextManager[object]:
        return nullcontext()


class Transaction(Protocol):
    """One transaction; rolled back unless ``commit`` was awaited. Each capability's unit of
    work is a transaction carrying only the repositories its use cases touch."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol[U_co]):
    """Opens units of work of one capability (``UnitOfWorkFactory[SetupUnitOfWork]``)."""

    def __call__(self) -> U_co: ...

    async def retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` again after a transient failure (connection lost, deadlock, ...), a
        bounded number of times with jittered pauses; the last failure is raised as
        ``TransientError``. Only for work that is safe to repeat: it opens its own units of
        work, and running it twice leaves the same state as once."""
        ...
