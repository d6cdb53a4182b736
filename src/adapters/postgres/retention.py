"""Deleting rows past their retention (``usecases.maintenance.PruneExpired``): one short
transaction per chunk. Rows are picked with ``SKIP LOCKED`` so two collectors pruning at
once neither wait on each other nor delete twice; per-detector tables are walked through
their primary keys (detector, time), never by a scan of the whole table."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.retention import Prunable

_PER_DETECTOR = """
    DELETE FROM {table} WHERE ctid = ANY (ARRAY(
        SELECT x.ctid FROM detectors d CROSS JOIN LATERAL (
            SELECT ctid FROM {table}
            WHERE detector_id = d.id AND {column} < $1
            LIMIT $2 FOR UPDATE SKIP LOCKED
        ) x LIMIT $2))
"""
# Sightings (their stream, ``StreamDetectorEvents``, resumes from a snapshot) and events
# record the newest pruned row's transaction in ``retention_marks`` in the deleting
# transaction: a stream cursor that had not seen it would resume with a gap. Sightings have
# no id (``pruned_id`` 0): their cursors are snapshots only.
_MARK = """
    INSERT INTO retention_marks (kind, pruned_xid, pruned_id, pruned_until)
    SELECT '{kind}', max(xid), {id}, $1 FROM gone HAVING count(*) > 0
    ON CONFLICT (kind) DO UPDATE SET
        pruned_xid = greatest(retention_marks.pruned_xid, excluded.pruned_xid),
        pruned_id = greatest(retention_marks.pruned_id, excluded.pruned_id),
        pruned_until = greatest(retention_marks.pruned_until, excluded.pruned_until)
"""
_SIGHTINGS = (
    "WITH gone AS ("
    + _PER_DETECTOR.format(table="sightings", column="seen_time")
    + " RETURNING xid), mark AS ("
    + _MARK.format(kind=Prunable.SIGHTINGS.value, id="0")
    + ") SELECT count(*) FROM gone"
)
_DELIVERED = """
    DELETE FROM webhook_deliveries WHERE (webhook_id, event_id) IN (
        SELECT webhook_id, event_id FROM webhook_deliveries
        WHERE state = 'DELIVERED' AND deliver_time < $1
        ORDER BY deliver_time LIMIT $2 FOR UPDATE SKIP LOCKED)
"""
_EVENTS = (
    """WITH gone AS (
        DELETE FROM events WHERE id = ANY (ARRAY(
            SELECT id FROM events WHERE create_time < $1
            ORDER BY create_time LIMIT $2 FOR UPDATE SKIP LOCKED))
        RETURNING id, xid
    ), mark AS ("""
    + _MARK.format(kind=Prunable.EVENTS.value, id="max(id)")
    + ") SELECT count(*) FROM gone"
)
# the kinds whose deletion is marked: their statement answers the count itself
_MARKED = {Prunable.SIGHTINGS: _SIGHTINGS, Prunable.EVENTS: _EVENTS}
_SQL = {
    Prunable.DETECTOR_STATUSES: _PER_DETECTOR.format(
        table="detector_statuses", column="report_time"
    ),
    Prunable.DELIVERED_WEBHOOK_DELIVERIES: _DELIVERED,
}


class PostgresRetention:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def prune(self, kind: Prunable, before: datetime, limit: int) -> int:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                if kind in _MARKED:  # events: their deliveries go too (ON DELETE CASCADE)
                    return int(await conn.fetchval(_MARKED[kind], before, limit))
                status: str = await conn.execute(_SQL[kind], before, limit)
        return int(status.rsplit(" ", 1)[1])
