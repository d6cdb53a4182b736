"""Processing in PostgreSQL: the queue of trackers with new reports (filled by a trigger on
``reports``), and the batch transaction of a worker: geocoded cities, hourly/daily roll-ups,
geofence classification (PostGIS, set-based) and status history."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Self

import asyncpg

from adapters.postgres.plans import execute_by_probes
from adapters.postgres.pool import unavailable_on_connection_error
from adapters.postgres.status_columns import (
    TrackerRules,
    reading_columns,
    reading_columns_after,
)
from adapters.postgres.status_state import belief_texts, save_columns, state_columns
from adapters.postgres.uow import PostgresUnitOfWork
from adapters.tracing import link_queued
from domain.errors import InvalidArgument
from domain.evidence import ELSEWHERE, Belief
from domain.model import GeoPoint, LocationKind
from domain.pagination import Page, PageRequest
from domain.ports.processing import Claim, Evaluation, StatusInput
from domain.processing import ProcessingBacklog, QuarantinedTracker
from domain.status import (
    ReportKey,
    RuleKind,
    RuleState,
    StatusChange,
    StatusRule,
    TrackerStatus,
)
from domain.status_batch import ReadingColumns, ResultColumns, StateColumns, belief_slots

_NEG_INF = datetime.min.replace(tzinfo=UTC)
_MIN_E7 = -(2**31)


def _status(value: str | None) -> TrackerStatus | None:
    return TrackerStatus(value) if value else None


def _name(value: TrackerStatus | None) -> str | None:
    return value.value if value else None


def _key_arrays(
    keys: Sequence[ReportKey | None],
) -> tuple[list[datetime], list[int], list[int]]:
    return (
        [k.report_time if k else _NEG_INF for k in keys],
        [k.latitude_e7 if k else _MIN_E7 for k in keys],
        [k.longitude_e7 if k else _MIN_E7 for k in keys],
    )


def _belief(ids: list[uuid.UUID | None] | None, kinds: list[str | None], ps: list[float]) -> Belief:
    if not ids:
        return ()
    return tuple(
        (h, LocationKind(k) if k else None, p) for h, k, p in zip(ids, kinds, ps, strict=True)
    )


def _belief_of(r: asyncpg.Record) -> Belief:
    """A checkpoint's belief: the arrays where it is there (wide, or written before
    migration 0035), else the fixed columns."""
    if r["belief_ids"] is not None:
        return _belief(r["belief_ids"], r["belief_kinds"], r["belief_probabilities"])
    if r["belief_transit"] is None:
        return ()
    out: list[tuple[uuid.UUID | None, LocationKind | None, float]] = [
        (None, None, r["belief_transit"])
    ]
    if r["belief_elsewhere"] is not None:
        out.append((ELSEWHERE, None, r["belief_elsewhere"]))
    if r["belief_fence_id"] is not None:
        out.append(
            (r["belief_fence_id"], LocationKind(r["belief_fence_kind"]), r["belief_fence_p"])
        )
    return tuple(out)


_NO_SLOTS = (None, None, None, None, None)


def _belief_slots(belief: Belief) -> tuple[object, ...] | None:
    """The belief as the fixed columns of ``tracker_status`` (transit, ELSEWHERE, one
    fence); None if it is wider (then: the arrays)."""
    if not belief:
        return _NO_SLOTS
    slots = belief_slots(belief)
    if slots is None:
        return None
    transit, elsewhere, fence = slots
    if fence is None:
        return (transit, elsewhere, None, None, None)
    return (transit, elsewhere, fence[0], fence[1].value, fence[2])


_RULE_FIELDS = (
    "min_consecutive_reports", "min_dwell_s", "require_accuracy_within_radius",
    "min_confidence", "kind", "min_probability", "outlier_share",
)  # fmt: skip


# Inbox rows moved into the queue per fold (one statement; the rest waits for the next claim).
FOLD_LIMIT = 100_000

# Lock order of queue rows: every statement that may wait for one takes them in tracker_id
# order, in one statement (see migration 0007). Ingestion only appends to the inbox.
_FOLD_SQL = """
WITH moved AS (
        DELETE FROM processing_inbox WHERE id IN (
            SELECT id FROM processing_inbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING tracker_id, since, hours, arrive_time, traceparent),
    per_tracker AS (
        SELECT m.tracker_id, min(m.since) AS since, min(m.arrive_time) AS arrive_time,
               coalesce(array_agg(DISTINCT h ORDER BY h) FILTER (WHERE h IS NOT NULL), '{}')
                   AS hours,
               coalesce(array_agg(DISTINCT m.traceparent)
                            FILTER (WHERE m.traceparent IS NOT NULL), '{}') AS traceparents
        FROM moved m LEFT JOIN LATERAL unnest(m.hours) AS h ON true
        GROUP BY m.tracker_id)
INSERT INTO processing_queue AS q (tracker_id, since, hours, enqueue_time, traceparents)
SELECT tracker_id, since, hours, arrive_time, traceparents[1:8] FROM per_tracker
ORDER BY tracker_id
ON CONFLICT (tracker_id) DO UPDATE SET
    since = least(q.since, excluded.since),
    hours = ARRAY(SELECT DISTINCT h FROM unnest(q.hours || excluded.hours) AS h ORDER BY h),
    version = q.version + 1,
    traceparents = (excluded.traceparents || q.traceparents)[1:8],
    newer_time = CASE WHEN q.claim_token IS NULL THEN q.newer_time
                      ELSE least(q.newer_time, excluded.enqueue_time) END
"""

# The claim, one statement: the rows to lease first (the InitPlan takes all their row locks,
# SKIP LOCKED, oldest first), then their lease, found by the row versions locked (a TID scan:
# finding them again through the primary key cost a third of the statement at batches of
# 25,000, and joining the subquery made the planner hash it against a scan of the whole
# queue). A row that changed after the statement began is locked as its newest version,
# which this statement cannot see: it is then not leased, as if it had been locked by
# another (it stays queued for the next claim). The batch comes back as one row of arrays,
# which asyncpg decodes at a fraction of the cost of one record per claim, in tracker order
# (the rows' numbers `i`: every later step of the batch, its lock, status step and
# completion, probes the indexes in key order, which touches each index and heap page once
# rather than at random: a fifth of the status step at 250,000 trackers); the hours as (row
# number, hour) pairs, in each row's order (by number, not by tracker id: hashing 25,000
# UUIDs in Python costs more than the decoding).
# A report outside PostgreSQL's finite range (stored before times were validated) must not
# poison its tracker's claim: hours that are not finite are no bucket, and "since" from
# before the year 1 means from the beginning.
_CLAIM_SQL = """
WITH c AS (
    UPDATE processing_queue q
    SET claim_token = $1, claimed_until = clock_timestamp() + make_interval(secs => $3),
        newer_time = NULL
    WHERE q.ctid = ANY (ARRAY(
        SELECT ctid FROM processing_queue
        WHERE (claimed_until IS NULL OR claimed_until < clock_timestamp())
          AND (retry_time IS NULL OR retry_time <= clock_timestamp())
        ORDER BY enqueue_time LIMIT $2
        FOR UPDATE SKIP LOCKED))
    RETURNING q.tracker_id, q.since, q.hours, q.version, q.enqueue_time, q.attempts,
              q.traceparents),
    n AS (SELECT row_number() OVER (ORDER BY c.tracker_id) AS i, c.* FROM c)
SELECT r.*, h.*, t.*
FROM (SELECT coalesce(array_agg(tracker_id ORDER BY i), '{}') AS ids,
             coalesce(array_agg(greatest(since, '0001-01-01T00:00:00Z') ORDER BY i), '{}')
                 AS sinces,
             coalesce(array_agg(version ORDER BY i), '{}') AS versions,
             coalesce(array_agg(enqueue_time ORDER BY i), '{}') AS enqueue_times,
             coalesce(array_agg(attempts ORDER BY i), '{}') AS attempts
      FROM n) r,
     (SELECT coalesce(array_agg(n.i ORDER BY n.i, u.k), '{}') AS hour_rows,
             coalesce(array_agg(u.h ORDER BY n.i, u.k), '{}') AS hours
      FROM n, unnest(n.hours) WITH ORDINALITY AS u(h, k) WHERE isfinite(u.h)) h,
     (SELECT coalesce(array_agg(tp), '{}') AS traceparents
      FROM c, unnest(c.traceparents) AS tp) t
"""

# Unprocessed claims back to the queue (their oldest report is as old as before).
_RELEASE_SQL = """
UPDATE processing_queue q
SET claim_token = NULL, claimed_until = NULL, newer_time = NULL
FROM (SELECT tracker_id FROM processing_queue
      WHERE claim_token = $1
      ORDER BY tracker_id FOR UPDATE) l
WHERE q.tracker_id = l.tracker_id
"""


class PostgresProcessingQueue:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fold(self, limit: int = FOLD_LIMIT) -> int:
        """Move what ingestion appended to the inbox into the queue; returns inbox rows moved."""
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                status = await conn.execute(_FOLD_SQL, limit)
        return int(status.rsplit(" ", 1)[1])

    async def claim(self, token: uuid.UUID, limit: int, lease_s: float) -> list[Claim]:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                await conn.execute(_FOLD_SQL, FOLD_LIMIT)
                r = await conn.fetchrow(_CLAIM_SQL, token, limit, lease_s)
        assert r is not None
        # the batch span (the worker's) links to the traces that stored these reports
        link_queued(r["traceparents"])
        ids = r["ids"]
        # (a tuple per claim, grown in place: a few hours each, and fewer objects for the
        # garbage collector to walk than a list per claim)
        hours: list[tuple[datetime, ...]] = [()] * len(ids)
        for i, h in zip(r["hour_rows"], r["hours"], strict=True):
            hours[i - 1] += (h,)
        return list(
            map(
                Claim,
                ids,
                r["sinces"],
                hours,
                r["versions"],
                r["enqueue_times"],
                r["attempts"],
            )
        )

    async def release(self, token: uuid.UUID) -> None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                await conn.execute(_RELEASE_SQL, token)

    async def quarantine(
        self, token: uuid.UUID, tracker_id: uuid.UUID, reason: str, delay_s: float
    ) -> None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                await conn.execute(
                    """UPDATE processing_queue
                       SET claim_token = NULL, claimed_until = NULL, newer_time = NULL,
                           attempts = attempts + 1, last_error = $3,
                           first_failure_time = coalesce(first_failure_time, clock_timestamp()),
                           last_failure_time = clock_timestamp(),
                           retry_time = clock_timestamp() + make_interval(secs => $4)
                       WHERE tracker_id = $1 AND claim_token = $2""",
                    tracker_id,
                    token,
                    reason,
                    delay_s,
                )

    async def backlog(self) -> ProcessingBacklog:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    """SELECT (SELECT count(*) FROM processing_queue WHERE attempts = 0)
                                  AS waiting,
                              (SELECT count(*) FROM processing_queue WHERE attempts > 0)
                                  AS quarantined,
                              (SELECT count(DISTINCT tracker_id) FROM processing_inbox i
                               WHERE NOT EXISTS (SELECT 1 FROM processing_queue q
                                                 WHERE q.tracker_id = i.tracker_id))
                                  AS arriving,
                              least((SELECT min(enqueue_time) FROM processing_queue
                                     WHERE attempts = 0),
                                    (SELECT min(i.arrive_time) FROM processing_inbox i
                                     WHERE NOT EXISTS (
                                         SELECT 1 FROM processing_queue q
                                         WHERE q.tracker_id = i.tracker_id
                                           AND q.attempts > 0))) AS oldest"""
                )
        assert row is not None
        return ProcessingBacklog(
            int(row["waiting"]) + int(row["arriving"]), row["oldest"], int(row["quarantined"])
        )

    async def quarantined(self, page: PageRequest) -> Page[QuarantinedTracker]:
        after = None
        if page.after is not None:
            try:
                after = uuid.UUID(page.after)
            except ValueError:
                raise InvalidArgument("page_token", "malformed page token") from None
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    """SELECT q.tracker_id, t.client_id, q.attempts, q.last_error,
                              q.first_failure_time, q.last_failure_time, q.retry_time,
                              q.enqueue_time
                       FROM processing_queue q LEFT JOIN trackers t ON t.id = q.tracker_id
                       WHERE q.attempts > 0 AND ($1::uuid IS NULL OR q.tracker_id > $1)
                       ORDER BY q.tracker_id LIMIT $2""",
                    after,
                    page.size + 1,
                )
        items = [
            QuarantinedTracker(
                r["tracker_id"],
                r["client_id"],
                r["attempts"],
                r["last_error"] or "",
                r["first_failure_time"],
                r["last_failure_time"],
                r["retry_time"],
                r["enqueue_time"],
            )
            for r in rows[: page.size]
        ]
        more = len(rows) > page.size
        return Page(items, str(items[-1].tracker_id) if more else None)

    async def retry_now(self, tracker_id: uuid.UUID) -> bool:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                status = await conn.execute(
                    """UPDATE processing_queue SET retry_time = clock_timestamp()
                       WHERE tracker_id = $1 AND attempts > 0""",
                    tracker_id,
                )
        return status != "UPDATE 0"


# The worker's other batch statements, each tracker's (or bucket's) rows found by its key
# whatever the batch's share of the table (a LATERAL subquery with OFFSET 0, or
# `plans.execute_by_probes`): joined, the planner hashed the whole of `reports` once a batch
# was a sizeable share of it (seen at 25,000 claims against 1,000,000 reports), a cost that
# grows with the table rather than the batch.
_UNGEOCODED_SQL = """
SELECT c.tracker_id, r.report_time, r.latitude_e7, r.longitude_e7
FROM unnest($1::uuid[], $2::timestamptz[]) AS c(tracker_id, since)
CROSS JOIN LATERAL (
    SELECT r.report_time, r.latitude_e7, r.longitude_e7 FROM reports r
    WHERE r.tracker_id = c.tracker_id AND r.report_time >= c.since
      AND r.nearest_city_id IS NULL
    OFFSET 0) r
"""
_REP = "ORDER BY r.horizontal_accuracy_m, r.report_time DESC, r.latitude_e7, r.longitude_e7"
# a roll-up's buckets to write again, by key
_BUCKETS_DELETE_SQL = """
DELETE FROM {table} b
USING unnest($1::uuid[], $2::timestamptz[]) AS t(tracker_id, bucket)
WHERE b.tracker_id = t.tracker_id AND b.bucket_start = t.bucket
"""
_HOURLY_DELETE_SQL = _BUCKETS_DELETE_SQL.format(table="location_hourly")
_DAILY_DELETE_SQL = _BUCKETS_DELETE_SQL.format(table="location_daily")
_HOURLY_SQL = f"""
INSERT INTO location_hourly
SELECT t.tracker_id, t.bucket, r.confidence, count(*), min(r.report_time),
       max(r.report_time), min(r.horizontal_accuracy_m),
       (array_agg(r.report_time {_REP}))[1], (array_agg(r.latitude_e7 {_REP}))[1],
       (array_agg(r.longitude_e7 {_REP}))[1], (array_agg(r.nearest_city_id {_REP}))[1]
FROM unnest($1::uuid[], $2::timestamptz[]) AS t(tracker_id, bucket)
CROSS JOIN LATERAL (
    SELECT r.report_time, r.latitude_e7, r.longitude_e7, r.horizontal_accuracy_m,
           r.confidence, r.nearest_city_id
    FROM reports r
    WHERE r.tracker_id = t.tracker_id AND r.report_time >= t.bucket
      AND r.report_time < t.bucket + interval '1 hour'
    OFFSET 0) r
GROUP BY t.tracker_id, t.bucket, r.confidence
"""
_BEST = "ORDER BY h.best_accuracy_m, h.rep_report_time DESC, h.rep_latitude_e7, h.rep_longitude_e7"
_DAILY_SQL = f"""
INSERT INTO location_daily
SELECT t.tracker_id, t.bucket, h.confidence, sum(h.report_count),
       min(h.first_report_time), max(h.last_report_time), min(h.best_accuracy_m),
       (array_agg(h.rep_report_time {_BEST}))[1],
       (array_agg(h.rep_latitude_e7 {_BEST}))[1],
       (array_agg(h.rep_longitude_e7 {_BEST}))[1],
       (array_agg(h.rep_city_id {_BEST}))[1]
FROM unnest($1::uuid[], $2::timestamptz[]) AS t(tracker_id, bucket)
CROSS JOIN LATERAL (
    SELECT h.confidence, h.report_count, h.first_report_time, h.last_report_time,
           h.best_accuracy_m, h.rep_report_time, h.rep_latitude_e7, h.rep_longitude_e7,
           h.rep_city_id
    FROM location_hourly h
    WHERE h.tracker_id = t.tracker_id
      AND h.bucket_start >= t.bucket AND h.bucket_start < t.bucket + interval '1 day'
    OFFSET 0) h
GROUP BY t.tracker_id, t.bucket, h.confidence
"""


class PostgresProcessingUnitOfWork(PostgresUnitOfWork):
    """A unit of work with the worker's batch operations on its connection."""

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._runs: dict[uuid.UUID, uuid.UUID] = {}  # locked tracker -> its production run
        # Batch statements are planned as big, so PostgreSQL would JIT-compile them: that
        # costs more than it saves here (~0.9 s of a 1 s query). Sorts stay in memory.
        with unavailable_on_connection_error():
            await self._c.execute("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")
        return self

    @property
    def _c(self) -> asyncpg.Connection:
        assert self._conn is not None, "outside the unit of work"
        return self._conn

    async def lock(self, token: uuid.UUID, claims: Sequence[Claim]) -> list[Claim]:
        ids = [c.tracker_id for c in claims]
        # Row locks, not advisory ones: they scale to any batch size. NO KEY UPDATE excludes
        # another worker (and a delete of the tracker) but not report ingestion, which never
        # locks trackers.
        locked = await self._c.fetch(
            # (each claim's queue row and tracker by its key: not "= ANY", which the planner
            # may run as a scan comparing each row with the whole array, and LATERAL
            # subqueries, not joins, which were planned as scans of the whole queue or of
            # all trackers, costs growing with the fleet rather than the batch. SKIP
            # LOCKED never waits, so the order the rows are locked in does not matter.)
            """SELECT t.id, t.production_run_id FROM unnest($1::uuid[]) AS c(id)
               CROSS JOIN LATERAL (
                   SELECT 1 FROM processing_queue q
                   WHERE q.tracker_id = c.id AND q.claim_token = $2 OFFSET 0) q
               CROSS JOIN LATERAL (
                   SELECT t.id, t.production_run_id FROM trackers t WHERE t.id = c.id
                   FOR NO KEY UPDATE SKIP LOCKED) t""",
            ids,
            token,
        )
        # the locked trackers' runs cannot change until the end of the transaction: the
        # status step takes them from here instead of reading every tracker again
        self._runs.update((r["id"], r["production_run_id"]) for r in locked)
        return [c for c in claims if c.tracker_id in self._runs]

    async def ungeocoded(
        self, claims: Sequence[Claim]
    ) -> list[tuple[uuid.UUID, ReportKey, GeoPoint]]:
        rows = await self._c.fetch(
            _UNGEOCODED_SQL, [c.tracker_id for c in claims], [c.since for c in claims]
        )
        return [
            (
                r["tracker_id"],
                ReportKey(r["report_time"], r["latitude_e7"], r["longitude_e7"]),
                GeoPoint(r["latitude_e7"] / 1e7, r["longitude_e7"] / 1e7),
            )
            for r in rows
        ]

    async def set_nearest_cities(self, rows: Sequence[tuple[uuid.UUID, ReportKey, int]]) -> None:
        if not rows:
            return
        await execute_by_probes(
            self._c,
            """UPDATE reports r SET nearest_city_id = v.city
               FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[], $5::int[])
                    AS v(tracker_id, report_time, lat, lon, city)
               WHERE r.tracker_id = v.tracker_id AND r.report_time = v.report_time
                 AND r.latitude_e7 = v.lat AND r.longitude_e7 = v.lon""",
            [t for t, _, _ in rows],
            [k.report_time for _, k, _ in rows],
            [k.latitude_e7 for _, k, _ in rows],
            [k.longitude_e7 for _, k, _ in rows],
            [c for _, _, c in rows],
        )

    async def reroll(self, claims: Sequence[Claim]) -> int:
        hours = [(c.tracker_id, h) for c in claims for h in c.hours]
        if not hours:
            return 0
        ids, starts = [t for t, _ in hours], [h for _, h in hours]
        await execute_by_probes(self._c, _HOURLY_DELETE_SQL, ids, starts)
        await self._c.execute(_HOURLY_SQL, ids, starts)
        days = sorted({(t, h.astimezone(UTC).replace(hour=0)) for t, h in hours})
        day_ids, day_starts = [t for t, _ in days], [d for _, d in days]
        await execute_by_probes(self._c, _DAILY_DELETE_SQL, day_ids, day_starts)
        await self._c.execute(_DAILY_SQL, day_ids, day_starts)
        return len(hours)

    async def status_inputs(self, claims: Sequence[Claim]) -> list[StatusInput]:
        rows = await self._c.fetch(
            """SELECT c.tracker_id, sr.min_consecutive_reports, sr.min_dwell_s,
                      sr.require_accuracy_within_radius, sr.min_confidence,
                      sr.kind, sr.min_probability, sr.outlier_share,
                      s.status, s.status_since, s.location_id, s.last_report_time,
                      s.last_latitude_e7, s.last_longitude_e7, s.pending_status,
                      s.pending_count, s.pending_since, s.pending_location_id,
                      s.probability, s.evidence_since, s.belief_ids, s.belief_kinds,
                      s.belief_probabilities, s.belief_transit, s.belief_elsewhere,
                      s.belief_fence_id, s.belief_fence_kind, s.belief_fence_p,
                      s.belief_time, s.onset_delivered,
                      s.onset_storage, s.onset_transit,
                      h.report_time AS h_time, h.latitude_e7 AS h_lat, h.longitude_e7 AS h_lon,
                      h.status AS h_status, h.previous_status AS h_previous,
                      h.location_id AS h_location, h.horizontal_accuracy_m AS h_accuracy,
                      h.confidence AS h_confidence, h.nearest_city_id AS h_city,
                      h.probability AS h_probability, h.evidence_since AS h_evidence_since
               FROM unnest($1::uuid[], $2::timestamptz[]) AS c(tracker_id, since)
               JOIN trackers t ON t.id = c.tracker_id
               LEFT JOIN status_rules sr ON sr.production_run_id = t.production_run_id
               LEFT JOIN tracker_status s ON s.tracker_id = c.tracker_id
               LEFT JOIN LATERAL (
                   SELECT * FROM status_history h
                   WHERE h.tracker_id = c.tracker_id AND h.report_time < c.since
                     -- needed only when the new reports are not all after the checkpoint
                     -- (domain.status.resume_point)
                     AND (s.last_report_time IS NULL OR s.last_report_time >= c.since)
                   ORDER BY h.report_time DESC, h.latitude_e7 DESC, h.longitude_e7 DESC
                   LIMIT 1) h ON true""",
            [c.tracker_id for c in claims],
            [c.since for c in claims],
        )
        out = []
        rules: dict[tuple[object, ...], StatusRule] = {}  # one object per distinct rule
        for r in rows:
            fields = tuple(r[k] for k in _RULE_FIELDS)
            rule = rules.get(fields)
            if rule is None:
                rule = rules[fields] = (
                    StatusRule(*fields[:4], RuleKind(fields[4]), *fields[5:])  # type: ignore[arg-type]
                    if fields[0] is not None
                    else StatusRule.default()
                )
            checkpoint = None
            if r["last_report_time"] is not None:
                checkpoint = (
                    ReportKey(r["last_report_time"], r["last_latitude_e7"], r["last_longitude_e7"]),
                    RuleState(
                        status=_status(r["status"]),
                        status_since=r["status_since"],
                        location_id=r["location_id"],
                        pending=_status(r["pending_status"]),
                        pending_count=r["pending_count"],
                        pending_since=r["pending_since"],
                        pending_location_id=r["pending_location_id"],
                        probability=r["probability"],
                        evidence_since=r["evidence_since"],
                        belief=_belief_of(r),
                        belief_time=r["belief_time"],
                        onsets=(r["onset_delivered"], r["onset_storage"], r["onset_transit"]),
                    ),
                )
            anchor = None
            if r["h_time"] is not None:
                anchor = StatusChange(
                    key=ReportKey(r["h_time"], r["h_lat"], r["h_lon"]),
                    status=TrackerStatus(r["h_status"]),
                    previous=_status(r["h_previous"]),
                    location_id=r["h_location"],
                    horizontal_accuracy_m=r["h_accuracy"],
                    confidence=r["h_confidence"],
                    nearest_city_id=r["h_city"],
                    probability=r["h_probability"],
                    evidence_since=r["h_evidence_since"],
                )
            out.append(StatusInput(r["tracker_id"], rule, checkpoint, anchor))
        return out

    async def readings(self, starts: Mapping[uuid.UUID, ReportKey | None]) -> ReadingColumns:
        return await reading_columns(self._c, starts)

    async def status_state(self, claims: Sequence[Claim]) -> StateColumns:
        # (the runs of locked trackers cannot change; any other tracker's is read)
        return await state_columns(self._c, claims, self._runs)

    async def readings_after(self, state: StateColumns) -> ReadingColumns:
        rules = None
        if state.run is not None and (state.run >= 0).all():
            rules = TrackerRules(
                state.run, state.run_ids, state.evidence, state.accuracy_rule, state.min_confidence
            )
        return await reading_columns_after(
            self._c, state.trackers, state.after_us, state.after_lat, state.after_lon, rules
        )

    async def save_results(
        self, state: StateColumns, readings: ReadingColumns, result: ResultColumns
    ) -> None:
        await save_columns(self._c, state, readings, result)

    async def save_statuses(self, evaluations: Sequence[Evaluation]) -> None:
        if not evaluations:
            return
        replaced = [e for e in evaluations if e.resume.replaces_history]
        times, lats, lons = _key_arrays([e.resume.after for e in replaced])
        await self._c.execute(
            """DELETE FROM status_history h
               USING unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[])
                     AS s(tracker_id, t, lat, lon)
               WHERE h.tracker_id = s.tracker_id AND h.report_time >= s.t
                 AND (h.report_time, h.latitude_e7, h.longitude_e7) > (s.t, s.lat, s.lon)""",
            [e.tracker_id for e in replaced],
            times,
            lats,
            lons,
        )
        changes = [(e.tracker_id, c) for e in evaluations for c in e.changes]
        if changes:
            await self._c.execute(
                """INSERT INTO status_history (tracker_id, report_time, latitude_e7,
                       longitude_e7, status, previous_status, location_id,
                       horizontal_accuracy_m, confidence, nearest_city_id, probability,
                       evidence_since)
                   SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[],
                       $5::text[], $6::text[], $7::uuid[], $8::int[], $9::smallint[],
                       $10::int[], $11::float8[], $12::timestamptz[])""",
                [t for t, _ in changes],
                [c.key.report_time for _, c in changes],
                [c.key.latitude_e7 for _, c in changes],
                [c.key.longitude_e7 for _, c in changes],
                [c.status.value for _, c in changes],
                [_name(c.previous) for _, c in changes],
                [c.location_id for _, c in changes],
                [c.horizontal_accuracy_m for _, c in changes],
                [c.confidence for _, c in changes],
                [c.nearest_city_id for _, c in changes],
                [c.probability for _, c in changes],
                [c.evidence_since for _, c in changes],
            )
        done = [e for e in evaluations if e.last is not None]
        if not done:
            return
        cols = [
            "tracker_id", "status", "status_since", "location_id", "last_report_time",
            "last_latitude_e7", "last_longitude_e7", "last_accuracy_m", "last_city_id",
            "pending_status", "pending_count", "pending_since", "pending_location_id",
            "probability", "evidence_since", "belief_time", "onset_delivered", "onset_storage",
            "onset_transit",
        ]  # fmt: skip
        types = [
            "uuid", "text", "timestamptz", "uuid", "timestamptz", "int", "int", "int", "int",
            "text", "int", "timestamptz", "uuid", "float8", "timestamptz", "timestamptz",
            "timestamptz", "timestamptz", "timestamptz",
        ]  # fmt: skip
        values: list[list[object]] = [[] for _ in cols]
        for e in done:
            last = e.last
            assert last is not None
            s = e.state
            row = (
                e.tracker_id, _name(s.status), s.status_since, s.location_id,
                last.key.report_time, last.key.latitude_e7, last.key.longitude_e7,
                last.horizontal_accuracy_m, last.nearest_city_id, _name(s.pending),
                s.pending_count, s.pending_since, s.pending_location_id,
                s.probability, s.evidence_since, s.belief_time, *s.onsets,
            )  # fmt: skip
            for column, value in zip(values, row, strict=True):
                column.append(value)
        # The evidence rule's belief: in the fixed columns where it fits (transit,
        # ELSEWHERE, one fence), else three arrays, each sent as the text of an array
        # (floats as repr: PostgreSQL reads them back to the same bits); so that one
        # statement writes the whole row.
        slots: list[list[object]] = [[] for _ in _NO_SLOTS]
        beliefs: list[list[str | None]] = [[], [], []]
        for e in done:
            b = e.state.belief
            fixed = _belief_slots(b)
            for column, value in zip(slots, fixed or _NO_SLOTS, strict=True):
                column.append(value)
            texts = (None,) * 3 if fixed is not None else belief_texts(b)
            for column, text in zip(beliefs, texts, strict=True):
                column.append(text)
        slot_cols = [
            "belief_transit", "belief_elsewhere", "belief_fence_id", "belief_fence_kind",
            "belief_fence_p",
        ]  # fmt: skip
        slot_types = ["float8", "float8", "uuid", "text", "float8"]
        all_types = types + slot_types + ["text"] * 3
        params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(all_types))
        names = ", ".join(f"u{i}" for i in range(len(all_types)))
        n = len(types) + len(slot_types)
        select = ", ".join(
            [f"u{i}" for i in range(n)]
            + [f"u{n}::uuid[]", f"u{n + 1}::text[]", f"u{n + 2}::float8[]"]
        )
        belief_cols = [*slot_cols, "belief_ids", "belief_kinds", "belief_probabilities"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:] + belief_cols)
        await self._c.execute(
            f"""INSERT INTO tracker_status ({", ".join(cols + belief_cols)})
                SELECT {select} FROM unnest({params}) AS u({names})
                ON CONFLICT (tracker_id) DO UPDATE SET {updates}, update_time = now()""",
            *values,
            *slots,
            *beliefs,
        )

    async def complete(
        self, token: uuid.UUID, done: Sequence[Claim], claimed: Sequence[Claim]
    ) -> None:
        version = {c.tracker_id: c.version for c in done}
        healed = {c.tracker_id for c in done if c.attempts}
        ids = [c.tracker_id for c in claimed]
        await execute_by_probes(
            self._c,
            _COMPLETE_SQL,
            ids,
            token,
            [version.get(t) for t in ids],
            [t in healed for t in ids],
        )


# Complete a batch in one statement. The claimed rows first, in tracker order (the global
# lock order: `locked` is materialized, and the delete and the update below touch only rows
# it has locked), each found by its key (a LATERAL probe: joined, the planner took the
# statistics of a mostly-NULL claim_token to mean one claimed row, scanned the queue for it
# and compared each of the 10,000 claimed rows it found with every id: 12 s; the delete and
# the update by probes too, `plans.execute_by_probes`), then nothing waits: dequeue what is
# done (unless newer reports came) and the claims of deleted trackers, release the rest. A
# row whose new reports were folded in after this statement began is locked as its newest
# version (`version` there is the new one); the delete and the update then find it updated
# and act on that newest version (READ COMMITTED re-check), so it stays queued. Whether the
# tracker still exists is asked of unfinished rows only (done rows leave either way).
# Processed fine but kept for newer reports: it leaves quarantine all the same, and its age
# is now theirs; not done: as old as it was.
_COMPLETE_SQL = """
WITH locked AS MATERIALIZED (
        SELECT q.tracker_id, q.version = c.done_version AS finished, c.done_version, c.heal
        FROM (SELECT * FROM unnest($1::uuid[], $3::bigint[], $4::bool[])
                  AS u(id, done_version, heal)
              ORDER BY id) c
        CROSS JOIN LATERAL (
            SELECT q.tracker_id, q.version FROM processing_queue q
            WHERE q.tracker_id = c.id AND q.claim_token = $2
            FOR UPDATE) q),
    gone AS (
        DELETE FROM processing_queue q USING locked l
        WHERE q.tracker_id = l.tracker_id
          AND (l.finished OR NOT EXISTS (SELECT 1 FROM trackers t WHERE t.id = l.tracker_id)))
UPDATE processing_queue q
SET claim_token = NULL, claimed_until = NULL, newer_time = NULL,
    enqueue_time = CASE WHEN l.done_version IS NOT NULL
                        THEN coalesce(q.newer_time, q.enqueue_time) ELSE q.enqueue_time END,
    attempts = CASE WHEN l.heal THEN 0 ELSE q.attempts END,
    last_error = CASE WHEN l.heal THEN NULL ELSE q.last_error END,
    first_failure_time = CASE WHEN l.heal THEN NULL ELSE q.first_failure_time END,
    last_failure_time = CASE WHEN l.heal THEN NULL ELSE q.last_failure_time END,
    retry_time = CASE WHEN l.heal THEN NULL ELSE q.retry_time END
FROM locked l
WHERE q.tracker_id = l.tracker_id AND NOT coalesce(l.finished, false)
  AND EXISTS (SELECT 1 FROM trackers t WHERE t.id = l.tracker_id)
"""


class PostgresProcessingUnitOfWorkFactory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def __call__(self) -> PostgresProcessingUnitOfWork:
        return PostgresProcessingUnitOfWork(self._pool)


__all__ = ["PostgresProcessingQueue", "PostgresProcessingUnitOfWorkFactory"]
