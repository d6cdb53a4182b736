"""The status step of many trackers at once (issue 12, speed): the readings of a batch as
columns (numpy arrays, no object per report), and ``replay_batch``, which gives for every
tracker exactly what ``domain.status.replay`` gives for its readings.

The pure replay stays the reference. ``replay_batch`` runs the common cases report by report
across all trackers at once, with the same float operations in the same order as the pure
code (``math.erfc``/``math.expm1`` element by element, the rest IEEE arithmetic that numpy
does exactly as Python does), so its results are bit for bit the pure replay's:

- CONSECUTIVE rules without hysteresis (1 report, no dwell), from a state with nothing
  pending and no evidence-rule leftovers;
- EVIDENCE rules while the belief is "settled": in transit, or in transit and one other
  hypothesis (a fence, or ``evidence.ELSEWHERE`` before the first status), and each report
  is near no fence or near that fence only (or, in transit only, near one fence); a fresh
  tracker too if its first report is near no fence. That is every report of a tracker at
  rest, travelling or delivered.

A tracker that leaves these cases at any report (a fresh tracker first seen near a fence,
reports near two fences, moving from one fence to another, a hysteresis rule, ...) is
replayed by ``domain.status.replay`` from its start instead. A property test checks the
batch against the pure replay, restarts from a recorded change included.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
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
    replay,
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
        return self.rows([r])[0]

    def readings(self, i: int) -> list[Reading]:
        return self.rows(range(int(self.start[i]), int(self.start[i + 1])))

    def rows(self, rows: Sequence[int] | I64) -> list[Reading]:
        """Rows as the pure replay's ``Reading`` objects (gathered column by column: one
        numpy call per column, not per value)."""
        idx = np.asarray(rows, dtype=np.int64)
        if not len(idx):
            return []
        ns, ne = self.near_start[idx], self.near_start[idx + 1]
        lo, hi = int(ns.min()), int(ne.max())
        ns, ne = (ns - lo).tolist(), (ne - lo).tolist()
        fences = self._fences
        near_f, near_d = self.near_fence[lo:hi].tolist(), self.near_d[lo:hi].tolist()
        ids = self.fence_ids
        return [
            Reading(
                ReportKey(from_us(t), lat, lon),
                Observation(
                    STATUSES[code] if code >= 0 else None,
                    ids[loc] if loc >= 0 else None,
                    tuple(fences[near_f[x]](near_d[x]) for x in range(a, b)) if b > a else (),
                ),
                acc,
                conf,
                city if city >= 0 else None,
            )
            for t, lat, lon, acc, conf, city, code, loc, a, b in zip(
                self.time_us[idx].tolist(),
                self.latitude_e7[idx].tolist(),
                self.longitude_e7[idx].tolist(),
                self.accuracy_m[idx].tolist(),
                self.confidence[idx].tolist(),
                self.city[idx].tolist(),
                self.status[idx].tolist(),
                self.location[idx].tolist(),
                ns,
                ne,
                strict=True,
            )
        ]

    @cached_property
    def _fences(self) -> list[Any]:
        kinds, radii = self.fence_kind.tolist(), self.fence_radius.tolist()
        return [
            partial(NearFence, i, KINDS[k], r) if k >= 0 else None
            for i, k, r in zip(self.fence_ids, kinds, radii, strict=True)
        ]

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
            plain[i] = rule.min_consecutive_reports == 1 and rule.min_dwell_s == 0 and _clean(state)
    fallback = np.ones(n, dtype=np.bool_)
    if plain.any():
        fallback[_plain(np.flatnonzero(plain), starts, columns, out)] = False
    if settled.any():
        fallback[_evidence(np.flatnonzero(settled), starts, columns, out)] = False
    if stats is not None:
        stats["pure"] = stats.get("pure", 0) + int(fallback.sum())
        stats["bulk"] = stats.get("bulk", 0) + n - int(fallback.sum())
    pure = np.flatnonzero(fallback)
    lo, hi = columns.start[pure], columns.start[pure + 1]
    every = columns.rows(_ranges(lo, hi))
    at = 0
    for i, k in zip(pure.tolist(), (hi - lo).tolist(), strict=True):
        rs, at = every[at : at + k], at + k
        state, changes = replay(starts[i][0], rs, starts[i][1])
        out[i] = (state, changes, rs[-1] if rs else None)
    return [o for o in out if o is not None]


def _ranges(lo: I64, hi: I64) -> I64:
    """The concatenation of ``range(lo[i], hi[i])``."""
    width = hi - lo
    return np.repeat(lo - (np.cumsum(width) - width), width) + np.arange(int(width.sum()))


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


_FRESH = RuleState()
_ELSEWHERE_KIND = 2  # the kind code of evidence.ELSEWHERE in the bulk path


def _settled(s: RuleState) -> bool:
    """An EVIDENCE state whose belief is in transit, or in transit and one other hypothesis
    (a fence, or evidence.ELSEWHERE); or a fresh state (whose first reading must then be
    near no fence, for a belief of transit and ELSEWHERE)."""
    b = s.belief
    if s == _FRESH:
        return True
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
    if len(b) == 1:
        return True
    h, kind, _ = b[1]
    return (h == ELSEWHERE and kind is None) or (h not in (None, ELSEWHERE) and kind is not None)


class _Ids:
    """Location ids of the batch and of the states, by index (-1: None)."""

    def __init__(self, fence_ids: Sequence[uuid.UUID]) -> None:
        self.ids: list[uuid.UUID] = list(fence_ids)
        self._index = {f.int: n for n, f in enumerate(self.ids)}  # (ints hash in C)

    def index(self, i: uuid.UUID | None) -> int:
        if i is None:
            return -1
        n = self._index.get(i.int)
        if n is None:
            n = self._index[i.int] = len(self.ids)
            self.ids.append(i)
        return n

    def get(self, n: int) -> uuid.UUID | None:
        return None if n < 0 else self.ids[n]


class _Times:
    """Times to microseconds and back, each distinct one converted once."""

    def __init__(self) -> None:
        self._us: dict[datetime, int] = {}
        self._t: dict[int, datetime | None] = {NO_TIME: None}

    def us(self, t: datetime | None) -> int:
        if t is None:
            return NO_TIME
        v = self._us.get(t)
        if v is None:
            v = self._us[t] = to_us(t)
        return v

    def time(self, us: int) -> datetime | None:
        try:
            return self._t[us]
        except KeyError:
            v = self._t[us] = from_us(us)
            return v


def _plain(
    which: I64,
    starts: Sequence[tuple[RuleState, StatusRule]],
    c: ReadingColumns,
    out: list[Outcome | None],
) -> I64:
    """CONSECUTIVE, 1 report, no dwell: every reading that tells a status other than the
    current one changes it at once; one of the same status fills in a missing location."""
    ids = _Ids(c.fence_ids)
    t_ = _Times()
    cols: list[list[int]] = [[], [], [], []]
    for i in which.tolist():
        s = starts[i][0]
        cols[0].append(-1 if s.status is None else STATUSES.index(s.status))
        cols[1].append(t_.us(s.status_since))
        cols[2].append(ids.index(s.location_id))
        cols[3].append(t_.us(s.evidence_since))
    status, since, loc, ev_since = (np.array(x, dtype=np.int64) for x in cols)
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
    per = _changes(
        c,
        ids,
        t_,
        [(j, r, int(c.status[r]), prev, where, None, None) for j, r, prev, where in changes],
    )
    lasts = c.rows(first + count - 1)
    codes = (None, *STATUSES)
    for j, (i, last, st, si, lo, es) in enumerate(
        zip(
            which.tolist(),
            lasts,
            *(x.tolist() for x in (status, since, loc, ev_since)),
            strict=True,
        )
    ):
        # (equal to the pure replay's: a clean state has no other fields)
        state = RuleState(codes[st + 1], t_.time(si), ids.get(lo), evidence_since=t_.time(es))
        out[i] = (state, per.get(j, []), last)
    return which


def _changes(
    c: ReadingColumns,
    ids: _Ids,
    t_: _Times,
    items: list[tuple[int, int, int, int, int, float | None, int | None]],
) -> dict[int, list[StatusChange]]:
    """The changes by tracker, from (tracker j, row, status code, previous code, location
    index, probability, evidence since in us; None: the row's time), gathered by column."""
    per: dict[int, list[StatusChange]] = {}
    if not items:
        return per
    items.sort()
    rows = np.array([x[1] for x in items], dtype=np.int64)
    cols = (c.time_us, c.latitude_e7, c.longitude_e7, c.accuracy_m, c.confidence, c.city)
    for (j, _, code, prev, where, p, since), t, lat, lon, acc, conf, city in zip(
        items, *(x[rows].tolist() for x in cols), strict=True
    ):
        at = t_.time(t)
        per.setdefault(j, []).append(
            StatusChange(
                key=ReportKey(at, lat, lon),  # type: ignore[arg-type]
                status=STATUSES[code],
                previous=STATUSES[prev] if prev >= 0 else None,
                location_id=ids.get(where),
                horizontal_accuracy_m=acc,
                confidence=conf,
                nearest_city_id=city if city >= 0 else None,
                probability=p,
                evidence_since=at if since is None else t_.time(since),
            )
        )
    return per


def _map(f: Any, x: F64) -> F64:
    """``f`` (a ``math`` function) element by element: the pure replay's own results."""
    return np.fromiter(map(f, x.tolist()), dtype=np.float64, count=len(x))


def _evidence(
    which: I64,
    starts: Sequence[tuple[RuleState, StatusRule]],
    c: ReadingColumns,
    out: list[Outcome | None],
) -> I64:
    """The evidence rule while beliefs are settled (see the module's docstring); returns the
    trackers done (the others left for the pure replay)."""
    ids = _Ids(c.fence_ids)
    m = len(which)
    t_ = _Times()
    cols: list[list[Any]] = [[] for _ in range(15)]
    fresh: list[bool] = []
    for i in which.tolist():
        s, rule = starts[i]
        h, kind, p = s.belief[1] if len(s.belief) == 2 else (None, None, 0.0)
        fresh.append(not s.belief)
        for col, v in zip(
            cols,
            (
                s.belief[0][2] if s.belief else 1.0, p, ids.index(h),
                (_ELSEWHERE_KIND if h == ELSEWHERE else -1) if kind is None else _KIND_CODE[kind],
                t_.us(s.belief_time), *map(t_.us, s.onsets),
                -1 if s.status is None else STATUSES.index(s.status), t_.us(s.status_since),
                ids.index(s.location_id), math.nan if s.probability is None else s.probability,
                t_.us(s.evidence_since), rule.min_probability, rule.outlier_share,
            ),
            strict=True,
        ):  # fmt: skip
            col.append(v)
    pa, pb = np.array(cols[0], dtype=np.float64), np.array(cols[1], dtype=np.float64)
    hb, hk = np.array(cols[2], dtype=np.int64), np.array(cols[3], dtype=np.int64)
    btime = np.array(cols[4], dtype=np.int64)
    onsets = np.array(cols[5:8], dtype=np.int64).reshape(3, m)
    status, since = np.array(cols[8], dtype=np.int64), np.array(cols[9], dtype=np.int64)
    loc, prob = np.array(cols[10], dtype=np.int64), np.array(cols[11], dtype=np.float64)
    ev_since = np.array(cols[12], dtype=np.int64)
    min_p, share_o = np.array(cols[13], dtype=np.float64), np.array(cols[14], dtype=np.float64)
    new_ = np.array(fresh, dtype=np.bool_)
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
        t = c.time_us[rows]
        if k == 0 and new_.any():
            # evidence.initial_belief(()) for a first reading near no fence: in transit or
            # inside some fence elsewhere, alike; the first step has dt = 0
            f0 = new_[live]
            ok[live[f0 & (nn > 0)]] = False
            s0 = live[f0 & (nn == 0)]
            pa[s0], pb[s0], hb[s0], hk[s0] = 0.5, 0.5, ids.index(ELSEWHERE), _ELSEWHERE_KIND
            btime[s0] = t[f0 & (nn == 0)]
            keep_ = ~f0 | (nn == 0)
            live, rows, nn, nf, t = live[keep_], rows[keep_], nn[keep_], nf[keep_], t[keep_]
        h = hb[live]
        fits = ((h < 0) & (nn <= 1)) | ((h >= 0) & ((nn == 0) | ((nn == 1) & (nf == h))))
        ok[live[~fits]] = False
        live, rows, nn, nf, h, t = live[fits], rows[fits], nn[fits], nf[fits], h[fits], t[fits]
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
            o = np.where(
                (mass[x] < evidence.ONSET_P) | (cur == x), NO_TIME, np.where(o == NO_TIME, t, o)
            )
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
    per = _changes(
        c,
        ids,
        t_,
        [(j, r, top_, prev, w, p_, es_) for j, r, prev, top_, w, p_, es_ in changes if ok[j]],
    )
    sel = np.flatnonzero(ok)
    lasts = c.rows(first[sel] + count[sel] - 1)
    kinds = (None, *KINDS, None)  # codes -1, 0, 1 and _ELSEWHERE_KIND
    codes = (None, *STATUSES)
    for j, i, last, a, h, k, b, st, si, lo, pr, es, bt, o0, o1, o2 in zip(
        sel.tolist(), which[sel].tolist(), lasts,
        *(x[sel].tolist() for x in (pa, hb, hk, pb, status, since, loc, prob, ev_since, btime)),
        *(onsets[x, sel].tolist() for x in range(3)),
        strict=True,
    ):  # fmt: skip
        belief: evidence.Belief = ((None, None, a),)
        if h >= 0:
            belief += ((ids.get(h), kinds[k + 1], b),)
        state = RuleState(
            codes[st + 1],
            t_.time(si),
            ids.get(lo),
            probability=None if pr != pr else pr,  # NaN: None
            evidence_since=t_.time(es),
            belief=belief,
            belief_time=t_.time(bt),
            onsets=(t_.time(o0), t_.time(o1), t_.time(o2)),
        )
        out[i] = (state, per.get(j, []), last)
    return done
