"""Fleet statistics in two grouped scans: the trackers with their status, silence and last
fetch (one pass over ``trackers`` with hash joins), and the reports stored in the last hour
(through the ``fetch_time`` index). Silence is as of the worker's last cadence pass (a
tracker that reported since counts as silent until the next pass; ListSilentTrackers
checks each one live, which 250,000 index probes would make slow here)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.fleet import RECENT, FleetGroup, GroupBy

_KEY = {
    GroupBy.CLIENT: "t.client_id",
    GroupBy.BRAND: "p.brand_id",
    GroupBy.PRODUCTION_RUN: "t.production_run_id",
}

_TRACKERS = """
SELECT {key}::text AS key, count(*) AS trackers,
       count(*) FILTER (WHERE s.status = 'IN_STORAGE') AS in_storage,
       count(*) FILTER (WHERE s.status = 'IN_TRANSIT') AS in_transit,
       count(*) FILTER (WHERE s.status = 'DELIVERED') AS delivered,
       count(*) FILTER (WHERE s.status IS NULL) AS no_status,
       count(*) FILTER (WHERE c.silent_time <= $1 AND p.start_time <= $1 AND $1 < p.end_time)
           AS silent,
       count(*) FILTER (WHERE f.last_attempt_time >= $2) AS fetched
FROM trackers t
JOIN production_runs p ON p.id = t.production_run_id
LEFT JOIN tracker_status s ON s.tracker_id = t.id
LEFT JOIN tracker_cadence c ON c.tracker_id = t.id
LEFT JOIN fetch_state f ON f.tracker_id = t.id
WHERE $3::uuid[] IS NULL OR t.client_id = ANY($3::uuid[])
GROUP BY 1
"""

_REPORTS = """
SELECT {key}::text AS key, count(*) AS reports
FROM reports r JOIN trackers t ON t.id = r.tracker_id
JOIN production_runs p ON p.id = t.production_run_id
WHERE r.fetch_time >= $1 AND ($2::uuid[] IS NULL OR t.client_id = ANY($2::uuid[]))
GROUP BY 1
"""


class PostgresFleetStatistics:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def statistics(
        self, client_ids: frozenset[uuid.UUID] | None, group_by: GroupBy, now: datetime
    ) -> list[FleetGroup]:
        key = _KEY[group_by]
        clients = list(client_ids) if client_ids is not None else None
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(_TRACKERS.format(key=key), now, now - RECENT, clients)
                counts = await conn.fetch(_REPORTS.format(key=key), now - RECENT, clients)
        reports = {r["key"]: r["reports"] for r in counts}
        return sorted(
            (
                FleetGroup(
                    key=r["key"],
                    trackers=r["trackers"],
                    in_storage=r["in_storage"],
                    in_transit=r["in_transit"],
                    delivered=r["delivered"],
                    no_status=r["no_status"],
                    silent=r["silent"],
                    fetched_last_hour=r["fetched"],
                    reports_last_hour=reports.get(r["key"], 0),
                )
                for r in rows
            ),
            key=lambda g: g.key,
        )
