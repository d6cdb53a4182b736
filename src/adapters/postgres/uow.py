"""Unit of work: one pooled connection and one transaction, committed explicitly."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Self

import asyncpg

from adapters.postgres.fetching import PostgresFetchStateRepository
from adapters.postgres.keys import PostgresTagKeyRepository
from adapters.postgres.pool import CONNECTION_ERRORS, unavailable_on_connection_error
from adapters.postgres.reports import PostgresReportRepository
from adapters.postgres.setup import (
    PostgresBrandRepository,
    PostgresClientRepository,
    PostgresLocationRepository,
    PostgresProductionRunRepository,
    PostgresTrackerRepository,
)
from adapters.postgres.users import PostgresRefreshTokenRepository, PostgresUserRepository
from domain.errors import DependencyUnavailable


class PostgresUnitOfWork:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._tx: asyncpg.transaction.Transaction | None = None

    async def __aenter__(self) -> Self:
        with unavailable_on_connection_error():
            conn = await self._pool.acquire()
            try:
                self._tx = conn.transaction()
                await self._tx.start()
            except BaseException:
                await self._pool.release(conn)
                raise
        self._conn = conn
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
        return self

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
            await self._pool.release(conn)
        if exc is not None and isinstance(exc, CONNECTION_ERRORS):
            raise DependencyUnavailable("postgres", type(exc).__name__) from exc


class PostgresUnitOfWorkFactory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def __call__(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self._pool)
