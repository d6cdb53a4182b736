"""The status step of many trackers at once (issue 12, speed): the readings of a batch as
columns (numpy arrays, no object per report), and ``replay_batch``, which gives for every
tracker exactly what ``domain.status.replay`` gives for its readings.

The pure replay stays the reference. ``replay_batch`` runs the common cases report by report
across all trackers at once, with the same float operations in the same order as the pure
code (``math.erfc``/``math.expm1`` element by element, the rest IEEE arithmetic that numpy
does exactly as Python does), so its results are bit for bit the pure replay's:

- CONSECUTIVE rules without hysteresis (1 report, no dwell), from a state with nothing
  pending and no evidence-rule leftovers;
- EVIDENCE rules while the belief is "settled": in transit, or in transit and inside one
  fence, and each report is near no fence or near that fence only (or, in transit only,
  near one fence). That is every report of a tracker at rest, travelling or delivered.

A tracker that leaves these cases at any report (the first reports of a tracker, reports
near two fences, a hysteresis rule, ...) is replayed by ``domain.status.replay`` from its
start instead. A property test checks the batch against the pure replay, restarts from a
recorded change included.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from domain import evidence
from domain.evidence import ELSEWHERE, NearFence
from domain.model import LocationKind
from domain.status import (
    Observation,
    Reading,
    ReportKey,
    RuleKind,
    RuleState,
    StatusChange,
    StatusRule,
    TrackerStatus,
)

I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

# Times are microseconds since PostgreSQL's epoch (as its binary protocol sends them).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
NO_TIME = np.iinfo(np.int64).min  # "None" in a time column
# Status codes in the order of domain.status._PRIORITY (-1: none / tells nothing).
STATUSES = (TrackerStatus.DELIVERED, TrackerStatus.IN_STORAGE, TrackerStatus.IN_TRANSIT)
_CODE = {s: i for i, s in enumerate(STATUSES)}
KINDS = (LocationKind.DELIVERY, LocationKind.STORAGE)  # fence kind codes (-1: unknown)
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}


def to_us(t: datetime) -> int:
    d = t - EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _opt_time(us: int) -> datetime | None:
    return None if us == NO_TIME else from_us(us)


@dataclass(frozen=True, eq=False)
class ReadingColumns:
    """The readings of a batch of trackers, tracker by tracker in key order: tracker ``i``
    (``trackers[i]``) has rows ``start[i]:start[i + 1]``. Per row: its key, accuracy,
    confidence, city (-1: none), what it says under its run's rule (``status``: a code of
    ``STATUSES``, -1 tells nothing; ``location``: a fence index, -1 none) and, for EVIDENCE
    rules, the fences within reach (rows ``near_start[r]:near_start[r + 1]`` of
    ``near_fence``/``near_d``, by fence id). Fences are indexed into ``fence_ids``, with their
    kind code (-1: unknown, only named as a location) and radius."""

    trackers: tuple[uuid.UUID, ...]
    start: I64
    time_us: I64
    latitude_e7: I64
    longitude_e7: I64
    accuracy_m: I64
    confidence: I64
    city: I64
    status: I8
    location: I32
    near_start: I64
    near_fence: I32
    near_d: F64
    fence_ids: tuple[uuid.UUID, ...]
    fence_kind: I8
    fence_radius: F64

    def __len__(self) -> int:
        return len(self.time_us)

    def count(self, i: int) -> int:
        return int(self.start[i + 1] - self.start[i])

    def reading(self, r: int) -> Reading:
        """Row ``r`` as the pure replay's ``Reading``."""
        code = int(self.status[r])
        loc = int(self.location[r])
        near = tuple(
            NearFence(
                self.fence_ids[f],
                KINDS[int(self.fence_kind[f])],
                float(self.fence_radius[f]),
                float(d),
            )
            for f, d in zip(
                self.near_fence[self.near_start[r] : self.near_start[r + 1]].tolist(),
                self.near_d[self.near_start[r] : self.near_start[r + 1]].tolist(),
                strict=True,
            )
        )
        city = int(self.city[r])
        return Reading(
            ReportKey(
                from_us(int(self.time_us[r])),
                int(self.latitude_e7[r]),
                int(self.longitude_e7[r]),
            ),
            Observation(
                STATUSES[code] if code >= 0 else None,
                self.fence_ids[loc] if loc >= 0 else None,
                near,
            ),
            int(self.accuracy_m[r]),
            int(self.confidence[r]),
            city if city >= 0 else None,
        )

    def readings(self, i: int) -> list[Reading]:
        return [self.reading(r) for r in range(int(self.start[i]), int(self.start[i + 1]))]

    def as_dict(self) -> dict[uuid.UUID, list[Reading]]:
        return {t: self.readings(i) for i, t in enumerate(self.trackers) if self.count(i)}

    @classmethod
    def from_readings(
        cls, trackers: Sequence[uuid.UUID], readings: Mapping[uuid.UUID, Sequence[Reading]]
    ) -> ReadingColumns:
        """The columns of readings given as objects (fakes and tests)."""
        fences: dict[uuid.UUID, int] = {}
        kind: list[int] = []
        radius: list[float] = []

        def fence(i: uuid.UUID, k: LocationKind | None = None, r: float = math.nan) -> int:
            n = fences.get(i)
            if n is None:
                n = fences[i] = len(kind)
                kind.append(-1)
                radius.append(math.nan)
            if k is not None:
                kind[n], radius[n] = _KIND_CODE[k], r
            return n

        start = [0]
        rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        near_start = [0]
        near_fence: list[int] = []
        near_d: list[float] = []
        for t in trackers:
            for r in readings.get(t, ()):
                o = r.observation
                for f in o.near:
                    near_fence.append(fence(f.location_id, f.kind, f.radius_m))
                    near_d.append(f.distance_m)
                near_start.append(len(near_fence))
                rows.append(
                    (
                        to_us(r.key.report_time),
                        r.key.latitude_e7,
                        r.key.longitude_e7,
                        r.horizontal_accuracy_m,
                        r.confidence,
                        -1 if r.nearest_city_id is None else r.nearest_city_id,
                        -1 if o.status is None else _CODE[o.status],
                        -1 if o.location_id is None else fence(o.location_id),
                    )
                )
            start.append(len(rows))
        cols = np.array(rows, dtype=np.int64).reshape(-1, 8)
        return cls(
            trackers=tuple(trackers),
            start=np.array(start, dtype=np.int64),
            time_us=cols[:, 0].copy(),
            latitude_e7=cols[:, 1].copy(),
            longitude_e7=cols[:, 2].copy(),
            accuracy_m=cols[:, 3].copy(),
            confidence=cols[:, 4].copy(),
            city=cols[:, 5].copy(),
            status=cols[:, 6].astype(np.int8),
            location=cols[:, 7].astype(np.int32),
            near_start=np.array(near_start, dtype=np.int64),
            near_fence=np.array(near_fence, dtype=np.int32),
            near_d=np.array(near_d, dtype=np.float64),
            fence_ids=tuple(fences),
            fence_kind=np.array(kind, dtype=np.int8),
            fence_radius=np.array(radius, dtype=np.float64),
        )


Outcome = tuple[RuleState, list[StatusChange], Reading | None]


def replay_batch(
    starts: Sequence[tuple[RuleState, StatusRule]],
    columns: ReadingColumns,
    stats: dict[str, int] | None = None,
) -> list[Outcome]:
    """For tracker ``i`` of ``columns``, from ``starts[i]`` (its resume state and rule):
    ``domain.status.replay`` of its readings and its last reading, computed in bulk.
    ``stats`` (if given) counts the trackers done in bulk (``bulk``) and one by one
    (``pure``)."""
    from domain.status import replay

    n = len(columns.trackers)
    assert len(starts) == n
    counts = np.diff(columns.start)
    out: list[Outcome | None] = [None] * n
    plain = np.zeros(n, dtype=np.bool_)
    settled = np.zeros(n, dtype=np.bool_)
    for i, (state, rule) in enumerate(starts):
        if not counts[i]:
            continue
        if rule.kind is RuleKind.EVIDENCE:
            settled[i] = _settled(state)
        else:
            plain[i] = (
                rule.min_consecutive_reports == 1 and rule.min_dwell_s == 0 and _clean(state)
            )
    fallback = np.ones(n, dtype=np.bool_)
    if plain.any():
        fallback[_plain(np.flatnonzero(plain), starts, columns, out)] = False
    if settled.any():
        fallback[_evidence(np.flatnonzero(settled), starts, columns, out)] = False
    if stats is not None:
        stats["pure"] = stats.get("pure", 0) + int(fallback.sum())
        stats["bulk"] = stats.get("bulk", 0) + n - int(fallback.sum())
    for i in np.flatnonzero(fallback).tolist():
        rs = columns.readings(i)
        state, changes = replay(starts[i][0], rs, starts[i][1])
        out[i] = (state, changes, rs[-1] if rs else None)
    return [o for o in out if o is not None]


def _clean(s: RuleState) -> bool:
    """A CONSECUTIVE state the plain rule keeps as it is: nothing pending, nothing of the
    evidence rule."""
    return (
        s.pending is None
        and s.pending_count == 0
        and s.pending_since is None
        and s.pending_location_id is None
        and s.probability is None
        and not s.belief
        and s.belief_time is None
        and s.onsets == (None, None, None)
    )


def _settled(s: RuleState) -> bool:
    """An EVIDENCE state whose belief is in transit, or in transit and inside one fence."""
    b = s.belief
    if (
        s.pending is not None
        or s.pending_count
        or s.pending_since is not None
        or s.pending_location_id is not None
        or s.belief_time is None
        or not 1 <= len(b) <= 2
        or b[0][0] is not None
    ):
        return False
    return len(b) == 1 or (b[1][0] not in (None, ELSEWHERE) and b[1][1] is not None)


class _Ids:
    """Location ids of the batch and of the states, by index (-1: None)."""

    def __init__(self, fence_ids: Sequence[uuid.UUID]) -> None:
        self.ids: list[uuid.UUID] = list(fence_ids)
        self._index = {f: n for n, f in enumerate(self.ids)}

    def index(self, i: uuid.UUID | None) -> int:
        if i is None:
            return -1
        n = self._index.get(i)
        if n is None:
            n = self._index[i] = len(self.ids)
            self.ids.append(i)
        return n

    def get(self, n: int) -> uuid.UUID | None:
        return None if n < 0 else self.ids[n]


def _t(t: datetime | None) -> int:
    return NO_TIME if t is None else to_us(t)


def _plain(
    which: I64, starts: Sequence[tuple[RuleState, StatusRule]], c: ReadingColumns, out: list[Outcome | None]
) -> I64:
    """CONSECUTIVE, 1 report, no dwell: every reading that tells a status other than the
    current one changes it at once; one of the same status fills in a missing location."""
    ids = _Ids(c.fence_ids)
    m = len(which)
    status = np.empty(m, dtype=np.int64)
    since = np.empty(m, dtype=np.int64)
    loc = np.empty(m, dtype=np.int64)
    ev_since = np.empty(m, dtype=np.int64)
    for j, i in enumerate(which.tolist()):
        s = starts[i][0]
        status[j] = -1 if s.status is None else _CODE[s.status]
        since[j] = _t(s.status_since)
        loc[j] = ids.index(s.location_id)
        ev_since[j] = _t(s.evidence_since)
    first = c.start[which]
    count = c.start[which + 1] - first
    changes: list[tuple[int, int, int, int]] = []  # (tracker j, row, previous, location)
    for k in range(int(count.max())):
        live = np.flatnonzero(count > k)
        rows = first[live] + k
        seen = c.status[rows].astype(np.int64)
        obs_loc = c.location[rows].astype(np.int64)
        tells = seen >= 0
        cur = status[live]
        same = tells & (seen == cur)
        fill = same & (loc[live] < 0) & (obs_loc >= 0)
        loc[live[fill]] = obs_loc[fill]
        new = tells & ~same
        if new.any():
            jj, rr = live[new], rows[new]
            changes += zip(
                jj.tolist(), rr.tolist(), cur[new].tolist(), obs_loc[new].tolist(), strict=True
            )
            t = c.time_us[rr]
            status[jj], since[jj], loc[jj], ev_since[jj] = seen[new], t, obs_loc[new], t
    per: dict[int, list[StatusChange]] = {}
    for j, r, prev, where in sorted(changes):
        per.setdefault(j, []).append(
            _change(c, r, STATUSES[int(c.status[r])], prev, ids.get(where), None, None)
        )
    for j, i in enumerate(which.tolist()):
        # (equal to the pure replay's: a clean state has no other fields)
        state = RuleState(
            STATUSES[int(status[j])] if status[j] >= 0 else None,
            _opt_time(int(since[j])),
            ids.get(int(loc[j])),
            evidence_since=_opt_time(int(ev_since[j])),
        )
        out[i] = (state, per.get(j, []), c.reading(int(first[j] + count[j] - 1)))
    return which


def _change(
    c: ReadingColumns,
    r: int,
    status: TrackerStatus,
    previous: int,
    where: uuid.UUID | None,
    probability: float | None,
    since_us: int | None,
) -> StatusChange:
    city = int(c.city[r])
    t = from_us(int(c.time_us[r]))
    return StatusChange(
        key=ReportKey(t, int(c.latitude_e7[r]), int(c.longitude_e7[r])),
        status=status,
        previous=STATUSES[previous] if previous >= 0 else None,
        location_id=where,
        horizontal_accuracy_m=int(c.accuracy_m[r]),
        confidence=int(c.confidence[r]),
        nearest_city_id=city if city >= 0 else None,
        probability=probability,
        evidence_since=t if since_us is None else from_us(since_us),
    )


def _map(f: Any, x: F64) -> F64:
    """``f`` (a ``math`` function) element by element: the pure replay's own results."""
    return np.fromiter(map(f, x.tolist()), dtype=np.float64, count=len(x))


def _evidence(
    which: I64, starts: Sequence[tuple[RuleState, StatusRule]], c: ReadingColumns, out: list[Outcome | None]
) -> I64:
    """The evidence rule while beliefs are settled (see the module's docstring); returns the
    trackers done (the others left for the pure replay)."""
    ids = _Ids(c.fence_ids)
    m = len(which)
    pa = np.empty(m)  # P(in transit)
    pb = np.zeros(m)  # P(inside fence hb)
    hb = np.full(m, -1, dtype=np.int64)  # the fence (index into ids), -1: none
    hk = np.full(m, -1, dtype=np.int64)  # its kind code
    btime = np.empty(m, dtype=np.int64)
    onsets = np.empty((3, m), dtype=np.int64)
    status = np.empty(m, dtype=np.int64)
    since = np.empty(m, dtype=np.int64)
    loc = np.empty(m, dtype=np.int64)
    prob = np.empty(m)
    ev_since = np.empty(m, dtype=np.int64)
    min_p = np.empty(m)
    share_o = np.empty(m)
    for j, i in enumerate(which.tolist()):
        s, rule = starts[i]
        pa[j] = s.belief[0][2]
        if len(s.belief) == 2:
            h, kind, p = s.belief[1]
            assert kind is not None
            hb[j], hk[j], pb[j] = ids.index(h), _KIND_CODE[kind], p
        btime[j] = _t(s.belief_time)
        for x in range(3):
            onsets[x, j] = _t(s.onsets[x])
        status[j] = -1 if s.status is None else _CODE[s.status]
        since[j] = _t(s.status_since)
        loc[j] = ids.index(s.location_id)
        prob[j] = math.nan if s.probability is None else s.probability
        ev_since[j] = _t(s.evidence_since)
        min_p[j], share_o[j] = rule.min_probability, rule.outlier_share
    # the batch's fence indices are the first in ids, so fence tables index by them too
    fkind = c.fence_kind.astype(np.int64)
    frad = c.fence_radius
    first = c.start[which]
    count = c.start[which + 1] - first
    ok = np.ones(m, dtype=np.bool_)
    changes: list[tuple[int, int, int, int, int, float, int]] = []
    factor = np.array([4.0, 4.0, 2.0, 1.0])  # CONFIDENCE_OUTLIER_FACTOR, 4.0 otherwise
    assert evidence.CONFIDENCE_OUTLIER_FACTOR == {1: 4.0, 2: 2.0, 3: 1.0}
    for k in range(int(count.max())):
        live = np.flatnonzero((count > k) & ok)
        if not len(live):
            break
        rows = first[live] + k
        nn = c.near_start[rows + 1] - c.near_start[rows]
        one = nn == 1
        nf = np.full(len(rows), -1, dtype=np.int64)
        nf[one] = c.near_fence[c.near_start[rows[one]]]
        h = hb[live]
        fits = ((h < 0) & (nn <= 1)) | ((h >= 0) & ((nn == 0) | ((nn == 1) & (nf == h))))
        ok[live[~fits]] = False
        live, rows, nn, nf, h = live[fits], rows[fits], nn[fits], nf[fits], h[fits]
        t = c.time_us[rows]
        # the step (not for a belief in transit only, far from every fence)
        stepping = (h >= 0) | (nn == 1)
        sj, sr = live[stepping], rows[stepping]
        if len(sj):
            near = nn[stepping] == 1
            held = h[stepping] >= 0
            f = np.where(held, h[stepping], nf[stepping])
            kind = hk[sj].copy()
            kind[~held] = fkind[f[~held]]
            transit, p = pa[sj], pb[sj]
            dt = (t[stepping] - btime[sj]) / 1e6
            moving = dt > 0
            dwell = np.where(kind == 0, evidence.DELIVERED_DWELL_S, evidence.STORAGE_DWELL_S)
            e_dwell = -_map(math.expm1, -dt / dwell)
            e_enter = -_map(math.expm1, -dt / evidence.ENTER_S)
            out_ = p * e_dwell
            p = np.where(moving, p - out_, p)
            transit = np.where(moving, transit + out_, transit)
            moved = transit * e_enter
            enter = moving & near
            p = np.where(enter, p + moved, p)
            transit = np.where(enter, transit - moved, transit)
            acc = c.accuracy_m[sr].astype(np.float64)
            sigma = np.maximum(acc / evidence.ACCURACY_SIGMAS, evidence.MIN_SIGMA_M)
            conf = c.confidence[sr]
            fac = factor[np.where((conf >= 1) & (conf <= 3), conf, 0)]
            eps = np.minimum(share_o[sj] * fac, 0.5)
            base = eps * evidence._OUTLIER_DENSITY
            keep = 1.0 - eps
            d = np.zeros(len(sj))
            radius = np.zeros(len(sj))
            share = np.zeros(len(sj))
            if near.any():
                d[near] = c.near_d[c.near_start[sr[near]]]
                radius[near] = frad[f[near]]
                arg = (d[near] - radius[near]) * (1.0 / (sigma[near] * evidence._SQRT2))
                share[near] = 0.5 * _map(math.erfc, arg)
            a = transit * (keep * evidence._TRANSIT_DENSITY * (1.0 - share) + base)
            inside = share / (math.pi * (radius * radius + sigma * sigma))
            b = p * (keep * inside + base)
            total = a + b
            nb = b / total
            gone = nb < evidence.PRUNE_P
            pa[sj] = a / total
            pb[sj] = np.where(gone, 0.0, nb)
            hb[sj] = np.where(gone, -1, f)
            hk[sj] = np.where(gone, -1, kind)
        btime[live] = t
        # tally: mass of DELIVERED, IN_STORAGE, IN_TRANSIT
        hl, kl, pl = hb[live], hk[live], pb[live]
        mass = np.zeros((3, len(live)))
        mass[2] = pa[live]
        for x in (0, 1):
            mass[x] = np.where((hl >= 0) & (kl == x), 0.0 + pl, 0.0)
        m0, m1, m2 = mass
        top = np.where((m0 >= m1) & (m0 >= m2), 0, np.where(m1 >= m2, 1, 2))
        cur = status[live]
        for x in (0, 1, 2):
            o = onsets[x, live]
            o = np.where((mass[x] < evidence.ONSET_P) | (cur == x), NO_TIME,
                         np.where(o == NO_TIME, t, o))
            onsets[x, live] = o
        mtop = mass[top, np.arange(len(live))]
        new = (top != cur) & (mtop >= min_p[live])
        if new.any():
            jj, rr, tt, mt = live[new], rows[new], top[new], mtop[new]
            best = np.where((tt < 2) & (hl[new] >= 0) & (kl[new] == tt), hl[new], -1)
            es = onsets[tt, jj]
            es = np.where(es == NO_TIME, t[new], es)
            changes += zip(
                jj.tolist(), rr.tolist(), cur[new].tolist(), tt.tolist(), best.tolist(),
                mt.tolist(), es.tolist(), strict=True,
            )  # fmt: skip
            status[jj], since[jj], loc[jj], prob[jj], ev_since[jj] = tt, t[new], best, mt, es
            # evidence.reset: the decided fence at its probability, the rest in transit
            fence = best >= 0
            pa[jj] = np.where(fence, 1.0 - mt, 1.0)
            pb[jj] = np.where(fence, mt, 0.0)
            hb[jj] = best
            hk[jj] = np.where(fence, tt, -1)
            onsets[:, jj] = NO_TIME
    done = which[ok]
    per: dict[int, list[StatusChange]] = {}
    for j, r, prev, top_, where, p_, es_ in sorted(changes):
        if ok[j]:
            per.setdefault(j, []).append(
                _change(c, r, STATUSES[top_], prev, ids.get(where), p_, es_)
            )
    for j, i in enumerate(which.tolist()):
        if not ok[j]:
            continue
        belief: evidence.Belief = ((None, None, float(pa[j])),)
        if hb[j] >= 0:
            belief += ((ids.get(int(hb[j])), KINDS[int(hk[j])], float(pb[j])),)
        state = RuleState(
            STATUSES[int(status[j])] if status[j] >= 0 else None,
            _opt_time(int(since[j])),
            ids.get(int(loc[j])),
            probability=None if math.isnan(prob[j]) else float(prob[j]),
            evidence_since=_opt_time(int(ev_since[j])),
            belief=belief,
            belief_time=_opt_time(int(btime[j])),
            onsets=tuple(_opt_time(int(onsets[x, j])) for x in range(3)),
        )
        out[i] = (state, per.get(j, []), c.reading(int(first[j] + count[j] - 1)))
    return done
