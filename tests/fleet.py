"""A noisy fleet with ground truth, and how well a status rule does on it.

Each tracker dwells in its run's storage, travels to its delivery location (some passing a
second delivery fence of the run at a few times its radius without entering), dwells there,
and some return to storage. Reports come at irregular gaps with Find My-like stated
accuracies (log-normal, median ``accuracy_median_m``) and confidences; the true error is
Gaussian at the stated accuracy (about the 68 % circle), except for a share of outliers that
lie hundreds of metres to kilometres away. Seeded: the same config gives the same fleet.

``score`` replays every tracker's reports under a rule (``domain.status.replay``, the very
function the worker runs) and compares the recorded changes with the truth.
"""

from __future__ import annotations

import math
import random
import statistics
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.model import GeoPoint, LocationKind
from domain.status import (
    Fence,
    Reading,
    ReportKey,
    RuleState,
    StatusChange,
    StatusRule,
    TrackerStatus,
    classify,
    replay,
)

D, S, T = TrackerStatus.DELIVERED, TrackerStatus.IN_STORAGE, TrackerStatus.IN_TRANSIT
START = datetime(2026, 11, 23, tzinfo=UTC)
_M_PER_DEG = 111_195.0


@dataclass(frozen=True, slots=True)
class FleetConfig:
    trackers: int = 1000
    days: float = 7.0
    storage_radius_m: float = 150.0
    delivery_radius_m: float = 100.0
    mean_gap_s: float = 1800.0  # irregular: a minimum plus an exponential part
    min_gap_s: float = 120.0
    long_gap_share: float = 0.01  # gaps of 2-8 hours (no finder passing by)
    accuracy_median_m: float = 35.0
    accuracy_spread: float = 0.5  # sigma of log(accuracy)
    confidence_weights: tuple[float, float, float] = (0.1, 0.3, 0.6)  # 1, 2, 3
    outlier_share: float = 0.03
    outlier_min_m: float = 300.0
    outlier_max_m: float = 3000.0
    return_share: float = 0.1
    near_pass_share: float = 0.3
    speed_kmh: float = 40.0
    seed: int = 1


@dataclass(frozen=True, slots=True)
class FleetReport:
    time: datetime
    position: GeoPoint
    accuracy_m: int
    confidence: int
    truth: TrackerStatus
    outlier: bool


@dataclass(slots=True)
class FleetTracker:
    tracker_id: uuid.UUID
    fences: list[Fence]
    truth: list[tuple[datetime, TrackerStatus]]  # segment starts, in order
    reports: list[FleetReport] = field(default_factory=list)


def _offset(origin: GeoPoint, east_m: float, north_m: float) -> GeoPoint:
    lat = origin.latitude + north_m / _M_PER_DEG
    lon = origin.longitude + east_m / (_M_PER_DEG * math.cos(math.radians(origin.latitude)))
    return GeoPoint(lat, lon)


def _in_disc(rng: random.Random, radius_m: float) -> tuple[float, float]:
    r, a = radius_m * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    return r * math.cos(a), r * math.sin(a)


def make_fleet(cfg: FleetConfig) -> list[FleetTracker]:
    rng = random.Random(cfg.seed)
    fleet = []
    for n in range(cfg.trackers):
        # local plane in metres around a base point per tracker, converted to lat/lon
        base = GeoPoint(48.0 + (n % 50) * 0.1, 8.0 + (n // 50 % 50) * 0.1)
        ang = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(10_000, 60_000)
        delivery_xy = (dist * math.cos(ang), dist * math.sin(ang))
        fences = [
            Fence(uuid.UUID(int=n * 4 + 1), LocationKind.STORAGE, base, cfg.storage_radius_m),
            Fence(
                uuid.UUID(int=n * 4 + 2),
                LocationKind.DELIVERY,
                _offset(base, *delivery_xy),
                cfg.delivery_radius_m,
            ),
        ]
        # where the tracker truly is: a list of (start, end, status, position function)
        legs: list[tuple[float, float, TrackerStatus, tuple[float, float], tuple[float, float]]]
        legs = []
        total = cfg.days * 86400
        stay = _in_disc(rng, cfg.storage_radius_m * 0.8)
        t = 0.0
        t_leave = rng.uniform(0.3, 2.0) * 86400
        legs.append((t, t_leave, S, stay, stay))
        travel = dist / (cfg.speed_kmh / 3.6) * rng.uniform(1.0, 1.5)
        drop = _in_disc(rng, cfg.delivery_radius_m * 0.8)
        drop = (delivery_xy[0] + drop[0], delivery_xy[1] + drop[1])
        # leaving and entering happen at the fence edge: the leg is edge to edge
        legs.append((t_leave, t_leave + travel, T, stay, drop))
        if rng.random() < cfg.near_pass_share:
            # a second delivery fence of the run beside the road, 1.5-3 radii away from it
            f = rng.uniform(0.3, 0.7)
            side = rng.uniform(1.5, 3.0) * cfg.delivery_radius_m * rng.choice((-1, 1))
            px, py = stay[0] + f * (drop[0] - stay[0]), stay[1] + f * (drop[1] - stay[1])
            nx, ny = -(drop[1] - stay[1]), drop[0] - stay[0]
            norm = math.hypot(nx, ny)
            fences.append(
                Fence(
                    uuid.UUID(int=n * 4 + 3),
                    LocationKind.DELIVERY,
                    _offset(base, px + nx / norm * side, py + ny / norm * side),
                    cfg.delivery_radius_m,
                )
            )
        t = t_leave + travel
        if rng.random() < cfg.return_share:
            back = t + rng.uniform(0.5, 2.0) * 86400
            legs.append((t, back, D, drop, drop))
            stay2 = _in_disc(rng, cfg.storage_radius_m * 0.8)
            legs.append((back, back + travel, T, drop, stay2))
            legs.append((back + travel, max(total, back + travel) + 1, S, stay2, stay2))
        else:
            legs.append((t, max(total, t) + 1, D, drop, drop))
        truth: list[tuple[datetime, TrackerStatus]] = []
        for a, _, status, _, _ in legs:
            if a < total and (not truth or truth[-1][1] is not status):
                truth.append((START + timedelta(seconds=a), status))
        tracker = FleetTracker(uuid.UUID(int=n + 1), fences, truth)
        now = rng.uniform(0, cfg.mean_gap_s)
        leg = 0
        while now < total:
            while legs[leg][1] <= now:
                leg += 1
            a, b, status, p0, p1 = legs[leg]
            f = (now - a) / (b - a) if b > a else 0.0
            x, y = p0[0] + f * (p1[0] - p0[0]), p0[1] + f * (p1[1] - p0[1])
            if status is T:  # true status along the road: the fences decide, not the leg
                status = _true_status(base, x, y, fences)
            acc = min(5000, max(5, round(cfg.accuracy_median_m * math.exp(
                rng.gauss(0, cfg.accuracy_spread)))))  # fmt: skip
            conf = rng.choices((1, 2, 3), cfg.confidence_weights)[0]
            outlier = rng.random() < cfg.outlier_share
            if outlier:
                d, a2 = rng.uniform(cfg.outlier_min_m, cfg.outlier_max_m), rng.uniform(0, 6.3)
                ex, ny_ = d * math.cos(a2), d * math.sin(a2)
            else:
                sigma = acc / 1.5
                ex, ny_ = rng.gauss(0, sigma), rng.gauss(0, sigma)
            tracker.reports.append(
                FleetReport(
                    START + timedelta(seconds=round(now)),
                    _offset(base, x + ex, y + ny_),
                    acc,
                    conf,
                    status,
                    outlier,
                )
            )
            if rng.random() < cfg.long_gap_share:
                now += rng.uniform(2, 8) * 3600
            else:
                now += cfg.min_gap_s + rng.expovariate(1 / (cfg.mean_gap_s - cfg.min_gap_s))
        fleet.append(tracker)
    return fleet


def _true_status(base: GeoPoint, x: float, y: float, fences: list[Fence]) -> TrackerStatus:
    """Where the truth is, by the same priority as the rule (delivery > storage > transit)."""
    p = _offset(base, x, y)
    found = classify(p, 0, fences, StatusRule.plain()).status
    return found or T


def readings_of(tracker: FleetTracker, rule: StatusRule) -> list[tuple[Reading, FleetReport]]:
    out = []
    for r in tracker.reports:
        if r.confidence < rule.min_confidence:
            continue
        key = ReportKey(r.time, round(r.position.latitude * 1e7), round(r.position.longitude * 1e7))
        seen = classify(r.position, r.accuracy_m, tracker.fences, rule)
        out.append((Reading(key, seen, r.accuracy_m, r.confidence), r))
    return out


@dataclass(frozen=True, slots=True)
class Score:
    rule: str
    trackers: int
    tracker_weeks: float
    reports: int
    changes: int
    false_changes: int
    wrong_report_share: float
    deliveries: int
    deliveries_detected: int
    storage_arrivals: int
    storage_detected: int
    delays_s: tuple[float, ...]  # deliveries: first report truly inside -> detection
    evidence_lead_s: tuple[float, ...]  # detection -> its evidence_since (how far back)

    @property
    def false_per_tracker_week(self) -> float:
        return self.false_changes / self.tracker_weeks

    def delay_quantile(self, q: float) -> float:
        if not self.delays_s:
            return math.nan
        s = sorted(self.delays_s)
        return s[min(len(s) - 1, int(q * len(s)))]

    def within(self, seconds: float) -> float:
        return sum(1 for d in self.delays_s if d <= seconds) / max(self.deliveries, 1)


def _truth_at(truth: list[tuple[datetime, TrackerStatus]], t: datetime) -> TrackerStatus:
    status = truth[0][1]
    for start, s in truth:
        if start <= t:
            status = s
    return status


def score(name: str, fleet: list[FleetTracker], rule: StatusRule, days: float) -> Score:
    false = changes_n = reports_n = wrong = 0
    deliveries = detected = arrivals = arrivals_detected = 0
    delays: list[float] = []
    leads: list[float] = []
    for tr in fleet:
        pairs = readings_of(tr, rule)
        _, changes = replay(RuleState(), [r for r, _ in pairs], rule)
        changes_n += len(changes)
        # the status after each report, and which recorded changes were false
        status: TrackerStatus | None = None
        it = iter(changes)
        nxt: StatusChange | None = next(it, None)
        true_statuses = [r.truth for _, r in pairs]
        for (reading, _), truth in zip(pairs, true_statuses, strict=True):
            while nxt is not None and nxt.key <= reading.key:
                status, nxt = nxt.status, next(it, None)
            reports_n += 1
            wrong += status is not truth
        # true status changes as seen at report times (a stay between two reports is
        # invisible to any rule, and not counted against it)
        seen_truth: list[tuple[datetime, TrackerStatus]] = []
        for (reading, _), truth in zip(pairs, true_statuses, strict=True):
            if not seen_truth or seen_truth[-1][1] is not truth:
                seen_truth.append((reading.key.report_time, truth))
        prev: datetime | None = None
        for c in changes:
            t = c.key.report_time
            ok = any(
                s is c.status and (prev is None or start > prev) and start <= t
                for start, s in seen_truth
            )
            false += not ok
            prev = t
        # arrivals: the first report truly inside, then the first change to that status
        # within the stay
        for i, (start, s) in enumerate(seen_truth):
            if s is T:
                continue
            stop = seen_truth[i + 1][0] if i + 1 < len(seen_truth) else None
            hit = next(
                (
                    c
                    for c in changes
                    if c.status is s
                    and c.key.report_time >= start
                    and (stop is None or c.key.report_time < stop)
                ),
                None,
            )
            already = _status_before(changes, start) is s
            if s is D:
                deliveries += 1
                if hit is not None or already:
                    detected += 1
                    delay = 0.0 if already or hit is None else (hit.key.report_time - start)
                    delays.append(delay if isinstance(delay, float) else delay.total_seconds())
                    if hit is not None and hit.evidence_since is not None:
                        leads.append((hit.key.report_time - hit.evidence_since).total_seconds())
            else:
                arrivals += 1
                arrivals_detected += hit is not None or already
    weeks = len(fleet) * days / 7
    return Score(
        name,
        len(fleet),
        weeks,
        reports_n,
        changes_n,
        false,
        wrong / max(reports_n, 1),
        deliveries,
        detected,
        arrivals,
        arrivals_detected,
        tuple(delays),
        tuple(leads),
    )


def _status_before(changes: list[StatusChange], t: datetime) -> TrackerStatus | None:
    status = None
    for c in changes:
        if c.key.report_time < t:
            status = c.status
    return status


def table(scores: list[Score]) -> str:
    head = (
        f"{'rule':<34} {'false/tw':>8} {'wrong%':>7} {'deliv%':>7} {'store%':>7} "
        f"{'med min':>7} {'p95 min':>7} {'<=1h%':>6} {'<=2h%':>6}"
    )
    lines = [head]
    for s in scores:
        lines.append(
            f"{s.rule:<34} {s.false_per_tracker_week:8.3f} {100 * s.wrong_report_share:7.2f} "
            f"{100 * s.deliveries_detected / max(s.deliveries, 1):7.1f} "
            f"{100 * s.storage_detected / max(s.storage_arrivals, 1):7.1f} "
            f"{s.delay_quantile(0.5) / 60:7.1f} {s.delay_quantile(0.95) / 60:7.1f} "
            f"{100 * s.within(3600):6.1f} {100 * s.within(7200):6.1f}"
        )
    return "\n".join(lines)


def median_lead_min(s: Score) -> float:
    return statistics.median(s.evidence_lead_s) / 60 if s.evidence_lead_s else math.nan
