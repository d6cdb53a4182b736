"""Travel times from matched passes (seed 003), as pure functions over plain arrays.

1. **Passes.** A device in range of a detector is heard several times (a detector hears
   ~80 % of the advertisements of a passing car, and a car waiting at lights lingers).
   Detections of one device at one detector less than ``pass_gap_s`` apart are one pass.
   Its **matching point** is the detection with the strongest RSSI (the closest approach,
   the usual choice for Bluetooth travel-time systems), ties to the earliest; when the
   detector sent no RSSI for the pass, the midpoint of its first and last detection.
2. **Matches.** On a link source -> destination (``max_seconds``), each source pass is
   paired with the same device's next destination pass; pairs longer than ``max_seconds``
   are dropped; when several source passes reach one destination pass, only the latest
   counts (the others are earlier trips that did not end at the destination).
3. **Outliers.** A robust filter (the Hampel identifier, i.e. median and MAD, over a
   sliding window, as used by Bluetooth travel-time systems such as those evaluated by
   Haghani et al. 2010 and the TransGuide/BlueTOAD validity windows): a match arriving in
   bin b is judged against the matches arriving in bins b-1..b+1 (a window centred on its
   bin, so a congestion onset is followed at once: the window straddles it, the MAD widens
   and both regimes pass); it is rejected when it lies more than ``k`` robust standard
   deviations (1.4826 MAD, at least ``min_spread`` of the median) from the window's median.
   Stops on the way and detours are long one-sided outliers: rejected. With fewer than
   ``min_window`` matches in the window nothing can be judged and all are kept.
4. **Bins.** Per link and bin of arrival time: the median of the kept matches (the
   estimate), their 10th/90th percentiles, counts of kept and rejected, and the plain mean
   of all matches for comparison.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation


@dataclass(frozen=True, slots=True)
class PassRules:
    pass_gap_s: float = 30.0
    bin_s: int = 300
    k: float = 3.0
    min_spread: float = 0.05
    min_window: int = 5

    def __post_init__(self) -> None:
        if not self.pass_gap_s > 0 or self.bin_s <= 0 or not self.k > 0:
            raise ValueError("pass_gap_s, bin_s and k must be positive")


@dataclass(frozen=True, slots=True)
class Match:
    device: bytes
    depart_s: float
    arrive_s: float

    @property
    def seconds(self) -> float:
        return self.arrive_s - self.depart_s


@dataclass(frozen=True, slots=True)
class BinEstimate:
    bin_start_s: int
    estimate_s: float | None
    p10_s: float | None
    p90_s: float | None
    used: int
    rejected: int
    mean_s: float


def collapse_passes(
    detections: Sequence[tuple[bytes, float, int | None]], gap_s: float
) -> dict[bytes, list[float]]:
    """Each device's passes (matching points, ascending) from its detections at one
    detector: (device, time in seconds, RSSI or None), in any order."""
    by_device: dict[bytes, list[tuple[float, int | None]]] = defaultdict(list)
    for device, t, rssi in detections:
        by_device[device].append((t, rssi))
    out: dict[bytes, list[float]] = {}
    for device, hits in by_device.items():
        hits.sort(key=lambda h: h[0])
        points: list[float] = []
        start = 0
        for i in range(1, len(hits) + 1):
            if i == len(hits) or hits[i][0] - hits[i - 1][0] > gap_s:
                points.append(_matching_point(hits[start:i]))
                start = i
        out[device] = points
    return out


def _matching_point(hits: Sequence[tuple[float, int | None]]) -> float:
    with_rssi = [h for h in hits if h[1] is not None]
    if with_rssi:
        best = max(h[1] for h in with_rssi)  # type: ignore[type-var]
        return min(h[0] for h in with_rssi if h[1] == best)
    return (hits[0][0] + hits[-1][0]) / 2


def match_passes(
    sources: dict[bytes, list[float]], destinations: dict[bytes, list[float]], max_s: float
) -> list[Match]:
    """Source passes paired with the same device's next destination pass within ``max_s``;
    one match per destination pass (the latest source pass). Sorted by arrival."""
    best: dict[tuple[bytes, float], float] = {}
    for device, departs in sources.items():
        arrivals = destinations.get(device)
        if not arrivals:
            continue
        for t in departs:
            i = bisect.bisect_right(arrivals, t)
            if i == len(arrivals):
                continue
            a = arrivals[i]
            if a - t <= max_s:
                key = (device, a)
                if best.get(key, -math.inf) < t:
                    best[key] = t
    matches = [Match(d, t, a) for (d, a), t in best.items()]
    matches.sort(key=lambda m: (m.arrive_s, m.device))
    return matches


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    n = len(sorted_values)
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bin_estimates(matches: Sequence[Match], rules: PassRules) -> list[BinEstimate]:
    """Per bin of arrival time (every bin with at least one match), filtered as above."""
    by_bin: dict[int, list[float]] = defaultdict(list)
    for m in matches:
        by_bin[int(m.arrive_s // rules.bin_s) * rules.bin_s].append(m.seconds)
    out = []
    for start in sorted(by_bin):
        values = by_bin[start]
        window = by_bin.get(start - rules.bin_s, []) + values + by_bin.get(start + rules.bin_s, [])
        kept = keep_inliers(values, window, rules)
        kept.sort()
        out.append(
            BinEstimate(
                bin_start_s=start,
                estimate_s=median(kept) if kept else None,
                p10_s=percentile(kept, 0.1) if kept else None,
                p90_s=percentile(kept, 0.9) if kept else None,
                used=len(kept),
                rejected=len(values) - len(kept),
                mean_s=sum(values) / len(values),
            )
        )
    return out


def keep_inliers(values: Sequence[float], window: Sequence[float], rules: PassRules) -> list[float]:
    """The values within k robust deviations of the window's median (Hampel identifier)."""
    if len(window) < rules.min_window:
        return list(values)
    centre = median(window)
    mad = median([abs(v - centre) for v in window])
    spread = max(MAD_SCALE * mad, rules.min_spread * centre)
    return [v for v in values if abs(v - centre) <= rules.k * spread]
