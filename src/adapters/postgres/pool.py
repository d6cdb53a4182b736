"""The asyncpg pool, and the translation of driver failures into domain errors."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import asyncpg

from domain.errors import Aborted, DependencyUnavailable, TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failures that mean "PostgreSQL is not reachable right now", as opposed to a bad statement.
# InternalClientError ("cannot switch to state 12; another operation (2) is in progress") is
# what asyncpg raises when the server went away in the middle of a protocol exchange.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.InterfaceError,  # "connection is closed", ...
    asyncpg.InternalClientError,
    asyncpg.OperatorInterventionError,  # 57: admin/crash shutdown, cannot connect now, canceled
    asyncpg.InsufficientResourcesError,  # 53: too many connections, out of memory, disk full
    asyncpg.ReadOnlySQLTransactionError,  # a standby during fail-over
)
# Lost a race: nothing of the transaction was kept, running it again is expected to work.
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,  # 40: deadlock detected, serialization failure
    asyncpg.LockNotAvailableError,  # 55P03: lock_timeout
)
# Not transient, whatever their base class says.
_PERMANENT: tuple[type[BaseException], ...] = (asyncpg.ClientConfigurationError,)

RETRY_ATTEMPTS = 4
RETRY_BASE_S = 0.05
RETRY_CAP_S = 1.0
RETRY_BUDGET_S = 3.0


def transient_error(exc: BaseException) -> TransientError | None:
    """The domain error a transient driver failure stands for; None for anything else."""
    if isinstance(exc, TransientError):
        return exc
    if isinstance(exc, _PERMANENT):
        return None
    if isinstance(exc, CONFLICT_ERRORS):
        reason = getattr(exc, "sqlstate", "") or type(exc).__name__
        return Aborted("postgres", f"{type(exc).__name__} ({reason})")
    if isinstance(exc, CONNECTION_ERRORS):
        return DependencyUnavailable("postgres", type(exc).__name__)
    return None


@contextmanager
def unavailable_on_connection_error() -> Iterator[None]:
    """Driver failures that are transient become domain errors: connection loss ->
    DependencyUnavailable (UNAVAILABLE), lost races -> Aborted (ABORTED)."""
    try:
        yield
    except (*CONNECTION_ERRORS, *CONFLICT_ERRORS) as exc:
        err = transient_error(exc)
        if err is None:
            raise
        raise err from exc


async def retrying(
    work: Callable[[], Awaitable[T]],
    attempts: int = RETRY_ATTEMPTS,
    base_s: float = RETRY_BASE_S,
    cap_s: float = RETRY_CAP_S,
    budget_s: float = RETRY_BUDGET_S,
) -> T:
    """Run ``work`` again after a transient failure (at most ``attempts`` runs, full-jitter
    exponential pauses, none started once ``budget_s`` has passed: a hung database must not
    hold the caller for attempts x connect timeout). Only for work that is safe to repeat:
    each run a transaction of its own, idempotent as a whole. The last failure is raised as
    its domain error."""
    started = time.monotonic()
    for attempt in range(attempts):
        try:
            return await work()
        except (TransientError, *CONNECTION_ERRORS, *CONFLICT_ERRORS) as exc:
            err = transient_error(exc)
            if err is None:
                raise
            if attempt + 1 >= attempts or time.monotonic() - started > budget_s:
                if err is exc:
                    raise
                raise err from exc
            log.info(
                "retrying after a transient database error",
                extra={"attempt": attempt + 1, "error": str(err)},
            )
            await asyncio.sleep(random.uniform(0, min(cap_s, base_s * 2**attempt)))
    raise AssertionError("unreachable")


async def open_pool(
    dsn: str, max_size: int, connect_timeout_s: float = 5.0, read_only: bool = False
) -> asyncpg.Pool:
    """A pool that starts empty, so a server can start (NOT_SERVING) while PostgreSQL is down.
    ``read_only``: every transaction is READ ONLY (a write through it fails loudly)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=connect_timeout_s,
        command_timeout=60,
        max_inactive_connection_lifetime=300,
        server_settings={"default_transaction_read_only": "on"} if read_only else None,
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


async def read_pool_resource(
    dsn: str, primary: asyncpg.Pool, max_size: int
) -> AsyncIterator[asyncpg.Pool]:
    """dependency-injector Resource: the pool the query side reads through. With ``dsn`` (a
    read replica) its own read-only pool; without, the primary's pool itself."""
    if not dsn:
        yield primary
        return
    pool = await open_pool(dsn, max_size, read_only=True)
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
