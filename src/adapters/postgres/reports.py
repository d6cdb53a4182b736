"""Reports, written in bulk: COPY into a per-connection staging table, then one
INSERT ... SELECT ... ON CONFLICT DO NOTHING (idempotent), into monthly partitions made
ahead by maintenance (``adapters.postgres.partitions``); a month without one goes to the
default partition. Writing never creates a partition."""

from __future__ import annotations

import asyncpg

from domain.reports import Report, e7

_STAGING_COLUMNS = [
    "tracker_id",
    "report_time",
    "latitude_e7",
    "longitude_e7",
    "confidence",
    "horizontal_accuracy_m",
    "status",
    "published_time",
    "source",
]


class PostgresReportRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_many(self, reports: list[Report]) -> int:
        """Store the reports; returns how many were new (the rest were already stored)."""
        if not reports:
            return 0
        await self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS reports_staging (tracker_id uuid, report_time "
            "timestamptz, latitude_e7 integer, longitude_e7 integer, confidence smallint, "
            "horizontal_accuracy_m integer, status smallint, published_time timestamptz, "
            "source text) ON COMMIT DELETE ROWS"
        )
        await self._conn.execute("DELETE FROM reports_staging")
        await self._conn.copy_records_to_table(
            "reports_staging",
            columns=_STAGING_COLUMNS,
            records=[
                (
                    r.tracker_id,
                    r.report_time,
                    e7(r.position.latitude),
                    e7(r.position.longitude),
                    r.confidence,
                    r.horizontal_accuracy_m,
                    r.status,
                    r.published_time,
                    r.source,
                )
                for r in reports
            ],
        )
        cols = ", ".join(_STAGING_COLUMNS)
        status = await self._conn.execute(
            f"INSERT INTO reports ({cols}) SELECT {cols} FROM reports_staging "
            "ON CONFLICT DO NOTHING"
        )
        return int(status.rsplit(" ", 1)[1])

    async def count(self, tracker_id: object) -> int:
        return int(
            await self._conn.fetchval(
                "SELECT count(*) FROM reports WHERE tracker_id = $1", tracker_id
            )
        )
