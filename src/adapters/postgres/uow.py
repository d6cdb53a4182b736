"""Unit of work: one pooled connection and one transaction, committed explicitly."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

import asyncpg

from adapters.postgres.detectors import (
    PostgresDetectorRepository,
    PostgresLinkRepository,
    PostgresSightingRepository,
    PostgresTravelTimeRepository,
)
from adapters.postgres.devices import (
    PostgresDeviceProfileRepository,
    PostgresDeviceRepository,
    PostgresDeviceTypeRepository,
    PostgresFirmwareRepository,
    PostgresRolloutRepository,
)
from adapters.postgres.fetching import PostgresFetchStateRepository
from adapters.postgres.jobs import PostgresJobRepository
from adapters.postgres.keys import PostgresTagKeyRepository
from adapters.postgres.pool import (
    CONNECTION_ERRORS,
    retrying,
    transient_error,
    unavailable_on_connection_error,
)
from adapters.postgres.reports import PostgresReportRepository
from adapters.postgres.setup import (
    PostgresBrandRepository,
    PostgresClientRepository,
    PostgresLocationRepository,
    PostgresProductionRunRepository,
    PostgresTrackerRepository,
)
from adapters.postgres.users import PostgresRefreshTokenRepository, PostgresUserRepository
from domain.errors import TransientError

T = TypeVar("T")


class PostgresUnitOfWork:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._tx: asyncpg.transaction.Transaction | None = None

    async def __aenter__(self) -> Self:
        # Nothing has happened yet, so a failure here (typically a pooled connection that
        # died with a PostgreSQL restart) is always safe to try again on another connection.
        self._conn = conn = await retrying(self._begin, attempts=2)
        self.clients = PostgresClientRepository(conn)
        self.brands = PostgresBrandRepository(conn)
        self.production_runs = PostgresProductionRunRepository(conn)
        self.locations = PostgresLocationRepository(conn)
        self.trackers = PostgresTrackerRepository(conn)
        self.users = PostgresUserRepository(conn)
        self.refresh_tokens = PostgresRefreshTokenRepository(conn)
        self.tag_keys = PostgresTagKeyRepository(conn)
        self.reports = PostgresReportRepository(conn)
        self.fetch_states = PostgresFetchStateRepository(conn)
        self.detectors = PostgresDetectorRepository(conn)
        self.links = PostgresLinkRepository(conn)
        self.sightings = PostgresSightingRepository(conn)
        self.travel_times = PostgresTravelTimeRepository(conn)
        self.jobs = PostgresJobRepository(conn)
        self.device_types = PostgresDeviceTypeRepository(conn)
        self.firmware = PostgresFirmwareRepository(conn)
        self.device_profiles = PostgresDeviceProfileRepository(conn)
        self.devices = PostgresDeviceRepository(conn)
        self.rollouts = PostgresRolloutRepository(conn)
        return self

    async def _begin(self) -> asyncpg.Connection:
        with unavailable_on_connection_error():
            conn = await self._pool.acquire()
            try:
                self._tx = conn.transaction()
                await self._tx.start()
            except BaseException:
                self._tx = None
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._pool.release(conn)
                raise
        return conn

    async def commit(self) -> None:
        assert self._tx is not None, "commit outside the unit of work"
        with unavailable_on_connection_error():
            await self._tx.commit()
        self._tx = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None:
            return
        try:
            if tx is not None:
                # If the connection is gone, nothing was committed either.
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await tx.rollback()
        finally:
            # A connection that fails its reset is terminated by the pool (and replaced).
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._pool.release(conn)
        if exc is not None and not isinstance(exc, TransientError):
            err = transient_error(exc)
            if err is not None:
                raise err from exc


class PostgresUnitOfWorkFactory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def __call__(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self._pool)

    async def retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` (its own units of work, safe to repeat) again after transient
        failures: a bounded number of times, with jittered pauses."""
        return await retrying(work)
