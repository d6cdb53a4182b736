"""The asyncpg pool, and the translation of driver failures into domain errors."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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
    dsn: str,
    primary: asyncpg.Pool,
    max_size: int,
    max_lag_s: float = 30.0,
    fallback: bool = True,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncIterator[asyncpg.Pool | ReplicaRouting]:
    """dependency-injector Resource: the pool the query side reads through. With ``dsn`` (a
    read replica) a ``ReplicaRouting`` over its own read-only pool; without, the primary's
    pool itself."""
    if not dsn:
        yield primary
        return
    pool = await open_pool(dsn, max_size, read_only=True)
    try:
        yield ReplicaRouting(pool, primary, max_lag_s, fallback, monotonic)
    finally:
        await pool.close()


class ReplicaLagging(Exception):
    pass


class ReplicaRouting:
    """The read pool with a replica: reads go to the replica while its last check found it
    answering and at most ``max_lag_s`` behind the primary; otherwise, with ``fallback``, to
    the primary until a check finds the replica back (without, they stay on the replica and
    fail or read stale rows: the process's readiness is what reports it then).

    Also the replica's health probe (``check``), run by the health reporter off the request
    path. Lag is measured against the primary, not the replica's own clock: every check
    samples the primary's WAL position; the replica is as old as the newest sample it has
    replayed past (an idle primary means no lag; a standby cut off from its primary, whose
    own ``pg_last_xact_replay_timestamp`` would look fine, ages)."""

    name = "postgres_replica"

    def __init__(
        self,
        replica: asyncpg.Pool,
        primary: asyncpg.Pool,
        max_lag_s: float,
        fallback: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica, self.primary = replica, primary
        self._max_lag_s, self._fallback, self._monotonic = max_lag_s, fallback, monotonic
        self._samples: list[tuple[float, int]] = []  # (monotonic s, primary WAL position)
        self.on_replica = True  # trusted until a check says otherwise
        self.lag_s: float | None = None

    @property
    def current(self) -> asyncpg.Pool:
        return self.replica if self.on_replica or not self._fallback else self.primary

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self.current.acquire(timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        """Every other pool method (fetch, fetchval, execute, ...) of the current pool."""
        return getattr(self.current, name)

    async def check(self) -> None:
        """Raise if the replica does not answer or lags more than ``max_lag_s``; route the
        reads accordingly."""
        try:
            self.lag_s = await self._lag()
        except Exception:
            self._route(False, "replica unreachable")
            raise
        if self.lag_s > self._max_lag_s:
            self._route(False, "replica lagging")
            raise ReplicaLagging(f"{self.lag_s:.1f} s behind the primary")
        self._route(True, "replica back")

    async def _lag(self) -> float:
        now = self._monotonic()
        try:
            async with self.primary.acquire() as conn:
                head = await conn.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
                )
        except Exception:
            head = None  # the primary's own probe reports it; judge the replica alone
        else:
            self._samples.append((now, head))
        async with self.replica.acquire() as conn:
            replayed = await conn.fetchval(
                "SELECT CASE WHEN pg_is_in_recovery() "
                "THEN pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint END"
            )
        if replayed is None:  # not a standby (the primary itself, or promoted)
            self._samples.clear()
            return 0.0
        if head is not None and replayed >= head:
            self._samples = [(now, head)]
            return 0.0
        caught_up = [t for t, lsn in self._samples if lsn <= replayed]
        # the replica holds everything the primary had at the newest sample it has replayed
        # past (or at least since the oldest sample, if none); older samples are not needed,
        # nor any older than twice the bound (the lag is past the bound then anyway)
        since = max(caught_up) if caught_up else self._samples[0][0] if self._samples else now
        floor = max(since, now - 2 * self._max_lag_s)
        self._samples = [(t, lsn) for t, lsn in self._samples if t >= floor]
        return now - since

    def _route(self, on_replica: bool, why: str) -> None:
        if on_replica != self.on_replica and self._fallback:
            log.log(
                logging.INFO if on_replica else logging.WARNING,
                "reads moved",
                extra={"to": "replica" if on_replica else "primary", "reason": why},
            )
        self.on_replica = on_replica


class PostgresProbe:
    """Health probe: a round trip through the pool."""

    name = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def check(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
