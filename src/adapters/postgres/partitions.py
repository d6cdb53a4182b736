"""Monthly partitions of ``reports``, made ahead of time by a maintenance step, never by a
request: creating a partition locks the whole ``reports`` table (ACCESS EXCLUSIVE), so on
the request path it stalled every reader and writer, and one hostile message once made
thousands of them in one transaction. A report whose month has no partition yet lands in
``reports_default``; making that month's partition moves its rows out of the default first.

One month per transaction, under an advisory lock (replicas race harmlessly) and a lock
timeout (a busy table delays maintenance, not requests)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from domain.instants import add_months

log = logging.getLogger("tracker.partitions")

PARTITION_LOCK = 0x7265_7074  # "rept"
LOCK_TIMEOUT = "5s"
_MONTHLY = re.compile(r"reports_(\d{4})_(\d{2})")


def partition_name(month: datetime) -> str:
    return f"reports_{month:%Y_%m}"


class PostgresReportPartitions:
    """Makes the monthly partitions of ``reports`` that are missing."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def existing(self) -> set[str]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'reports'::regclass"
            )
        return {r["relname"] for r in rows}

    async def ensure(self, months: Sequence[datetime]) -> list[str]:
        """Make the partitions of ``months`` that do not exist; return the names made."""
        have = await self.existing()
        made = []
        for month in months:
            name = partition_name(month)
            if name not in have and await self._make(month, name):
                made.append(name)
        return made

    async def drop_empty_outside(self, floor: datetime, ceiling: datetime) -> list[str]:
        """Drop monthly partitions lying wholly outside [floor, ceiling) that hold no row
        (made on demand before the time rule, e.g. one per month of a hostile message; each
        slows every query on ``reports`` that cannot prune it). Returns the names dropped."""
        dropped = []
        for name in sorted(await self.existing()):
            match = _MONTHLY.fullmatch(name)
            if not match:
                continue
            start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            if floor <= start < ceiling:
                continue
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                    continue
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):
                    continue
                await conn.execute(f"DROP TABLE {name}")
            dropped.append(name)
        if dropped:
            log.info("empty out-of-range report partitions dropped", extra={"partitions": dropped})
        return dropped

    async def _make(self, month: datetime, name: str) -> bool:
        end = add_months(month, 1)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                return False
            moved = await self._take_from_default(conn, month, end)
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF reports "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
            )
            if moved:
                cols = await _insertable_columns(conn)
                await conn.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM reports_moving")
        log.info("report partition made", extra={"partition": name, "moved_from_default": moved})
        return True

    @staticmethod
    async def _take_from_default(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
        """Rows of [start, end) that waited in the default partition, deleted from it and
        kept in a temporary table until the new partition exists (so its creation, which
        checks the default holds none of its rows, succeeds). Moving them does not enqueue
        them again: the parent's statement trigger does not see a partition's insert."""
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM reports_default WHERE report_time >= $1 "
            "AND report_time < $2)",
            start,
            end,
        ):
            return 0
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS reports_moving (LIKE reports) ON COMMIT DROP"
        )
        status = await conn.execute(
            "WITH gone AS (DELETE FROM reports_default WHERE report_time >= $1 "
            "AND report_time < $2 RETURNING *) INSERT INTO reports_moving SELECT * FROM gone",
            start,
            end,
        )
        return int(status.rsplit(" ", 1)[1])


async def _insertable_columns(conn: asyncpg.Connection) -> str:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'reports'::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
    )
    return ", ".join(f'"{r["attname"]}"' for r in rows)
