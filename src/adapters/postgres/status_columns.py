"""The readings of a batch of trackers as columns (``domain.status_batch.ReadingColumns``):
one ``COPY ... TO STDOUT (FORMAT binary)`` of the batch's reports, read straight into numpy
(fixed-width rows, no Python object per report), and the geofence classification in numpy
over the fences of the batch's runs (one small query).

The rule is the one ``domain.status.classify`` states and the SQL of the earlier per-report
``LATERAL`` join computed: distances are great-circle metres on the mean sphere, by the
operations of PostGIS's ``sphere_distance`` (``domain.geo``), on the stored positions;
inside a fence when ``d + slack <= radius``, near it when ``d - slack <= radius`` (slack: the
accuracy under ``require_accuracy_within_radius``, else 0); DELIVERED before IN_STORAGE, the
nearest fence (ties: the smallest id); for EVIDENCE rules every fence with
``d <= radius + evidence.REACH_M``, by id. A report is paired only with the fences of its
run within a band of latitude (sorted, ``searchsorted``), so runs with many fences cost
what the fences near their reports cost.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter

import asyncpg
import numpy as np

from domain import evidence
from domain.geo import EARTH_RADIUS_M
from domain.model import LocationKind
from domain.reports import MAX_ACCURACY_M
from domain.status import ReportKey, RuleKind, StatusRule
from domain.status_batch import KINDS, NO_TIME, ReadingColumns, to_us

# "from the first report": 0001-01-01 00:00:00+00, as the claim clamps "since"
_NEG_US = to_us(datetime(1, 1, 1, tzinfo=UTC))
_MIN_E7 = -(2**31)

# One row per report after its tracker's start key that counts under its run's rule (its
# minimum confidence), with the tracker's place in the batch; fixed width (no NULLs). The start
# key is a condition of the index scan (and prunes the older partitions at run time): only
# the reports after it are read, however long the tracker's history. Rows come in the
# batch's order and, per tracker, in key order (the primary key's order); checked on arrival.
_COPY_SQL = """
SELECT s.n, r.report_time, r.latitude_e7, r.longitude_e7, r.horizontal_accuracy_m,
       r.confidence::int4, coalesce(r.nearest_city_id, -1)
FROM reading_keys s
CROSS JOIN LATERAL (
    SELECT r.report_time, r.latitude_e7, r.longitude_e7, r.horizontal_accuracy_m,
           r.confidence, r.nearest_city_id
    FROM reports r
    WHERE r.tracker_id = s.tracker_id AND r.report_time >= s.t
      AND (r.report_time, r.latitude_e7, r.longitude_e7) > (s.t, s.lat, s.lon)
      AND r.confidence >= s.min_confidence
      AND isfinite(r.report_time)  -- stored before times were validated: no place in time
      -- (from here on `reports` is empty, in this statement's snapshot: migration 0036)
      AND r.report_time < (SELECT reports_empty_since())
    -- (a fence: never flattened into a join the planner could run as a hash of the whole
    -- table, which its estimates favour while the table is small)
    OFFSET 0) r
"""

# no report has this confidence: a tracker with it reads nothing
_NOTHING = 4


async def tracker_runs(
    conn: asyncpg.Connection, trackers: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """The production run of each tracker that still exists."""
    rows = await conn.fetch(
        """SELECT t.id, t.production_run_id FROM unnest($1::uuid[]) AS c(id)
           JOIN trackers t ON t.id = c.id""",
        list(trackers),
    )
    return {r["id"]: r["production_run_id"] for r in rows}


@dataclass(frozen=True)
class RunRules:
    """The rules of some runs as columns, one row per run in the order asked (the default
    rule where a run never had one set)."""

    evidence: np.ndarray
    min_count: np.ndarray
    dwell_s: np.ndarray
    accuracy_rule: np.ndarray
    min_confidence: np.ndarray
    min_probability: np.ndarray
    outlier_share: np.ndarray


async def run_rules(conn: asyncpg.Connection, run_ids: Sequence[uuid.UUID]) -> RunRules:
    """The runs' rules, read once per run (not once per tracker)."""
    rows = await conn.fetch(
        """SELECT production_run_id, kind, min_consecutive_reports, min_dwell_s,
                  require_accuracy_within_radius, min_confidence, min_probability,
                  outlier_share
           FROM status_rules WHERE production_run_id = ANY($1::uuid[])""",
        list(run_ids),
    )
    by_run = {r["production_run_id"]: r for r in rows}
    d = StatusRule.default()
    rules = [by_run.get(r) for r in run_ids]

    def column(name: str, default: object, dtype: type) -> np.ndarray:
        return np.array([default if r is None else r[name] for r in rules], dtype=dtype)

    kinds = column("kind", d.kind.value, np.str_)
    return RunRules(
        evidence=kinds == RuleKind.EVIDENCE.value,
        min_count=column("min_consecutive_reports", d.min_consecutive_reports, np.int64),
        dwell_s=column("min_dwell_s", d.min_dwell_s, np.int64),
        accuracy_rule=column(
            "require_accuracy_within_radius", d.require_accuracy_within_radius, np.bool_
        ),
        min_confidence=column("min_confidence", d.min_confidence, np.int64),
        min_probability=column("min_probability", d.min_probability, np.float64),
        outlier_share=column("outlier_share", d.outlier_share, np.float64),
    )


@dataclass(frozen=True)
class TrackerRules:
    """Per tracker of a batch: its run (an index into ``run_ids``; -1: the tracker no longer
    exists) and the flags of its run's rule the readings need."""

    run: np.ndarray
    run_ids: list[uuid.UUID]
    evidence: np.ndarray
    accuracy_rule: np.ndarray
    min_confidence: np.ndarray


async def tracker_rules(conn: asyncpg.Connection, trackers: Sequence[uuid.UUID]) -> TrackerRules:
    """The trackers' runs and rule flags, for callers that do not have them from the
    status state (a tracker that no longer exists reads nothing)."""
    runs = await tracker_runs(conn, trackers)
    index: dict[uuid.UUID, int] = {}
    run = np.array(
        [index.setdefault(runs[t], len(index)) if t in runs else -1 for t in trackers],
        dtype=np.int64,
    )
    rules = await run_rules(conn, list(index))
    # (a sentinel run last: index -1, a tracker that no longer exists, reads nothing)
    return TrackerRules(
        run=run,
        run_ids=list(index),
        evidence=np.append(rules.evidence, False)[run],
        accuracy_rule=np.append(rules.accuracy_rule, False)[run],
        min_confidence=np.append(rules.min_confidence, _NOTHING)[run],
    )


def _field(name: str, fmt: str) -> list[tuple[str, str]]:
    return [(f"{name}_len", ">i4"), (name, fmt)]


_ROW = np.dtype(
    [
        ("fields", ">i2"),
        *_field("n", ">i4"),
        *_field("t", ">i8"),
        *_field("lat_e7", ">i4"),
        *_field("lon_e7", ">i4"),
        *_field("accuracy", ">i4"),
        *_field("confidence", ">i4"),
        *_field("city", ">i4"),
    ]
)
_HEADER = 19  # PGCOPY signature (11), flags (4), header extension length (4, zero)
_FIELDS = 7


def binary_copy(columns: Sequence[tuple[str, np.ndarray]]) -> io.BytesIO:
    """A binary COPY of fixed-width rows, one field per column (numpy dtype as sent: the
    values in PostgreSQL's binary layout, e.g. timestamptz as int64 microseconds since 2000,
    ``NO_TIME`` being -infinity)."""
    n = len(columns[0][1])
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for name, a in columns:
        fmt = a.dtype.str if a.dtype.kind == "V" else a.dtype.newbyteorder(">").str
        fields += [(f"{name}_len", ">i4"), (name, fmt)]
    rows = np.zeros(n, dtype=np.dtype(fields))
    rows["fields"] = len(columns)
    for name, a in columns:
        rows[f"{name}_len"] = a.dtype.itemsize
        rows[name] = a
    return io.BytesIO(b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff")


def uuid_values(ids: Sequence[uuid.UUID]) -> np.ndarray:
    """uuids as 16-byte values, plus the zero uuid last (index -1: None)."""
    return np.frombuffer(b"".join(map(attrgetter("bytes"), ids)) + bytes(16), dtype="V16")


async def stage(
    conn: asyncpg.Connection, table: str, ddl: str, columns: Sequence[tuple[str, np.ndarray]]
) -> None:
    """A temporary table holding ``columns`` by one binary COPY: how a batch's keys and
    results reach a statement, without a text literal to build and parse. The table is
    made once per session and emptied at every commit (ON COMMIT DELETE ROWS): no catalog
    rows written per batch (a CREATE and DROP per batch cost ~2-5 ms each, which small
    batches felt); emptied first as well, should a transaction stage twice."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table} ({ddl}) ON COMMIT DELETE ROWS; "
        f"DELETE FROM pg_temp.{table}"
    )
    await conn.copy_to_table(table, source=binary_copy(columns), format="binary")


def ascending(*columns: np.ndarray) -> bool:
    """Whether the rows are in strictly ascending order of the columns (lexicographic)."""
    if len(columns[0]) < 2:
        return True
    later = np.zeros(len(columns[0]) - 1, dtype=np.bool_)
    same = np.ones(len(columns[0]) - 1, dtype=np.bool_)
    for c in columns:
        later |= same & (c[1:] > c[:-1])
        same &= c[1:] == c[:-1]
    return bool(later.all())


def _rows(data: bytes) -> np.ndarray:
    return _parse(data, _ROW, _FIELDS)


def copy_rows(data: bytes, fields: Sequence[tuple[str, str]]) -> np.ndarray:
    """The rows of a binary COPY whose fields are all fixed-width and not NULL, as a numpy
    structured array with the given (name, dtype) fields."""
    dtype = np.dtype([("fields", ">i2"), *(x for name, fmt in fields for x in _field(name, fmt))])
    return _parse(data, dtype, len(fields))


def _parse(data: bytes, dtype: np.dtype, count: int) -> np.ndarray:
    if len(data) <= _HEADER + 2:
        return np.zeros(0, dtype=dtype)
    if data[:11] != b"PGCOPY\n\xff\r\n\x00" or data[15:19] != b"\x00\x00\x00\x00":
        raise ValueError("unexpected COPY header")
    rows = np.frombuffer(
        data, dtype=dtype, offset=_HEADER, count=(len(data) - _HEADER - 2) // dtype.itemsize
    )
    if len(data) != _HEADER + 2 + rows.itemsize * len(rows) or (rows["fields"] != count).any():
        raise ValueError("unexpected COPY row layout")
    return rows


def _radians(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    la = np.pi * lat / 180.0
    lo = np.pi * lon / 180.0
    return la, np.where(lo == -np.pi, np.pi, lo)


def _distance_m(
    lat_s: np.ndarray, lon_s: np.ndarray, lat_e: np.ndarray, lon_e: np.ndarray
) -> np.ndarray:
    """``domain.geo.distance_m`` element by element (its operations, in numpy)."""
    d_lon = lon_e - lon_s
    cos_d_lon = np.cos(d_lon)
    cos_lat_e, sin_lat_e = np.cos(lat_e), np.sin(lat_e)
    cos_lat_s, sin_lat_s = np.cos(lat_s), np.sin(lat_s)
    a1 = cos_lat_e * np.sin(d_lon)
    a2 = cos_lat_s * sin_lat_e - sin_lat_s * cos_lat_e * cos_d_lon
    a = np.sqrt(a1 * a1 + a2 * a2)
    b = sin_lat_s * sin_lat_e + cos_lat_s * cos_lat_e * cos_d_lon
    return EARTH_RADIUS_M * np.arctan2(a, b)


async def reading_columns(
    conn: asyncpg.Connection, starts: Mapping[uuid.UUID, ReportKey | None]
) -> ReadingColumns:
    trackers = list(starts)
    keys = [starts[t] for t in trackers]
    return await reading_columns_after(
        conn,
        trackers,
        np.array([to_us(k.report_time) if k else NO_TIME for k in keys], dtype=np.int64),
        np.array([k.latitude_e7 if k else _MIN_E7 for k in keys], dtype=np.int64),
        np.array([k.longitude_e7 if k else _MIN_E7 for k in keys], dtype=np.int64),
    )


async def reading_columns_after(
    conn: asyncpg.Connection,
    trackers: Sequence[uuid.UUID],
    after_us: np.ndarray,
    after_lat: np.ndarray,
    after_lon: np.ndarray,
    rules: TrackerRules | None = None,
) -> ReadingColumns:
    """``reading_columns`` with the start keys as columns (time: microseconds since 2000,
    ``NO_TIME``: from the first report) and, if the caller has them, the trackers' runs
    and rule flags (else they are read here)."""
    trackers = list(trackers)
    if rules is None:
        rules = await tracker_rules(conn, trackers)
    chunks: list[bytes] = []

    async def keep(b: bytes) -> None:
        chunks.append(bytes(b))

    if trackers:
        await stage(
            conn,
            "reading_keys",
            "n int4, tracker_id uuid, t timestamptz, lat int4, lon int4, min_confidence int4",
            [
                ("n", np.arange(1, len(trackers) + 1, dtype=np.int32)),
                ("tracker_id", uuid_values(trackers)[:-1]),
                # NO_TIME: from the first report (as the claim clamps "since")
                ("t", np.where(after_us == NO_TIME, _NEG_US, after_us).astype(np.int64)),
                ("lat", after_lat.astype(np.int32)),
                ("lon", after_lon.astype(np.int32)),
                ("min_confidence", rules.min_confidence.astype(np.int32)),
            ],
        )
        await conn.copy_from_query(_COPY_SQL, output=keep, format="binary")
    rows = _rows(b"".join(chunks))
    tracker = rows["n"].astype(np.int64) - 1
    t_us = rows["t"].astype(np.int64)
    lat_e7, lon_e7 = rows["lat_e7"].astype(np.int64), rows["lon_e7"].astype(np.int64)
    if not ascending(tracker, t_us, lat_e7, lon_e7):  # (as they come, unless a plan says not)
        o = np.lexsort((lon_e7, lat_e7, t_us, tracker))
        rows, tracker, t_us, lat_e7, lon_e7 = rows[o], tracker[o], t_us[o], lat_e7[o], lon_e7[o]
    n = len(rows)
    start = np.searchsorted(tracker, np.arange(len(trackers) + 1)).astype(np.int64)
    evid = rules.evidence[tracker]
    accuracy = rows["accuracy"].astype(np.int64)
    slack = np.where(rules.accuracy_rule[tracker], accuracy, 0).astype(np.int64)
    run_of = rules.run[tracker]
    run_ids = rules.run_ids

    # the fences of the batch's runs, sorted by id (their index order is their id order)
    fence_rows = []
    if n:
        fence_rows = await conn.fetch(
            """SELECT production_run_id, id, kind, ST_Y(center::geometry) AS lat,
                      ST_X(center::geometry) AS lon, radius_m
               FROM locations WHERE production_run_id = ANY($1::uuid[])""",
            [run_ids[i] for i in np.unique(run_of).tolist() if i >= 0],
        )
    fence_rows = sorted(fence_rows, key=lambda r: r["id"].int)
    run_index = {r: i for i, r in enumerate(run_ids)}
    f_run = np.array([run_index[r["production_run_id"]] for r in fence_rows], dtype=np.int64)
    f_kind = np.array([KINDS.index(LocationKind(r["kind"])) for r in fence_rows], dtype=np.int8)
    f_lat = np.array([r["lat"] for r in fence_rows], dtype=np.float64)
    f_lon = np.array([r["lon"] for r in fence_rows], dtype=np.float64)
    f_rad = np.array([float(r["radius_m"]) for r in fence_rows], dtype=np.float64)

    # candidate pairs: the fences of the report's run within a latitude band
    reach = float(f_rad.max()) + max(evidence.REACH_M, MAX_ACCURACY_M) if len(f_rad) else 0.0
    band = reach / 111_000.0 + 1e-6  # >= the great-circle metres per degree of latitude
    order = np.lexsort((f_lat, f_run))  # by run, then latitude
    f_key = f_run[order] * 1000.0 + f_lat[order]
    r_key = run_of.astype(np.float64) * 1000.0 + lat_e7 / 1e7
    lo = np.searchsorted(f_key, r_key - band, side="left")
    hi = np.searchsorted(f_key, r_key + band, side="right")
    width = hi - lo
    pair_r = np.repeat(np.arange(n, dtype=np.int64), width)
    offsets = np.repeat(np.cumsum(width) - width, width)
    pair_f = order[np.repeat(lo, width) + np.arange(len(pair_r)) - offsets]
    # the stored position is exactly these doubles (reports.position is generated from
    # e7 / 1e7, correctly rounded either way: a test checks the two agree)
    r_lat, r_lon = _radians(lat_e7 / 1e7, lon_e7 / 1e7)
    c_lat, c_lon = _radians(f_lat, f_lon)
    d = _distance_m(r_lat[pair_r], r_lon[pair_r], c_lat[pair_f], c_lon[pair_f])
    radius = f_rad[pair_f]
    s = slack[pair_r]
    inside = d + s <= radius
    near_edge = d - s <= radius
    reach_ok = evid[pair_r] & (d <= radius + evidence.REACH_M)

    status = np.full(n, 2, dtype=np.int8)  # IN_TRANSIT
    location = np.full(n, -1, dtype=np.int32)
    status[pair_r[near_edge]] = -1  # near an edge: tells nothing, unless inside one below
    for code in (1, 0):  # storage first, so delivery wins
        m = inside & (f_kind[pair_f] == code)
        if m.any():
            pr, pf, pd = pair_r[m], pair_f[m], d[m]
            o = np.lexsort((pf, pd, pr))  # by report, distance, fence id
            pr, pf = pr[o], pf[o]
            first = np.ones(len(pr), dtype=np.bool_)
            first[1:] = pr[1:] != pr[:-1]
            status[pr[first]] = code
            location[pr[first]] = pf[first]
    # fences within reach (EVIDENCE), by report and then id
    kr, kf, kd = pair_r[reach_ok], pair_f[reach_ok], d[reach_ok]
    o = np.lexsort((kf, kr))
    kr, kf, kd = kr[o], kf[o], kd[o]
    near_start = np.searchsorted(kr, np.arange(n + 1)).astype(np.int64)
    return ReadingColumns(
        trackers=tuple(trackers),
        start=start,
        time_us=t_us,
        latitude_e7=lat_e7,
        longitude_e7=lon_e7,
        accuracy_m=accuracy,
        confidence=rows["confidence"].astype(np.int64),
        city=rows["city"].astype(np.int64),
        status=status,
        location=location,
        near_start=near_start,
        near_fence=kf.astype(np.int32),
        near_d=kd.astype(np.float64),
        fence_ids=tuple(r["id"] for r in fence_rows),
        fence_kind=f_kind,
        fence_radius=f_rad,
    )


__all__ = [
    "TrackerRules",
    "ascending",
    "binary_copy",
    "copy_rows",
    "reading_columns",
    "reading_columns_after",
    "run_rules",
    "stage",
    "tracker_rules",
    "tracker_runs",
    "uuid_values",
]
