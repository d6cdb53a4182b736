"""Reports, written in bulk: COPY into a per-connection staging table, then one
INSERT ... SELECT ... ON CONFLICT DO NOTHING (idempotent), into monthly partitions made
ahead by maintenance (``adapters.postgres.partitions``); a month without one goes to the
default partition. Writing never creates a partition."""

from __future__ import annotations

import uuid

import asyncpg
import numpy as np

from adapters.tracing import current_traceparent
from domain.reports import Report, ReportRows, e7

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


# The bulk path's binary COPY: fixed-width tuples (big-endian, as PostgreSQL's binary format
# wants), each field preceded by its length; an unknown publication time is sent as
# -infinity and stored as NULL, the source as its number in the statement's array.
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_NO_TIME = np.iinfo(np.int64).min  # timestamptz '-infinity'
_FIELDS = [
    ("tracker_id", "V16"),
    ("report_time", ">i8"),
    ("latitude_e7", ">i4"),
    ("longitude_e7", ">i4"),
    ("confidence", ">i2"),
    ("horizontal_accuracy_m", ">i4"),
    ("status", ">i2"),
    ("published_time", ">i8"),
    ("source_no", ">i2"),
]
_FIELD_SIZES = {f"len_{name}": np.dtype(kind).itemsize for name, kind in _FIELDS}
_ROW = np.dtype(
    [("count", ">i2")]
    + [x for name, kind in _FIELDS for x in ((f"len_{name}", ">i4"), (name, kind))]
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_ROWS_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS reports_rows (tracker_id uuid, report_time timestamptz, "
    "latitude_e7 integer, longitude_e7 integer, confidence smallint, "
    "horizontal_accuracy_m integer, status smallint, published_time timestamptz, "
    "source_no smallint) ON COMMIT DELETE ROWS; DELETE FROM reports_rows"
)
_INSERT_ROWS = (
    f"INSERT INTO reports ({', '.join(_STAGING_COLUMNS)}) "
    "SELECT tracker_id, report_time, latitude_e7, longitude_e7, confidence, "
    "horizontal_accuracy_m, status, NULLIF(published_time, '-infinity'), ($1::text[])[source_no] "
    "FROM reports_rows ON CONFLICT DO NOTHING"
)


# One round trip: the per-connection staging table, made once, emptied.
_STAGING_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS reports_staging (tracker_id uuid, report_time "
    "timestamptz, latitude_e7 integer, longitude_e7 integer, confidence smallint, "
    "horizontal_accuracy_m integer, status smallint, published_time timestamptz, "
    "source text) ON COMMIT DELETE ROWS; DELETE FROM reports_staging"
)
_INSERT_STAGED = (
    f"INSERT INTO reports ({', '.join(_STAGING_COLUMNS)}) "
    f"SELECT {', '.join(_STAGING_COLUMNS)} FROM reports_staging "
    "ON CONFLICT DO NOTHING RETURNING tracker_id"
)


async def _note_trace(conn: asyncpg.Connection) -> None:
    """Tell the queue trigger which trace stores these reports (migration 0022); only while
    tracing is on, so it costs nothing otherwise."""
    traceparent = current_traceparent()
    if traceparent is not None:
        await conn.execute("SELECT set_config('tracker.traceparent', $1, true)", traceparent)


class PostgresReportRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_many(self, reports: list[Report]) -> int:
        """Store the reports; returns how many were new (the rest were already stored)."""
        return len(await self.add_new(reports))

    async def add_new(self, reports: list[Report]) -> list[uuid.UUID]:
        """Store the reports; returns the tracker of each one that was new (one INSERT ...
        ON CONFLICT DO NOTHING RETURNING: no separate read of what is held)."""
        if not reports:
            return []
        await self._conn.execute(_STAGING_TABLE)
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
        await _note_trace(self._conn)
        return [r[0] for r in await self._conn.fetch(_INSERT_STAGED)]

    async def add_rows(self, rows: ReportRows) -> int:
        """Store reports given in columns: one binary COPY built from arrays (no Python
        object per value on the way), then one INSERT ... ON CONFLICT DO NOTHING."""
        n = len(rows)
        if not n:
            return 0
        times = np.array(rows.times_us, dtype=np.int64)
        sources: dict[str, int] = {}
        source_no = [sources.setdefault(s, len(sources) + 1) for s in rows.sources]
        published = np.array(
            [_NO_TIME if p is None else p - _PG_EPOCH_US for p in rows.published_us],
            dtype=np.int64,
        )
        tuples = np.zeros(n, dtype=_ROW)
        for name, size in _FIELD_SIZES.items():
            tuples[name] = size
        tuples["count"] = len(_FIELD_SIZES)
        tuples["tracker_id"] = np.frombuffer(
            b"".join([t.bytes for t in rows.tracker_ids]), dtype="V16"
        )
        tuples["report_time"] = times - _PG_EPOCH_US
        tuples["latitude_e7"] = np.floor(np.array(rows.latitudes) * 1e7 + 0.5)
        tuples["longitude_e7"] = np.floor(np.array(rows.longitudes) * 1e7 + 0.5)
        tuples["confidence"] = rows.confidences
        tuples["horizontal_accuracy_m"] = rows.accuracies_m
        tuples["status"] = rows.statuses
        tuples["published_time"] = published
        tuples["source_no"] = source_no
        await self._conn.execute(_ROWS_TABLE)
        await self._conn.copy_to_table(
            "reports_rows",
            # A memoryview: asyncpg would take bytes for a file name.
            source=memoryview(b"".join((_COPY_HEADER, tuples.tobytes(), _COPY_TRAILER))),
            format="binary",
        )
        await _note_trace(self._conn)
        status = await self._conn.execute(_INSERT_ROWS, list(sources))
        return int(status.rsplit(" ", 1)[1])

    async def count(self, tracker_id: object) -> int:
        return int(
            await self._conn.fetchval(
                "SELECT count(*) FROM reports WHERE tracker_id = $1", tracker_id
            )
        )
