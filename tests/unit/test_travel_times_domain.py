"""The travel-time rules (domain/travel_times.py): passes and their matching point, matching
on a link, the Hampel filter over a window of three bins, and the bins."""

from __future__ import annotations

import random
import statistics

from hypothesis import given
from hypothesis import strategies as st

from domain.travel_times import (
    Match,
    PassRules,
    bin_estimates,
    collapse_passes,
    keep_inliers,
    match_passes,
    percentile,
)

DEV = b"d" * 16


def test_detections_close_together_are_one_pass_matched_at_the_strongest_rssi() -> None:
    passes = collapse_passes(
        [(DEV, 100.0, -80), (DEV, 104.0, -55), (DEV, 102.0, -60), (DEV, 300.0, -70)], gap_s=30
    )
    assert passes == {DEV: [104.0, 300.0]}


def test_equal_rssi_takes_the_earliest_and_no_rssi_the_midpoint() -> None:
    assert collapse_passes([(DEV, 10.0, -60), (DEV, 12.0, -60)], 30) == {DEV: [10.0]}
    assert collapse_passes([(DEV, 10.0, None), (DEV, 20.0, None)], 30) == {DEV: [15.0]}


def test_a_lingering_device_is_one_pass_as_long_as_the_gaps_are_short() -> None:
    hits = [(DEV, float(t), None) for t in range(0, 300, 20)]
    assert collapse_passes(hits, 30) == {DEV: [140.0]}
    assert len(collapse_passes(hits, 10)[DEV]) == 15


def test_each_destination_pass_takes_the_latest_source_pass_within_max_seconds() -> None:
    src = {DEV: [0.0, 50.0, 1000.0], b"x" * 16: [0.0]}
    dst = {DEV: [150.0, 2000.0]}
    # 0 and 50 both reach 150: the later one counts; 1000 -> 2000 is beyond 600 s.
    assert match_passes(src, dst, 600) == [Match(DEV, 50.0, 150.0)]
    # a destination pass before every source pass matches nothing
    assert match_passes({DEV: [200.0]}, {DEV: [150.0]}, 600) == []


def test_hampel_rejects_stops_and_keeps_the_spread() -> None:
    rules = PassRules()
    rng = random.Random(1)
    values = [120 * (1 + rng.gauss(0, 0.03)) for _ in range(40)] + [520.0, 900.0]
    kept = keep_inliers(values, values, rules)
    assert 520.0 not in kept
    assert 900.0 not in kept
    assert len(kept) >= 39


def test_too_few_matches_to_judge_are_all_kept() -> None:
    assert keep_inliers([100.0, 900.0], [100.0, 900.0], PassRules(min_window=5)) == [100.0, 900.0]


def test_bins_follow_a_sudden_rise_at_once() -> None:
    """Matches at 100 s until t=3000, then 200 s: the first bin after the rise estimates
    200 (its window straddles the rise, the MAD widens, both regimes pass)."""
    matches = [
        Match(bytes([i % 256]) * 16, t - (100 if t < 3000 else 200), float(t))
        for i, t in enumerate(range(0, 6000, 20))
    ]
    bins = {b.bin_start_s: b for b in bin_estimates(matches, PassRules())}
    assert bins[2700].estimate_s == 100
    assert bins[3000].estimate_s == 200
    assert bins[3000].rejected == 0
    assert all(b.used + b.rejected == 15 for b in bins.values())


def test_a_bin_reports_mean_percentiles_and_counts() -> None:
    matches = [Match(DEV, 1000.0 - v, 1000.0) for v in (100, 101, 102, 103, 104, 105, 900)]
    (b,) = bin_estimates(matches, PassRules())
    assert (b.used, b.rejected) == (6, 1)
    assert b.estimate_s == 102.5
    assert b.p10_s is not None
    assert b.p90_s is not None
    assert 100 <= b.p10_s <= b.estimate_s <= b.p90_s <= 105
    assert b.mean_s == statistics.fmean([100, 101, 102, 103, 104, 105, 900])


@given(st.lists(st.floats(1, 1e5), min_size=1, max_size=50), st.floats(0, 1))
def test_percentile_lies_between_the_extremes_and_is_monotonic(values, q) -> None:  # type: ignore[no-untyped-def]
    values = sorted(values)
    p = percentile(values, q)
    assert values[0] <= p <= values[-1]
    assert percentile(values, 0) == values[0]
    assert percentile(values, 1) == values[-1]
    assert percentile(values, min(1.0, q + 0.1)) >= p


@given(st.binary(min_size=32, max_size=200), st.binary(max_size=64))
def test_device_keys_are_rfc_2104_hmac_sha256(secret: bytes, raw: bytes) -> None:
    import hashlib
    import hmac

    from domain.detectors import DeviceIdKind, DeviceKeyRing

    ring = DeviceKeyRing({7: secret}, 7)
    for kind in DeviceIdKind:
        expected = hmac.new(secret, kind.value + raw, hashlib.sha256).digest()[:16]
        assert ring.key(kind, raw) == expected
    assert ring.key(DeviceIdKind.MAC, raw) != ring.key(DeviceIdKind.OPAQUE, raw)
