"""The asyncpg pool, and the translation of driver failures into domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import asyncpg

from domain.errors import DependencyUnavailable

# Failures that mean "PostgreSQL is not reachable right now", as opposed to a bad statement.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


@contextmanager
def unavailable_on_connection_error() -> Iterator[None]:
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise DependencyUnavailable("postgres", type(exc).__name__) from exc


async def open_pool(dsn: str, max_size: int, connect_timeout_s: float = 5.0) -> asyncpg.Pool:
    """A pool that starts empty, so a server can start (NOT_SERVING) while PostgreSQL is down."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=connect_timeout_s,
        command_timeout=60,
        max_inactive_connection_lifetime=300,
    )
    assert pool is not None
    return pool


async def pool_resource(dsn: str, max_size: int) -> AsyncIterator[asyncpg.Pool]:
    """dependency-injector Resource: the pool lives while the container does."""
    pool = await open_pool(dsn, max_size)
    try:
        yield pool
    finally:
        await pool.close()


class PostgresProbe:
    """Health probe: a round trip through the pool."""

    name = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def check(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
