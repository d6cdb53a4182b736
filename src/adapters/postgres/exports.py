"""Rows of exports (issue 17) from PostgreSQL: one read-only REPEATABLE READ transaction per
export (its status changes and its reports agree with each other), read through server-side
cursors a page at a time, so an export of millions of reports never sits in memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.exports import ExportChange, ExportPoint, ExportQuery, Fence

IDLE_LIMIT_S = 300
"""An export whose reader takes no rows for this long is ended by PostgreSQL (the stream
then fails with UNAVAILABLE)."""


# The rows of one tracker ($1) or of every tracker of one run ($1 a run id), in a time
# range ($2, $3); each an index range scan of the primary key (tracker, time, position).
def _target(t: str, run: bool) -> str:
    which = (
        f"{t}.tracker_id IN (SELECT id FROM trackers WHERE production_run_id = $1)"
        if run
        else f"{t}.tracker_id = $1"
    )
    return f"""{which}
               AND ($2::timestamptz IS NULL OR {t}.report_time >= $2)
               AND ($3::timestamptz IS NULL OR {t}.report_time < $3)"""


def points_sql(run: bool) -> str:
    return f"""SELECT r.tracker_id, r.report_time, r.latitude_e7, r.longitude_e7,
                      r.horizontal_accuracy_m, r.confidence, r.source
               FROM reports r
               WHERE {_target("r", run)} AND r.confidence >= $4
               ORDER BY r.tracker_id, r.report_time, r.latitude_e7, r.longitude_e7"""


def changes_sql(run: bool) -> str:
    return f"""SELECT h.tracker_id, h.report_time, h.latitude_e7, h.longitude_e7, h.status,
                      h.previous_status
               FROM status_history h
               WHERE {_target("h", run)}
               ORDER BY h.tracker_id, h.report_time, h.latitude_e7, h.longitude_e7"""


class _Reader:
    def __init__(self, conn: asyncpg.Connection, q: ExportQuery) -> None:
        self._conn, self._q = conn, q
        self._run = q.tracker_id is None
        self._args = (q.tracker_id or q.production_run_id, q.start_time, q.end_time)

    async def _pages(
        self, sql: str, args: tuple[object, ...], page_rows: int
    ) -> AsyncIterator[list[asyncpg.Record]]:
        with unavailable_on_connection_error():
            cursor = await self._conn.cursor(sql, *args)
            while True:
                with unavailable_on_connection_error():
                    rows = await cursor.fetch(page_rows)
                if not rows:
                    return
                yield rows
                if len(rows) < page_rows:
                    return

    async def changes(self, page_rows: int) -> AsyncIterator[list[ExportChange]]:
        async for rows in self._pages(changes_sql(self._run), self._args, page_rows):
            yield [
                ExportChange(
                    r["tracker_id"],
                    r["report_time"],
                    r["latitude_e7"] / 1e7,
                    r["longitude_e7"] / 1e7,
                    r["status"],
                    r["previous_status"],
                )
                for r in rows
            ]

    async def points(self, page_rows: int) -> AsyncIterator[list[ExportPoint]]:
        args = (*self._args, self._q.min_confidence)
        async for rows in self._pages(points_sql(self._run), args, page_rows):
            yield [
                ExportPoint(
                    r["tracker_id"],
                    r["report_time"],
                    r["latitude_e7"] / 1e7,
                    r["longitude_e7"] / 1e7,
                    r["horizontal_accuracy_m"],
                    r["confidence"],
                    r["source"],
                )
                for r in rows
            ]


class PostgresExportSource:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def run_client(self, production_run_id: uuid.UUID) -> uuid.UUID | None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                found: uuid.UUID | None = await conn.fetchval(
                    "SELECT client_id FROM production_runs WHERE id = $1",
                    production_run_id,
                )
                return found

    async def tracker_run(self, tracker_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT client_id, production_run_id FROM trackers WHERE id = $1", tracker_id
                )
        return None if row is None else (row["client_id"], row["production_run_id"])

    @asynccontextmanager
    async def open(self, query: ExportQuery) -> AsyncIterator[_Reader]:
        with unavailable_on_connection_error():
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                # a reader that stops reading (and a call whose end gRPC has not reported)
                # holds no snapshot forever: PostgreSQL ends the session after this long
                await conn.execute(
                    f"SET LOCAL idle_in_transaction_session_timeout = '{IDLE_LIMIT_S}s'"
                )
                yield _Reader(conn, query)

    async def fences(self, production_run_id: uuid.UUID) -> list[Fence]:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    """SELECT display_name, kind, ST_Y(center::geometry) AS lat,
                              ST_X(center::geometry) AS lon, radius_m
                       FROM locations WHERE production_run_id = $1 ORDER BY kind, display_name""",
                    production_run_id,
                )
        return [
            Fence(r["display_name"], r["kind"], r["lat"], r["lon"], r["radius_m"]) for r in rows
        ]
