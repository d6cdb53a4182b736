"""Cohort shares of silent trackers, their snapshots and outage events in PostgreSQL. The
age bin is computed in SQL the way ``domain.outages.age_bin`` does (a test checks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.errors import InvalidArgument
from domain.outages import Cohort, CohortShare, Dimension, Outage, OutageRule
from domain.pagination import Page, PageRequest, cursor_parts
from domain.ports.outages import OutageFilter

_SHARES = """
WITH base AS (
    SELECT t.client_id, p.brand_id, t.production_run_id,
           c.silent_time <= $1 AS silent, f.last_account,
           ci.name || ', ' || ci.country_code AS city,
           (greatest(floor(extract(epoch FROM $1 - c.first_report_time) / 86400), 0)::int
               / $2 * $2) AS age_low
    FROM tracker_cadence c
    JOIN trackers t ON t.id = c.tracker_id
    JOIN production_runs p ON p.id = t.production_run_id
    LEFT JOIN tracker_status s ON s.tracker_id = c.tracker_id
    LEFT JOIN fetch_state f ON f.tracker_id = c.tracker_id
    LEFT JOIN cities ci ON ci.geonameid = s.last_city_id
    WHERE c.last_report_time IS NOT NULL AND p.start_time <= $1 AND $1 < p.end_time)
SELECT client_id, d.dimension, d.key, count(*) AS trackers,
       count(*) FILTER (WHERE silent) AS silent
FROM base, LATERAL (VALUES
    ('CLIENT', client_id::text),
    ('BRAND', brand_id::text),
    ('PRODUCTION_RUN', production_run_id::text),
    ('CITY', city),
    ('FIRST_REPORT_AGE', age_low || '-' || (age_low + $2 - 1)),
    ('APPLE_ACCOUNT', last_account)) AS d(dimension, key)
WHERE d.key IS NOT NULL
GROUP BY client_id, d.dimension, d.key
"""


def _cohort(r: asyncpg.Record) -> Cohort:
    return Cohort(r["client_id"], Dimension(r["dimension"]), r["key"])


def _outage(r: asyncpg.Record) -> Outage:
    return Outage(
        id=r["id"],
        cohort=_cohort(r),
        trackers=r["trackers"],
        silent=r["silent"],
        share=r["share"],
        baseline=r["baseline"],
        start_time=r["start_time"],
        end_time=r["end_time"],
    )


class PostgresOutageRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows

    async def shares(self, now: datetime, rule: OutageRule) -> list[CohortShare]:
        rows = await self._fetch(_SHARES, now, rule.age_bin_days)
        return [CohortShare(_cohort(r), r["trackers"], r["silent"]) for r in rows]

    async def baseline(self, now: datetime, window: timedelta) -> dict[Cohort, float]:
        rows = await self._fetch(
            "SELECT client_id, dimension, key, avg(silent::float8 / trackers) AS share"
            " FROM cohort_silence WHERE taken_time >= $1 AND taken_time < $2 AND trackers > 0"
            " GROUP BY client_id, dimension, key",
            now - window,
            now,
        )
        return {_cohort(r): float(r["share"]) for r in rows}

    async def open_outages(self) -> dict[Cohort, Outage]:
        rows = await self._fetch("SELECT * FROM outage_events WHERE end_time IS NULL")
        return {_cohort(r): _outage(r) for r in rows}

    async def save(
        self,
        now: datetime,
        shares: Sequence[CohortShare],
        opened: Sequence[Outage],
        ended: Sequence[int],
    ) -> list[Outage]:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(
                    "cohort_silence",
                    records=[
                        (
                            now,
                            s.cohort.client_id,
                            s.cohort.dimension.value,
                            s.cohort.key,
                            s.trackers,
                            s.silent,
                        )
                        for s in shares
                    ],
                    columns=["taken_time", "client_id", "dimension", "key", "trackers", "silent"],
                )
                if ended:
                    await conn.execute(
                        "UPDATE outage_events SET end_time = $2 WHERE id = ANY($1::bigint[])",
                        list(ended),
                        now,
                    )
                made = []
                for o in opened:
                    row = await conn.fetchrow(
                        "INSERT INTO outage_events (client_id, dimension, key, trackers, silent,"
                        " share, baseline, start_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                        " RETURNING *",
                        o.cohort.client_id,
                        o.cohort.dimension.value,
                        o.cohort.key,
                        o.trackers,
                        o.silent,
                        o.share,
                        o.baseline,
                        o.start_time,
                    )
                    assert row is not None  # RETURNING always gives the row
                    made.append(_outage(row))
        return made

    async def list_outages(self, filter: OutageFilter, page: PageRequest) -> Page[Outage]:
        where: list[str] = ["true"]
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if filter.client_ids is not None:
            where.append(f"client_id = ANY({arg(list(filter.client_ids))}::uuid[])")
        if filter.client_id is not None:
            where.append(f"client_id = {arg(filter.client_id)}")
        if filter.open_only:
            where.append("end_time IS NULL")
        if page.after is not None:
            (last,) = cursor_parts(page.after, 1)
            if not last.isdigit() or len(last) > 18:
                raise InvalidArgument("page_token", "page token cursor out of range (id)")
            where.append(f"id < {arg(int(last))}")
        rows = await self._fetch(
            f"SELECT * FROM outage_events WHERE {' AND '.join(where)} ORDER BY id DESC"
            f" LIMIT {arg(page.size + 1)}",
            *args,
        )
        out = [_outage(r) for r in rows[: page.size]]
        return Page(out, str(out[-1].id) if len(rows) > page.size else None)
