"""The measurement and motion model of the evidence rule: a hidden Markov model over
{in transit, inside fence 1, ..., inside fence n}, filtered forward report by report.

A report says "I am at x, within a stated horizontal accuracy a, with confidence c". It is
taken as a Gaussian measurement of the true position (per-axis sigma = a / 1.5: Find My's
accuracy is about the 68 % circle) mixed with a share of outliers that may lie anywhere
within a few kilometres. Inside a fence of radius R the true position is spread over the
disc, so a report at distance d from the centre has density about
``Phi((R - d) / sigma) / (pi (R^2 + sigma^2))``; in transit the true position is anywhere
outside the fences, at a low density ``1 / (pi TRANSIT_RADIUS_M^2)`` times the share of the
report's error distribution that falls outside every fence near it (and "in storage" means
outside every delivery fence, as delivery wins over storage). The outlier component
bounds what any one report can prove, which is why one far-off report cannot move a
settled status, while one precise report deep inside a fence is worth thousands of vague
ones at its edge.

Between reports the hidden state moves: goods in storage leave after ``STORAGE_DWELL_S`` on
average, delivered goods after ``DELIVERED_DWELL_S`` (rarely), and goods in transit near a
fence enter it after ``ENTER_S`` on average. The hypotheses are kept sparse: a fence joins
when a report comes within its radius plus ``REACH_M``; hypotheses below ``PRUNE_P`` leave.
Everything here is plain float arithmetic in a fixed order, so a replay is bit-for-bit
deterministic.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from domain.model import LocationKind

ACCURACY_SIGMAS = 1.5  # the stated accuracy is about 1.5 sigma (the 68 % circle in 2-D)
MIN_SIGMA_M = 3.0  # no report is more precise than this
REACH_M = 1000.0  # fences farther than radius + this from a report are not near it
OUTLIER_RADIUS_M = 2000.0  # an outlier lies anywhere within this of the truth
TRANSIT_RADIUS_M = 2500.0  # density of transit positions near a fence: 1 / (pi r^2)
STORAGE_DWELL_S = 2 * 86400.0  # mean time goods stay in storage
DELIVERED_DWELL_S = 60 * 86400.0  # a delivered parcel rarely leaves
ENTER_S = 3600.0  # mean time in transit near a fence before entering it
PRUNE_P = 1e-12  # hypotheses less likely than this are dropped
ONSET_P = 0.05  # a status's evidence starts at the first report lifting it to this
CONFIDENCE_OUTLIER_FACTOR = {1: 4.0, 2: 2.0, 3: 1.0}  # Find My confidence 3 lies least

_OUTLIER_DENSITY = 1.0 / (math.pi * OUTLIER_RADIUS_M**2)
_TRANSIT_DENSITY = 1.0 / (math.pi * TRANSIT_RADIUS_M**2)
_SQRT2 = math.sqrt(2.0)

Hypothesis = uuid.UUID | None  # a fence's location id; None: in transit
# Before the first status: inside some fence of the run that no report has come near yet
# (only outliers would show it here). It makes the first status need evidence too.
ELSEWHERE = uuid.UUID(int=0)
# (hypothesis, the fence's kind (None for transit), probability); transit first, then by id
Belief = tuple[tuple[Hypothesis, LocationKind | None, float], ...]


@dataclass(frozen=True, slots=True)
class NearFence:
    """A fence within reach of a report, and the report's distance from its centre."""

    location_id: uuid.UUID
    kind: LocationKind
    radius_m: float
    distance_m: float


def _sort_key(h: Hypothesis) -> tuple[int, int]:
    return (0, 0) if h is None else (1, h.int)


def inside_share(near: NearFence, sigma_m: float) -> float:
    """How much of the report's error distribution falls inside the fence (1-D along the
    radius, which is exact far from the centre and close enough near it)."""
    return 0.5 * math.erfc((near.distance_m - near.radius_m) / (sigma_m * _SQRT2))


def _noise(accuracy_m: int, confidence: int, outlier_share: float) -> tuple[float, float, float]:
    """The measurement model of one report: its error's sigma per axis (metres), the outlier
    density term, and the weight of a genuine reading (1 - outlier probability)."""
    sigma = max(accuracy_m / ACCURACY_SIGMAS, MIN_SIGMA_M)
    eps = min(outlier_share * CONFIDENCE_OUTLIER_FACTOR.get(confidence, 4.0), 0.5)
    return sigma, eps * _OUTLIER_DENSITY, 1.0 - eps


def likelihoods(
    hypotheses: list[Hypothesis],
    near: tuple[NearFence, ...],
    accuracy_m: int,
    confidence: int,
    outlier_share: float,
) -> list[float]:
    """The density of the report under each hypothesis (same order)."""
    sigma, base, keep = _noise(accuracy_m, confidence, outlier_share)
    outside = 1.0
    outside_delivery = 1.0
    inside: dict[Hypothesis, float] = {}
    scale = 1.0 / (sigma * _SQRT2)
    for f in near:
        share = 0.5 * math.erfc((f.distance_m - f.radius_m) * scale)
        outside *= 1.0 - share
        if f.kind is LocationKind.DELIVERY:
            outside_delivery *= 1.0 - share
        inside[f.location_id] = share / (math.pi * (f.radius_m * f.radius_m + sigma * sigma))
    for f in near:
        # inside a delivery fence is DELIVERED, so "in storage" means outside all of them
        w = inside[f.location_id]
        if f.kind is LocationKind.STORAGE and outside_delivery != 1.0:
            w *= outside_delivery
        inside[f.location_id] = keep * w + base
    transit = keep * _TRANSIT_DENSITY * outside + base
    return [transit if h is None else inside.get(h, base) for h in hypotheses]


def initial_belief(near: tuple[NearFence, ...]) -> Belief:
    """Before any report: in transit, inside any fence near the first one, or inside one
    elsewhere, all alike."""
    kinds = {f.location_id: f.kind for f in near}
    p = 1.0 / (len(kinds) + 2)
    fences = ((i, kinds[i], p) for i in sorted(kinds, key=lambda i: i.int))
    return ((None, None, p), (ELSEWHERE, None, p), *fences)


def step(
    belief: Belief,
    near: tuple[NearFence, ...],
    dt_s: float,
    accuracy_m: int,
    confidence: int,
    outlier_share: float,
) -> Belief:
    """One report: move the belief over ``dt_s`` seconds, then weigh the report."""
    if not near and len(belief) == 1:
        return belief  # settled in transit, far from every fence: nothing to weigh
    if len(near) == 1 and len(belief) == 2 and belief[1][0] == near[0].location_id:
        return _step_settled(belief, near[0], dt_s, accuracy_m, confidence, outlier_share)
    return _step_general(belief, near, dt_s, accuracy_m, confidence, outlier_share)


def _step_general(
    belief: Belief,
    near: tuple[NearFence, ...],
    dt_s: float,
    accuracy_m: int,
    confidence: int,
    outlier_share: float,
) -> Belief:
    hyps = [h for h, _, _ in belief]
    kinds = [k for _, k, _ in belief]
    probs = [p for _, _, p in belief]
    if hyps[0] is not None:  # (never after initial_belief or reset; kept for safety)
        hyps.insert(0, None)
        kinds.insert(0, None)
        probs.insert(0, 0.0)
    added = False
    for f in near:
        if f.location_id not in hyps:
            hyps.append(f.location_id)
            kinds.append(f.kind)
            probs.append(0.0)
            added = True
    if dt_s > 0:
        left = 0.0
        for i in range(1, len(hyps)):
            p = probs[i]
            if p:
                dwell = DELIVERED_DWELL_S if kinds[i] is LocationKind.DELIVERY else STORAGE_DWELL_S
                out = p * -math.expm1(-dt_s / dwell)
                probs[i] = p - out
                left += out
        transit = probs[0] + left  # (what just left may enter another fence at once)
        if near:
            moved = transit * (-math.expm1(-dt_s / ENTER_S) / len(near))
            for f in near:
                probs[hyps.index(f.location_id)] += moved
            transit -= moved * len(near)
        probs[0] = transit
    weights = likelihoods(hyps, near, accuracy_m, confidence, outlier_share)
    posterior = [p * w for p, w in zip(probs, weights, strict=True)]
    total = sum(posterior)
    if total <= 0.0:  # cannot happen with outliers in the model; stay put
        posterior, total = probs, 1.0
    out_ = [
        (h, k, p / total)
        for h, k, p in zip(hyps, kinds, posterior, strict=True)
        if h is None or p / total >= PRUNE_P
    ]
    if added:
        out_.sort(key=lambda x: _sort_key(x[0]))
    return tuple(out_)


def _step_settled(
    belief: Belief,
    f: NearFence,
    dt_s: float,
    accuracy_m: int,
    confidence: int,
    outlier_share: float,
) -> Belief:
    """``step`` for its most common case, with the same arithmetic: in transit or inside
    one fence, and a report near that fence only."""
    (_, _, transit), (h, kind, p) = belief
    if dt_s > 0:
        dwell = DELIVERED_DWELL_S if kind is LocationKind.DELIVERY else STORAGE_DWELL_S
        out = p * -math.expm1(-dt_s / dwell)
        p -= out
        transit += out
        moved = transit * -math.expm1(-dt_s / ENTER_S)
        p += moved
        transit -= moved
    sigma, base, keep = _noise(accuracy_m, confidence, outlier_share)
    share = 0.5 * math.erfc((f.distance_m - f.radius_m) * (1.0 / (sigma * _SQRT2)))
    a = transit * (keep * _TRANSIT_DENSITY * (1.0 - share) + base)
    b = p * (keep * (share / (math.pi * (f.radius_m * f.radius_m + sigma * sigma))) + base)
    total = a + b
    if b / total < PRUNE_P:
        return ((None, None, a / total),)
    return ((None, None, a / total), (h, kind, b / total))


def reset(location_id: uuid.UUID | None, kind: LocationKind | None, probability: float) -> Belief:
    """The belief right after a change: the decided hypothesis at the probability that
    decided it, the rest in transit (for a change to transit: all of it)."""
    if location_id is None:
        return ((None, None, 1.0),)
    return ((None, None, 1.0 - probability), (location_id, kind, probability))
