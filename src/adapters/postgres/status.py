"""The read side of processing in PostgreSQL (current status, status and location history),
and the per-run status rules. Every query joins ``trackers`` for the caller's clients."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from adapters.postgres.geocoding import city_of
from adapters.postgres.pool import unavailable_on_connection_error
from domain.errors import NotFound
from domain.geo import NearestCity, distance_m
from domain.history import (
    CurrentStatus,
    Granularity,
    LastReport,
    LocationPoint,
    TrackerStatusChange,
)
from domain.model import GeoPoint
from domain.pagination import (
    Page,
    PageRequest,
    cursor_id,
    cursor_int32,
    cursor_parts,
    cursor_time,
)
from domain.ports.status import HistoryFilter
from domain.status import ReportKey, RuleKind, StatusChange, StatusRule, TrackerStatus

_CITY = """ci.geonameid, ci.name, ci.country_code, ci.admin1_code, ci.population,
           ST_Y(ci.position::geometry) AS latitude, ST_X(ci.position::geometry) AS longitude"""
_MIN_UUID = uuid.UUID(int=0)
_NEG_INF = datetime.min.replace(tzinfo=UTC)


def _point(lat_e7: int, lon_e7: int) -> GeoPoint:
    return GeoPoint(lat_e7 / 1e7, lon_e7 / 1e7)


def _near(r: asyncpg.Record, position: GeoPoint) -> NearestCity | None:
    city = city_of(r)
    return NearestCity(city, distance_m(position, city.position)) if city else None


def _after(page: PageRequest) -> tuple[uuid.UUID, datetime, int, int]:
    """The keyset cursor (tracker, time, latitude, longitude) a page token carries."""
    if page.after is None:
        return _MIN_UUID, _NEG_INF, -(2**31), -(2**31)
    tracker, time, lat, lon = cursor_parts(page.after, 4)
    return cursor_id(tracker), cursor_time(time), cursor_int32(lat), cursor_int32(lon)


def _cursor(tracker_id: uuid.UUID, t: datetime, lat: int = 0, lon: int = 0) -> str:
    return f"{tracker_id}|{t.isoformat()}|{lat}|{lon}"


class PostgresStatusRepository:
    def __init__(self, pool: asyncpg.Pool, hourly_days: float = 7.0) -> None:
        self._pool, self._hourly_days = pool, hourly_days

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                return await conn.fetch(sql, *args)

    async def tracker_clients(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        rows = await self._fetch(
            "SELECT id, client_id FROM trackers WHERE id = ANY($1::uuid[])", list(ids)
        )
        return {r["id"]: r["client_id"] for r in rows}

    async def current(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CurrentStatus]:
        rows = await self._fetch(
            f"""SELECT t.id AS tracker_id, t.client_id, s.status, s.status_since, s.location_id,
                       s.last_report_time, s.last_latitude_e7, s.last_longitude_e7,
                       s.last_accuracy_m, s.update_time, s.probability, s.evidence_since,
                       {_CITY}
                FROM trackers t
                LEFT JOIN tracker_status s ON s.tracker_id = t.id
                LEFT JOIN cities ci ON ci.geonameid = s.last_city_id
                WHERE t.id = ANY($1::uuid[])""",
            list(ids),
        )
        out = {}
        for r in rows:
            last = None
            if r["last_report_time"] is not None:
                position = _point(r["last_latitude_e7"], r["last_longitude_e7"])
                last = LastReport(
                    r["last_report_time"], position, r["last_accuracy_m"], _near(r, position)
                )
            out[r["tracker_id"]] = CurrentStatus(
                tracker_id=r["tracker_id"],
                client_id=r["client_id"],
                status=TrackerStatus(r["status"]) if r["status"] else None,
                status_since=r["status_since"],
                location_id=r["location_id"],
                last_report=last,
                update_time=r["update_time"],
                probability=r["probability"],
                evidence_since=r["evidence_since"],
            )
        return out

    async def status_history(
        self, filter: HistoryFilter, page: PageRequest
    ) -> Page[TrackerStatusChange]:
        rows = await self._fetch(
            f"""SELECT h.*, {_CITY}
                FROM status_history h
                JOIN trackers t ON t.id = h.tracker_id
                LEFT JOIN cities ci ON ci.geonameid = h.nearest_city_id
                WHERE ($1::uuid IS NULL OR h.tracker_id = $1)
                  AND ($2::timestamptz IS NULL OR h.report_time >= $2)
                  AND ($3::timestamptz IS NULL OR h.report_time < $3)
                  AND ($4::uuid[] IS NULL OR t.client_id = ANY($4))
                  AND (h.tracker_id, h.report_time, h.latitude_e7, h.longitude_e7)
                      > ($5, $6::timestamptz, $7, $8)
                ORDER BY h.tracker_id, h.report_time, h.latitude_e7, h.longitude_e7
                LIMIT $9""",
            filter.tracker_id,
            filter.start_time,
            filter.end_time,
            None if filter.visible_clients is None else list(filter.visible_clients),
            *_after(page),
            page.size + 1,
        )
        items = []
        for r in rows[: page.size]:
            key = ReportKey(r["report_time"], r["latitude_e7"], r["longitude_e7"])
            position = _point(key.latitude_e7, key.longitude_e7)
            change = StatusChange(
                key=key,
                status=TrackerStatus(r["status"]),
                previous=TrackerStatus(r["previous_status"]) if r["previous_status"] else None,
                location_id=r["location_id"],
                horizontal_accuracy_m=r["horizontal_accuracy_m"],
                confidence=r["confidence"],
                nearest_city_id=r["nearest_city_id"],
                probability=r["probability"],
                evidence_since=r["evidence_since"],
            )
            items.append(TrackerStatusChange(r["tracker_id"], change, position, _near(r, position)))
        nxt = None
        if len(rows) > page.size:
            last = items[-1]
            k = last.change.key
            nxt = _cursor(last.tracker_id, k.report_time, k.latitude_e7, k.longitude_e7)
        return Page(items, nxt)

    async def location_history(
        self,
        filter: HistoryFilter,
        granularity: Granularity,
        min_confidence: int,
        page: PageRequest,
    ) -> Page[LocationPoint]:
        common = [
            filter.tracker_id,
            filter.start_time,
            filter.end_time,
            None if filter.visible_clients is None else list(filter.visible_clients),
            min_confidence,
            *_after(page),
            page.size + 1,
        ]
        if granularity is Granularity.RAW:
            rows = await self._fetch(
                f"""SELECT 'RAW' AS granularity, r.tracker_id, r.report_time AS start_time,
                           1 AS report_count, r.report_time AS first_time,
                           r.report_time AS last_time, r.horizontal_accuracy_m AS accuracy,
                           r.latitude_e7 AS lat, r.longitude_e7 AS lon, r.confidence, r.source,
                           {_CITY}
                    FROM reports r
                    JOIN trackers t ON t.id = r.tracker_id
                    LEFT JOIN cities ci ON ci.geonameid = r.nearest_city_id
                    WHERE ($1::uuid IS NULL OR r.tracker_id = $1)
                      AND ($2::timestamptz IS NULL OR r.report_time >= $2)
                      AND ($3::timestamptz IS NULL OR r.report_time < $3)
                      AND ($4::uuid[] IS NULL OR t.client_id = ANY($4))
                      AND r.confidence >= $5
                      AND (r.tracker_id, r.report_time, r.latitude_e7, r.longitude_e7)
                          > ($6, $7::timestamptz, $8, $9)
                    ORDER BY r.tracker_id, r.report_time, r.latitude_e7, r.longitude_e7
                    LIMIT $10""",
                *common,
            )
        else:
            branches = []
            if granularity in (Granularity.HOURLY, Granularity.AUTO):
                branches.append(
                    self._rollup_sql("location_hourly", "HOURLY", "1 hour", granularity)
                )
            if granularity in (Granularity.DAILY, Granularity.AUTO):
                branches.append(self._rollup_sql("location_daily", "DAILY", "1 day", granularity))
            rows = await self._fetch(
                f"""SELECT x.*, {_CITY} FROM ({" UNION ALL ".join(branches)}) x
                    LEFT JOIN cities ci ON ci.geonameid = x.city
                    ORDER BY x.tracker_id, x.start_time LIMIT $10""",
                *common,
                *([self._hourly_days] if granularity is Granularity.AUTO else []),
            )
        items = []
        for r in rows[: page.size]:
            position = _point(r["lat"], r["lon"])
            items.append(
                LocationPoint(
                    tracker_id=r["tracker_id"],
                    granularity=Granularity(r["granularity"]),
                    start_time=r["start_time"],
                    report_count=r["report_count"],
                    first_report_time=r["first_time"],
                    last_report_time=r["last_time"],
                    position=position,
                    horizontal_accuracy_m=r["accuracy"],
                    nearest_city=_near(r, position),
                    confidence=r["confidence"],
                    source=r["source"],
                )
            )
        nxt = None
        if len(rows) > page.size:
            last = items[-1]
            if last.granularity is Granularity.RAW:
                nxt = _cursor(
                    last.tracker_id,
                    last.start_time,
                    round(last.position.latitude * 1e7),
                    round(last.position.longitude * 1e7),
                )
            else:
                nxt = _cursor(last.tracker_id, last.start_time, 2**31 - 1, 2**31 - 1)
        return Page(items, nxt)

    @staticmethod
    def _rollup_sql(table: str, name: str, width: str, granularity: Granularity) -> str:
        cutoff = "date_trunc('day', now() - make_interval(days => $11::int), 'UTC')"
        split = ""
        if granularity is Granularity.AUTO:
            split = f"AND b.bucket_start {'>=' if name == 'HOURLY' else '<'} {cutoff}"
        rep = (
            "ORDER BY b.best_accuracy_m, b.rep_report_time DESC, b.rep_latitude_e7, "
            "b.rep_longitude_e7"
        )
        return f"""SELECT '{name}' AS granularity, b.tracker_id, b.bucket_start AS start_time,
                          sum(b.report_count)::int AS report_count,
                          min(b.first_report_time) AS first_time,
                          max(b.last_report_time) AS last_time,
                          min(b.best_accuracy_m) AS accuracy,
                          (array_agg(b.rep_latitude_e7 {rep}))[1] AS lat,
                          (array_agg(b.rep_longitude_e7 {rep}))[1] AS lon,
                          0 AS confidence,
                          '' AS source,
                          (array_agg(b.rep_city_id {rep}))[1] AS city
                   FROM {table} b
                   JOIN trackers t ON t.id = b.tracker_id
                   WHERE ($1::uuid IS NULL OR b.tracker_id = $1)
                     AND ($2::timestamptz IS NULL OR b.bucket_start > $2 - interval '{width}')
                     AND ($3::timestamptz IS NULL OR b.bucket_start < $3)
                     AND ($4::uuid[] IS NULL OR t.client_id = ANY($4))
                     AND b.confidence >= $5
                     AND (b.tracker_id, b.bucket_start, 2147483647, 2147483647)
                         > ($6, $7::timestamptz, $8, $9)
                     {split}
                   GROUP BY b.tracker_id, b.bucket_start"""

    async def status_rule(self, production_run_id: uuid.UUID) -> StatusRule:
        rows = await self._fetch(
            """SELECT min_consecutive_reports, min_dwell_s, require_accuracy_within_radius,
                      min_confidence, kind, min_probability, outlier_share
               FROM status_rules WHERE production_run_id = $1""",
            production_run_id,
        )
        if not rows:
            return StatusRule.default()
        r = rows[0]
        return StatusRule(*r[:4], RuleKind(r["kind"]), r["min_probability"], r["outlier_share"])

    async def set_status_rule(self, production_run_id: uuid.UUID, rule: StatusRule) -> None:
        try:
            await self._fetch(
                """INSERT INTO status_rules (production_run_id, min_consecutive_reports,
                       min_dwell_s, require_accuracy_within_radius, min_confidence, kind,
                       min_probability, outlier_share)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (production_run_id) DO UPDATE SET
                       min_consecutive_reports = excluded.min_consecutive_reports,
                       min_dwell_s = excluded.min_dwell_s,
                       require_accuracy_within_radius = excluded.require_accuracy_within_radius,
                       min_confidence = excluded.min_confidence, kind = excluded.kind,
                       min_probability = excluded.min_probability,
                       outlier_share = excluded.outlier_share, update_time = now()""",
                production_run_id,
                rule.min_consecutive_reports,
                rule.min_dwell_s,
                rule.require_accuracy_within_radius,
                rule.min_confidence,
                rule.kind.value,
                rule.min_probability,
                rule.outlier_share,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("production run", str(production_run_id)) from None

    async def reevaluate_run(self, production_run_id: uuid.UUID) -> int:
        # since = the year 1: the worker replays each tracker from its first report.
        rows = await self._fetch(
            """INSERT INTO processing_queue AS q (tracker_id, since, hours)
               SELECT id, '0001-01-01T00:00:00Z', '{}' FROM trackers WHERE production_run_id = $1
               ORDER BY id
               ON CONFLICT (tracker_id) DO UPDATE
                   SET since = '0001-01-01T00:00:00Z', version = q.version + 1
               RETURNING tracker_id""",
            production_run_id,
        )
        return len(rows)
