"""Cadences and silent trackers in PostgreSQL: the rule of ``domain/silence.py`` computed in
SQL over each tracker's reports (``percentile_disc`` of the gaps between buckets), a chunk of
trackers per turn; health read live from the last sign of life: the last stored report, or
the last check-in of a device that carries the tracker (issue 18)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.errors import NotFound
from domain.pagination import Page, PageRequest, cursor_id, cursor_parts, cursor_time
from domain.ports.silence import SilentFilter
from domain.silence import CADENCE_QUANTILE, HealthState, SilenceRule, TrackerHealth, health_state

_REFRESH = """
WITH t AS (SELECT id FROM trackers WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2),
b AS (
    SELECT DISTINCT r.tracker_id, floor(extract(epoch FROM r.report_time) / $5) AS bucket
    FROM reports r JOIN t ON r.tracker_id = t.id
    WHERE r.report_time >= $4 AND r.report_time <= $3),
g AS (
    SELECT tracker_id,
           (bucket - lag(bucket) OVER (PARTITION BY tracker_id ORDER BY bucket)) * $5 AS gap
    FROM b),
c AS (
    SELECT tracker_id, count(gap) AS gaps,
           percentile_disc($11) WITHIN GROUP (ORDER BY gap) FILTER (WHERE gap IS NOT NULL) AS q
    FROM g GROUP BY tracker_id),
l AS (
    SELECT t.id,
           -- the last sign of life: a report, or a check-in of a device carrying the
           -- tracker (issue 18); greatest() skips a NULL
           greatest((SELECT max(report_time) FROM reports
                     WHERE tracker_id = t.id AND report_time <= $3),
                    (SELECT max(last_check_in) FROM devices
                     WHERE tracker_id = t.id AND last_check_in <= $3)) AS last_time,
           (SELECT min(report_time) FROM reports WHERE tracker_id = t.id) AS first_time
    FROM t),
x AS (
    SELECT l.id, l.first_time, l.last_time, coalesce(c.gaps, 0) AS gaps,
           CASE WHEN coalesce(c.gaps, 0) < $6 THEN $7::float8
                ELSE least(greatest(c.q::float8, $8), $9) END AS cadence_s
    FROM l LEFT JOIN c ON c.tracker_id = l.id)
INSERT INTO tracker_cadence AS tc
    (tracker_id, cadence_s, gaps, first_report_time, last_report_time, silent_time, update_time)
SELECT id, cadence_s, gaps, first_time, last_time,
       last_time + make_interval(secs => $10 * cadence_s), $3
FROM x ORDER BY id
ON CONFLICT (tracker_id) DO UPDATE SET
    cadence_s = excluded.cadence_s, gaps = excluded.gaps,
    first_report_time = excluded.first_report_time, last_report_time = excluded.last_report_time,
    silent_time = excluded.silent_time, update_time = excluded.update_time
RETURNING tracker_id
"""

_HEALTH = """
SELECT t.id, t.client_id, t.production_run_id, p.brand_id, p.start_time, p.end_time,
       c.cadence_s, coalesce(c.gaps, 0) AS gaps,
       (SELECT min(report_time) FROM reports WHERE tracker_id = t.id) AS first_time,
       greatest((SELECT max(report_time) FROM reports WHERE tracker_id = t.id),
                (SELECT max(last_check_in) FROM devices WHERE tracker_id = t.id)) AS last_time
FROM trackers t JOIN production_runs p ON p.id = t.production_run_id
LEFT JOIN tracker_cadence c ON c.tracker_id = t.id
WHERE t.id = $1
"""


class PostgresCadenceRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def refresh(
        self, after: uuid.UUID | None, limit: int, rule: SilenceRule, now: datetime
    ) -> uuid.UUID | None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    _REFRESH,
                    after,
                    limit,
                    now,
                    now - rule.history,
                    rule.min_cadence.total_seconds(),
                    rule.min_gaps,
                    rule.default_cadence.total_seconds(),
                    rule.min_cadence.total_seconds(),
                    rule.max_cadence.total_seconds(),
                    rule.factor,
                    CADENCE_QUANTILE,
                )
        if len(rows) < limit:
            return None
        last: uuid.UUID = max(r["tracker_id"] for r in rows)
        return last

    async def health(
        self, tracker_id: uuid.UUID, rule: SilenceRule, now: datetime
    ) -> TrackerHealth:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                r = await conn.fetchrow(_HEALTH, tracker_id)
        if r is None:
            raise NotFound("tracker", str(tracker_id))
        cadence = (
            timedelta(seconds=r["cadence_s"])
            if r["cadence_s"] is not None
            else rule.default_cadence
        )
        state, since = health_state(
            now=now,
            run_start=r["start_time"],
            run_end=r["end_time"],
            last_report_time=r["last_time"],
            cadence=cadence,
            rule=rule,
        )
        return TrackerHealth(
            tracker_id=r["id"],
            client_id=r["client_id"],
            production_run_id=r["production_run_id"],
            brand_id=r["brand_id"],
            state=state,
            expected_cadence=cadence,
            learned_from_gaps=r["gaps"],
            first_report_time=r["first_time"],
            last_report_time=r["last_time"],
            silent_since=since,
        )

    async def silent(
        self, filter: SilentFilter, page: PageRequest, now: datetime
    ) -> Page[TrackerHealth]:
        where = [
            "c.silent_time <= $1",
            "p.start_time <= $1",
            "$1 < p.end_time",
            "NOT EXISTS (SELECT 1 FROM reports r WHERE r.tracker_id = c.tracker_id"
            " AND r.report_time > c.last_report_time)",
            # a device carrying the tracker checked in since (issue 18): alive
            "NOT EXISTS (SELECT 1 FROM devices d WHERE d.tracker_id = c.tracker_id"
            " AND d.last_check_in > c.last_report_time)",
        ]
        args: list[object] = [now]

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if filter.client_ids is not None:
            where.append(f"t.client_id = ANY({arg(list(filter.client_ids))}::uuid[])")
        if filter.client_id is not None:
            where.append(f"t.client_id = {arg(filter.client_id)}")
        if filter.brand_id is not None:
            where.append(f"p.brand_id = {arg(filter.brand_id)}")
        if filter.production_run_id is not None:
            where.append(f"t.production_run_id = {arg(filter.production_run_id)}")
        if page.after is not None:
            t, i = cursor_parts(page.after, 2)
            where.append(
                f"(c.silent_time, c.tracker_id) > ({arg(cursor_time(t))}, {arg(cursor_id(i))})"
            )
        sql = (
            "SELECT c.tracker_id, t.client_id, t.production_run_id, p.brand_id, c.cadence_s,"
            " c.gaps, c.first_report_time, c.last_report_time, c.silent_time"
            " FROM tracker_cadence c JOIN trackers t ON t.id = c.tracker_id"
            " JOIN production_runs p ON p.id = t.production_run_id"
            f" WHERE {' AND '.join(where)} ORDER BY c.silent_time, c.tracker_id"
            f" LIMIT {arg(page.size + 1)}"
        )
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(sql, *args)
        out = [
            TrackerHealth(
                tracker_id=r["tracker_id"],
                client_id=r["client_id"],
                production_run_id=r["production_run_id"],
                brand_id=r["brand_id"],
                state=HealthState.SILENT,
                expected_cadence=timedelta(seconds=r["cadence_s"]),
                learned_from_gaps=r["gaps"],
                first_report_time=r["first_report_time"],
                last_report_time=r["last_report_time"],
                silent_since=r["silent_time"],
            )
            for r in rows[: page.size]
        ]
        after = None
        if len(rows) > page.size:
            last = out[-1]
            assert last.silent_since is not None
            after = f"{last.silent_since.isoformat()}|{last.tracker_id}"
        return Page(out, after)
