"""Statements that must find each row of a batch by its key, whatever the planner thinks.

A batch of a tenth of the fleet, or statistics taken while a column was nearly all NULL
(a claim token before any claim), make the planner's estimates favour a hash of a whole
table, or a nested loop that compares every row of one side with every row of the other
(seen: 10,000 claims against the queue, 12 s per statement). Both grow with the fleet
rather than with the batch. Where a ``LATERAL`` subquery with ``OFFSET 0`` cannot express
the statement (an ``UPDATE ... FROM``, a ``DELETE ... USING``), hash and merge joins are
turned off for that statement only (``SET LOCAL``, restored after it), which leaves the
planner nested loops over the batch with index probes of the table."""

from __future__ import annotations

from typing import Any

import asyncpg

_OFF = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
_RESTORE = "SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT"


async def execute_by_probes(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """``conn.execute(sql, *args)`` with hash and merge joins off (inside a transaction:
    if the statement fails, the transaction's rollback restores the settings)."""
    await conn.execute(_OFF)
    status = await conn.execute(sql, *args)
    await conn.execute(_RESTORE)
    return str(status)


__all__ = ["execute_by_probes"]
