"""Against a real PostgreSQL: a deadlock inside a unit of work comes out as ``Aborted``
(ABORTED on the wire), never as a raw driver error (INTERNAL), and ``retrying`` turns it
into success for work that is safe to repeat."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from adapters.postgres.uow import PostgresUnitOfWork, PostgresUnitOfWorkFactory
from domain.errors import Aborted

pytestmark = pytest.mark.integration


async def _cross(uow: PostgresUnitOfWork, first: int, second: int, both: asyncio.Barrier) -> None:
    conn = uow._conn  # the unit of work's own connection: no repository locks two rows so
    assert conn is not None
    await conn.execute("UPDATE lockers SET v = v + 1 WHERE id = $1", first)
    await both.wait()
    await conn.execute("UPDATE lockers SET v = v + 1 WHERE id = $1", second)
    await uow.commit()


async def _setup(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "CREATE TABLE lockers (id integer PRIMARY KEY, v integer NOT NULL);"
        "INSERT INTO lockers VALUES (1, 0), (2, 0)"
    )


async def test_a_deadlock_in_a_unit_of_work_is_aborted(pool: asyncpg.Pool) -> None:
    await _setup(pool)
    factory = PostgresUnitOfWorkFactory(pool)
    both = asyncio.Barrier(2)

    async def one(first: int, second: int) -> None:
        async with factory() as uow:
            await _cross(uow, first, second, both)

    results = await asyncio.gather(one(1, 2), one(2, 1), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Aborted", "NoneType"]
    err = next(r for r in results if isinstance(r, Aborted))
    assert isinstance(err.__cause__, asyncpg.DeadlockDetectedError)
    # The loser's transaction left nothing behind.
    assert await pool.fetchval("SELECT sum(v) FROM lockers") == 2


async def test_retrying_runs_the_loser_again_until_both_are_done(pool: asyncpg.Pool) -> None:
    await _setup(pool)
    factory = PostgresUnitOfWorkFactory(pool)
    both = asyncio.Barrier(2)
    runs: list[int] = []

    async def one(first: int, second: int) -> None:
        async def work() -> None:
            runs.append(first)
            async with factory() as uow:
                await _cross(uow, first, second, both)

        await factory.retrying(work)

    async with asyncio.timeout(30):
        # A rerun waits at the barrier for a partner: the winner's task is done, so give it
        # one (the barrier resets after each pass).
        async def partner() -> None:
            while len(runs) < 3:
                await asyncio.sleep(0.01)
            await both.wait()

        await asyncio.gather(one(1, 2), one(2, 1), partner())
    assert len(runs) == 3
    assert await pool.fetchval("SELECT sum(v) FROM lockers") == 4
