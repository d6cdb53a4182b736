"""The status step's state in and out of PostgreSQL as columns (issue 12, speed).

In: one ``COPY (...) TO STDOUT (FORMAT binary)`` of every claimed tracker's rule and
checkpoint with fixed-width rows (NULLs as sentinels, the belief in the slots of
``domain.status_batch.States``), read straight into numpy. A tracker that cannot resume from
its checkpoint (late reports: ``domain.status.resume_point`` restarts it at an earlier
change) or whose belief does not fit the slots is flagged ``general``; the worker reads those
few through ``status_inputs`` as objects.

Out: the new checkpoints and the status changes as binary COPYs into temporary tables
(fixed-width rows built in numpy), applied with one ``UPDATE ... FROM`` and one
``INSERT ... SELECT`` per table; no statement per tracker.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg
import numpy as np

from adapters.postgres.plans import execute_by_probes
from adapters.postgres.status_columns import (
    ascending,
    copy_rows,
    run_rules,
    stage,
    tracker_runs,
    uuid_values,
)
from domain.evidence import ELSEWHERE, Belief
from domain.ports.processing import Claim
from domain.status_batch import (
    KINDS,
    STATUSES,
    ReadingColumns,
    ResultColumns,
    StateColumns,
    States,
    to_us,
)

_ZERO = "00000000-0000-0000-0000-000000000000"
assert str(ELSEWHERE) == _ZERO
_MIN_E7 = -(2**31)


def _code(column: str, names: Sequence[str]) -> str:
    whens = " ".join(f"WHEN '{n}' THEN {i}" for i, n in enumerate(names))
    return f"coalesce(CASE {column} {whens} END, -1)::int4"


_STATUS_NAMES = [s.value for s in STATUSES]
_KIND_NAMES = [k.value for k in KINDS]

# Per claim (its place n in the batch), fixed width. The belief: transit first, then
# ELSEWHERE (if there), then at most one fence (slot f). The rule is its run's (read once per
# run, below), not read per tracker.
_STATE_SQL = """
SELECT c.n, s.tracker_id IS NOT NULL,
       coalesce(
           CASE WHEN s.tracker_id IS NULL
                THEN EXISTS (SELECT 1 FROM status_history h
                             WHERE h.tracker_id = c.tracker_id AND h.report_time < c.since)
                ELSE s.last_report_time >= c.since
                     OR NOT (s.belief_ids IS NULL
                             OR cardinality(s.belief_ids) = 0
                             OR (s.belief_ids[1] IS NULL AND s.belief_kinds[1] IS NULL
                                 AND s.belief_probabilities[1] IS NOT NULL
                                 AND (b.f = 2 OR s.belief_probabilities[2] IS NOT NULL)
                                 AND cardinality(s.belief_ids) <= b.f
                                 AND (cardinality(s.belief_ids) < b.f
                                      OR (s.belief_ids[b.f] <> '{zero}'
                                          AND s.belief_kinds[b.f] IS NOT NULL
                                          AND s.belief_probabilities[b.f] IS NOT NULL))))
           END, true),
       coalesce(s.last_report_time, '-infinity'),
       coalesce(s.last_latitude_e7, {min_e7}), coalesce(s.last_longitude_e7, {min_e7}),
       {status}, coalesce(s.status_since, '-infinity'), coalesce(s.location_id, '{zero}'),
       {pending}, coalesce(s.pending_count, 0), coalesce(s.pending_since, '-infinity'),
       coalesce(s.pending_location_id, '{zero}'),
       coalesce(s.probability, 'NaN'), coalesce(s.evidence_since, '-infinity'),
       coalesce(CASE WHEN s.belief_ids IS NULL THEN s.belief_transit
                     WHEN cardinality(s.belief_ids) > 0 THEN s.belief_probabilities[1] END,
                'NaN'),
       coalesce(CASE WHEN s.belief_ids IS NULL THEN s.belief_elsewhere
                     WHEN b.f = 3 THEN s.belief_probabilities[2] END, 'NaN'),
       coalesce(CASE WHEN s.belief_ids IS NULL THEN s.belief_fence_id
                     ELSE s.belief_ids[b.f] END, '{zero}'),
       {fence_kind},
       coalesce(CASE WHEN s.belief_ids IS NULL THEN s.belief_fence_p
                     ELSE s.belief_probabilities[b.f] END, 'NaN'),
       coalesce(s.belief_time, '-infinity'),
       coalesce(s.onset_delivered, '-infinity'), coalesce(s.onset_storage, '-infinity'),
       coalesce(s.onset_transit, '-infinity')
FROM state_keys c
-- (a fence: one index probe per claim, never a hash of the whole table, which the planner
-- would pick for a batch that is a tenth of the fleet)
LEFT JOIN LATERAL (SELECT * FROM tracker_status s WHERE s.tracker_id = c.tracker_id OFFSET 0) s
    ON true
-- the belief's slot of its fence, for a belief still in the arrays (written before 0035,
-- or wider than the columns)
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.belief_ids IS NULL THEN 0
                WHEN s.belief_ids[2] = '{zero}' AND s.belief_kinds[2] IS NULL THEN 3
                ELSE 2 END AS f) b
"""

_STATE_ROW = [
    ("n", ">i4"), ("stored", "u1"), ("general", "u1"),
    ("after", ">i8"), ("after_lat", ">i4"), ("after_lon", ">i4"),
    ("status", ">i4"), ("since", ">i8"), ("location", "V16"),
    ("pending", ">i4"), ("pending_count", ">i4"), ("pending_since", ">i8"),
    ("pending_location", "V16"), ("probability", ">f8"), ("evidence_since", ">i8"),
    ("transit", ">f8"), ("elsewhere", ">f8"), ("fence", "V16"), ("fence_kind", ">i4"),
    ("fence_p", ">f8"), ("belief_time", ">i8"),
    ("onset_d", ">i8"), ("onset_s", ">i8"), ("onset_t", ">i8"),
]  # fmt: skip


def key_order(ids: np.ndarray) -> np.ndarray | None:
    """The order that sorts 16-byte uuid values as PostgreSQL does (by their bytes); None
    if they already are. The status step takes a batch in key order, as the queue hands it
    out: its index probes then touch each page once rather than at random (a fifth of the
    step at 250,000 trackers)."""
    if len(ids) < 2:
        return None
    halves = ids.view([("hi", ">u8"), ("lo", ">u8")])
    hi, lo = halves["hi"], halves["lo"]
    return None if ascending(hi, lo) else np.lexsort((lo, hi))


def _times_us(times: Sequence[datetime]) -> np.ndarray:
    """``to_us`` of each time, once per distinct time (a batch's claims share a few)."""
    us = {t: to_us(t) for t in set(times)}
    return np.fromiter(map(us.__getitem__, times), dtype=np.int64, count=len(times))


async def state_columns(
    conn: asyncpg.Connection,
    claims: Sequence[Claim],
    runs: Mapping[uuid.UUID, uuid.UUID] | None = None,
) -> StateColumns:
    """The claims' starts as columns, in tracker id order (``key_order``; claims of
    trackers that no longer exist left out); ``general`` flags the trackers to read as
    objects. ``runs``: each tracker's production run, where the caller has them (the
    worker's lock reads them); the runs of trackers missing from it are read here (a
    tracker not found no longer exists)."""
    run_of_claim = list(map((runs or {}).get, (c.tracker_id for c in claims)))
    if None in run_of_claim:
        read = await tracker_runs(
            conn, [c.tracker_id for c, r in zip(claims, run_of_claim, strict=True) if r is None]
        )
        run_of_claim = [
            read.get(c.tracker_id) if r is None else r
            for c, r in zip(claims, run_of_claim, strict=True)
        ]
        claims = [c for c, r in zip(claims, run_of_claim, strict=True) if r is not None]
        run_of_claim = [r for r in run_of_claim if r is not None]
    run_index: dict[uuid.UUID, int] = {}
    run_of = np.array(
        [run_index.setdefault(r, len(run_index)) for r in run_of_claim], dtype=np.int64
    )
    run_ids = list(run_index)
    keys = uuid_values([c.tracker_id for c in claims])[:-1]
    order = key_order(keys)
    if order is not None:
        claims, keys, run_of = [claims[i] for i in order.tolist()], keys[order], run_of[order]
    sql = _STATE_SQL.format(
        zero=_ZERO,
        min_e7=_MIN_E7,
        status=_code("s.status", _STATUS_NAMES),
        pending=_code("s.pending_status", _STATUS_NAMES),
        fence_kind=_code(
            "CASE WHEN s.belief_ids IS NULL THEN s.belief_fence_kind ELSE s.belief_kinds[b.f] END",
            _KIND_NAMES,
        ),
    )
    chunks: list[bytes] = []

    async def keep(b: bytes) -> None:
        chunks.append(bytes(b))

    if claims:
        await stage(
            conn,
            "state_keys",
            "n int4, tracker_id uuid, since timestamptz",
            [
                ("n", np.arange(1, len(claims) + 1, dtype=np.int32)),
                ("tracker_id", keys),
                ("since", _times_us([c.since for c in claims])),
            ],
        )
        await conn.copy_from_query(sql, output=keep, format="binary")
    rows = copy_rows(b"".join(chunks), _STATE_ROW)
    if len(rows) > 1 and not (np.diff(rows["n"].astype(np.int64)) > 0).all():
        rows = rows[np.argsort(rows["n"].astype(np.int64), kind="stable")]  # claim order
    n = len(rows)
    place = rows["n"].astype(np.int64) - 1
    out = StateColumns.fresh([claims[i].tracker_id for i in place.tolist()])
    rules = await run_rules(conn, run_ids)
    out.run, out.run_ids = run_of[place], run_ids
    out.evidence[:] = rules.evidence[out.run]
    out.min_count[:] = rules.min_count[out.run]
    out.dwell_s[:] = rules.dwell_s[out.run]
    out.accuracy_rule[:] = rules.accuracy_rule[out.run]
    out.min_confidence[:] = rules.min_confidence[out.run]
    out.min_probability[:] = rules.min_probability[out.run]
    out.outlier_share[:] = rules.outlier_share[out.run]
    out.general[:] = rows["general"] != 0
    out.stored = rows["stored"] != 0
    out.after_us[:] = rows["after"]
    out.after_lat[:] = rows["after_lat"]
    out.after_lon[:] = rows["after_lon"]
    # locations: every id of the three uuid columns, once; the zero uuid is None
    raw = np.concatenate([rows["location"], rows["pending_location"], rows["fence"]])
    uniq, inv = np.unique(raw, return_inverse=True)
    ids = [uuid.UUID(bytes=bytes(u)) for u in uniq]
    index = np.arange(len(uniq), dtype=np.int64)
    zero = [i for i, u in enumerate(ids) if u.int == 0]
    if zero:
        index[zero[0]] = -1
        index[zero[0] + 1 :] -= 1
        del ids[zero[0]]
    loc = index[inv]
    s = out.states
    s.status[:] = rows["status"]
    s.since[:] = rows["since"]
    s.location[:] = loc[:n]
    s.pending[:] = rows["pending"]
    s.pending_count[:] = rows["pending_count"]
    s.pending_since[:] = rows["pending_since"]
    s.pending_location[:] = loc[n : 2 * n]
    s.probability[:] = rows["probability"]
    s.evidence_since[:] = rows["evidence_since"]
    s.transit[:] = rows["transit"]
    s.elsewhere[:] = rows["elsewhere"]
    s.fence[:] = loc[2 * n :]
    s.fence_kind[:] = rows["fence_kind"]
    s.fence_p[:] = rows["fence_p"]
    s.belief_time[:] = rows["belief_time"]
    s.onsets[:] = np.stack([rows["onset_d"], rows["onset_s"], rows["onset_t"]])
    out.ids = ids
    return out


_STATUS_SQL = "(ARRAY['DELIVERED', 'IN_STORAGE', 'IN_TRANSIT'])[{} + 1]"
_KIND_SQL = "(ARRAY['DELIVERY', 'STORAGE'])[{} + 1]"
_ZERO_ID = f"'{_ZERO}'::uuid"

# tracker_status column <- expression over the staged row st
_STATE_SET = [
    ("status", _STATUS_SQL.format("st.status")),
    ("status_since", "nullif(st.status_since, '-infinity')"),
    ("location_id", f"nullif(st.location_id, {_ZERO_ID})"),
    ("last_report_time", "st.last_report_time"),
    ("last_latitude_e7", "st.last_latitude_e7"),
    ("last_longitude_e7", "st.last_longitude_e7"),
    ("last_accuracy_m", "st.last_accuracy_m"),
    ("last_city_id", "nullif(st.last_city_id, -1)"),
    ("pending_status", _STATUS_SQL.format("st.pending")),
    ("pending_count", "st.pending_count"),
    ("pending_since", "nullif(st.pending_since, '-infinity')"),
    ("pending_location_id", f"nullif(st.pending_location_id, {_ZERO_ID})"),
    ("probability", "nullif(st.probability, 'NaN')"),
    ("evidence_since", "nullif(st.evidence_since, '-infinity')"),
    ("belief_transit", "nullif(st.transit, 'NaN')"),
    ("belief_elsewhere", "nullif(st.elsewhere, 'NaN')"),
    ("belief_fence_id", f"nullif(st.fence, {_ZERO_ID})"),
    ("belief_fence_kind", _KIND_SQL.format("st.fence_kind")),
    ("belief_fence_p", f"CASE WHEN st.fence = {_ZERO_ID} THEN NULL ELSE st.fence_p END"),
    # (a belief wider than the columns is written to the arrays afterwards)
    ("belief_ids", "NULL::uuid[]"),
    ("belief_kinds", "NULL::text[]"),
    ("belief_probabilities", "NULL::float8[]"),
    ("belief_time", "nullif(st.belief_time, '-infinity')"),
    ("onset_delivered", "nullif(st.onset_delivered, '-infinity')"),
    ("onset_storage", "nullif(st.onset_storage, '-infinity')"),
    ("onset_transit", "nullif(st.onset_transit, '-infinity')"),
]

_STATUS_STAGE = """
    tracker_id uuid, stored bool, status int4, status_since timestamptz, location_id uuid,
    last_report_time timestamptz, last_latitude_e7 int4, last_longitude_e7 int4,
    last_accuracy_m int4, last_city_id int4, pending int4, pending_count int4,
    pending_since timestamptz, pending_location_id uuid, probability float8,
    evidence_since timestamptz, transit float8, elsewhere float8, fence uuid, fence_kind int4,
    fence_p float8, belief_time timestamptz, onset_delivered timestamptz,
    onset_storage timestamptz, onset_transit timestamptz"""
_CHANGE_STAGE = """
    tracker_id uuid, report_time timestamptz, latitude_e7 int4, longitude_e7 int4,
    status int4, previous int4, location_id uuid, horizontal_accuracy_m int4, confidence int4,
    nearest_city_id int4, probability float8, evidence_since timestamptz"""

# The checkpoints of trackers that had one, updated in place: one index probe per staged row
# (the planner would hash the whole table for a batch that is a tenth of the fleet:
# ``plans.execute_by_probes``), one row version each (an upsert first locks the
# row it conflicts with, then updates it: two). Rows come in tracker order (the batch's:
# the global lock order).
_UPDATE_SQL = f"""
UPDATE tracker_status s
SET {", ".join(f"{c} = {e}" for c, e in _STATE_SET)}, update_time = now()
FROM status_stage st
WHERE st.stored AND s.tracker_id = st.tracker_id
"""

# The others (a first checkpoint, or one whose row went missing meanwhile): one upsert, each
# staged row finding its tracker's row, if any, by the primary key, in tracker order.
_UPSERT_SQL = f"""
INSERT INTO tracker_status (tracker_id, {", ".join(c for c, _ in _STATE_SET)})
SELECT st.tracker_id, {", ".join(e for _, e in _STATE_SET)}
FROM status_stage st
WHERE {{which}}
ORDER BY st.tracker_id
ON CONFLICT (tracker_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c, _ in _STATE_SET)}, update_time = now()
"""

_HISTORY_SQL = f"""
INSERT INTO status_history (tracker_id, report_time, latitude_e7, longitude_e7, status,
    previous_status, location_id, horizontal_accuracy_m, confidence, nearest_city_id,
    probability, evidence_since)
SELECT tracker_id, report_time, latitude_e7, longitude_e7, {_STATUS_SQL.format("status")},
       {_STATUS_SQL.format("previous")}, nullif(location_id, {_ZERO_ID}),
       horizontal_accuracy_m, confidence::int2, nullif(nearest_city_id, -1),
       nullif(probability, 'NaN'), evidence_since
FROM change_stage
"""


def belief_texts(belief: Belief) -> tuple[str, str, str]:
    """A belief wider than the columns as the texts of its three arrays (floats as repr:
    PostgreSQL reads them back to the same bits)."""
    ids = ",".join("NULL" if h is None else str(h) for h, _, _ in belief)
    kinds = ",".join("NULL" if k is None else k.value for _, k, _ in belief)
    ps = ",".join(repr(p) for _, _, p in belief)
    return "{" + ids + "}", "{" + kinds + "}", "{" + ps + "}"


async def save_columns(
    conn: asyncpg.Connection, state: StateColumns, c: ReadingColumns, result: ResultColumns
) -> None:
    """History after each replacing tracker's start replaced by its changes; the checkpoint
    (state after its last reading) of every tracker with readings."""
    replaced = np.flatnonzero(state.replaces)
    if len(replaced):
        await conn.execute(
            """DELETE FROM status_history h
               USING unnest($1::uuid[], $2::int8[], $3::int[], $4::int[])
                     AS s(tracker_id, t, lat, lon)
               CROSS JOIN LATERAL (SELECT CASE WHEN s.t = -9223372036854775808
                                               THEN '-infinity'::timestamptz
                                               ELSE timestamptz '2000-01-01 00:00:00+00'
                                                    + s.t * interval '1 microsecond' END AS at) a
               WHERE h.tracker_id = s.tracker_id AND h.report_time >= a.at
                 AND (h.report_time, h.latitude_e7, h.longitude_e7) > (a.at, s.lat, s.lon)""",
            [state.trackers[i] for i in replaced.tolist()],
            state.after_us[replaced].tolist(),
            state.after_lat[replaced].tolist(),
            state.after_lon[replaced].tolist(),
        )
    done = np.flatnonzero(result.last >= 0)
    nch = len(result.change_tracker)
    if not len(done) and not nch:
        return
    trackers = uuid_values(c.trackers)
    locations = uuid_values(result.ids)
    if nch:
        r = result.change_row
        await stage(
            conn,
            "change_stage",
            _CHANGE_STAGE,
            [
                ("tracker_id", trackers[result.change_tracker]),
                ("report_time", c.time_us[r]),
                ("latitude_e7", c.latitude_e7[r].astype(np.int32)),
                ("longitude_e7", c.longitude_e7[r].astype(np.int32)),
                ("status", result.change_status.astype(np.int32)),
                ("previous", result.change_previous.astype(np.int32)),
                ("location_id", locations[result.change_location]),
                ("horizontal_accuracy_m", c.accuracy_m[r].astype(np.int32)),
                ("confidence", c.confidence[r].astype(np.int32)),
                ("nearest_city_id", c.city[r].astype(np.int32)),
                ("probability", result.change_probability),
                ("evidence_since", result.change_evidence_since),
            ],
        )
        await conn.execute(_HISTORY_SQL)
    if not len(done):
        return
    s: States = result.states
    last = result.last[done]
    stored = np.zeros(len(done), np.bool_) if state.stored is None else state.stored[done]
    await stage(
        conn,
        "status_stage",
        _STATUS_STAGE,
        [
            ("tracker_id", trackers[done]),
            ("stored", stored),
            ("status", s.status[done].astype(np.int32)),
            ("status_since", s.since[done]),
            ("location_id", locations[s.location[done]]),
            ("last_report_time", c.time_us[last]),
            ("last_latitude_e7", c.latitude_e7[last].astype(np.int32)),
            ("last_longitude_e7", c.longitude_e7[last].astype(np.int32)),
            ("last_accuracy_m", c.accuracy_m[last].astype(np.int32)),
            ("last_city_id", c.city[last].astype(np.int32)),
            ("pending", s.pending[done].astype(np.int32)),
            ("pending_count", s.pending_count[done].astype(np.int32)),
            ("pending_since", s.pending_since[done]),
            ("pending_location_id", locations[s.pending_location[done]]),
            ("probability", s.probability[done]),
            ("evidence_since", s.evidence_since[done]),
            ("transit", s.transit[done]),
            ("elsewhere", s.elsewhere[done]),
            ("fence", locations[s.fence[done]]),
            ("fence_kind", s.fence_kind[done].astype(np.int32)),
            ("fence_p", s.fence_p[done]),
            ("belief_time", s.belief_time[done]),
            ("onset_delivered", s.onsets[0, done]),
            ("onset_storage", s.onsets[1, done]),
            ("onset_transit", s.onsets[2, done]),
        ],
    )
    if stored.any():
        updated = await execute_by_probes(conn, _UPDATE_SQL)
        if int(updated.rsplit(" ", 1)[1]) != int(stored.sum()):
            # a stored checkpoint went missing meanwhile (the caller did not lock the
            # tracker): every stored one again, as an upsert (the others are the same rows
            # once more)
            await conn.execute(_UPSERT_SQL.format(which="st.stored"))
    if not stored.all():
        await conn.execute(_UPSERT_SQL.format(which="NOT st.stored"))
    wide = [i for i in done.tolist() if i in result.wide]
    if wide:  # beliefs wider than the slots (from the pure replay): as array texts
        texts = [belief_texts(result.wide[i]) for i in wide]
        await conn.execute(
            """UPDATE tracker_status s SET belief_ids = w.ids::uuid[],
                   belief_kinds = w.kinds::text[], belief_probabilities = w.ps::float8[],
                   belief_transit = NULL, belief_elsewhere = NULL, belief_fence_id = NULL,
                   belief_fence_kind = NULL, belief_fence_p = NULL
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS w(t, ids, kinds, ps)
               WHERE s.tracker_id = w.t""",
            [c.trackers[i] for i in wide],
            [t[0] for t in texts],
            [t[1] for t in texts],
            [t[2] for t in texts],
        )


__all__ = ["belief_texts", "save_columns", "state_columns"]
