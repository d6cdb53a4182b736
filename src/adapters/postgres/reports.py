"""Reports, written in bulk: COPY into a per-connection staging table, then one
INSERT ... SELECT ... ON CONFLICT DO NOTHING (idempotent), into monthly partitions."""

from __future__ import annotations

from datetime import UTC, datetime

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
_PARTITION_LOCK = 0x7265_7074  # "rept"


def _month_start(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def _next_month(t: datetime) -> datetime:
    return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)


class PostgresReportRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def _ensure_partitions(self, months: set[datetime]) -> None:
        for month in sorted(months):
            name = f"reports_{month:%Y_%m}"
            if await self._conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                continue
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            if await self._conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                continue
            await self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF reports FOR VALUES FROM "
                f"('{month.isoformat()}') TO ('{_next_month(month).isoformat()}')"
            )

    async def add_many(self, reports: list[Report]) -> int:
        """Store the reports; returns how many were new (the rest were already stored)."""
        if not reports:
            return 0
        await self._ensure_partitions({_month_start(r.report_time) for r in reports})
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
