"""Benchmark of the status rules (issue 12), in one run:

1. Quality on a noisy fleet with ground truth (tests/fleet.py): the plain rule, the README's
   hysteresis rule, the best count-only setting and the evidence rule side by side: false
   status changes per tracker-week, share of reports with a wrong status, deliveries and
   storage arrivals detected, delay from the first report truly inside to detection. Then
   the plain and the evidence rule on other noise settings.
2. Speed of the worker's status step for trackers with 2 new reports each, plain and
   evidence rule on the same reports in the same run (``bench.status_step`` at one size;
   run that module for several sizes).

Targets (printed, not asserted): <= 0.05 false changes per tracker-week, >= 99 % of
deliveries detected within 2 h (median <= 30 min); the status step of 250,000 trackers in
<= 5 s.

    .venv/bin/python -m bench.status --trackers 1000 --step-trackers 50000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

from tests.fleet import FleetConfig, Score, make_fleet, median_lead_min, score, table

from bench import status_step
from domain.status import RuleKind, StatusRule

RULES = [
    ("plain (CONSECUTIVE, 1 report)", StatusRule()),
    ("README: 2 reports, 600 s, circle", StatusRule(2, 600, True)),
    ("3 reports, no dwell", StatusRule(3)),
    ("evidence (HMM, p >= 0.99)", StatusRule(kind=RuleKind.EVIDENCE)),
]


def quality(cfg: FleetConfig) -> list[Score]:
    t = time.perf_counter()
    fleet = make_fleet(cfg)
    reports = sum(len(x.reports) for x in fleet)
    print(
        f"fleet: {cfg.trackers} trackers x {cfg.days:g} days, {reports} reports "
        f"({reports / cfg.trackers / cfg.days:.0f}/tracker-day), seed {cfg.seed}, "
        f"built in {time.perf_counter() - t:.1f} s"
    )
    scores = [score(name, fleet, rule, cfg.days) for name, rule in RULES]
    print(table(scores))
    ev = scores[-1]
    print(
        f"evidence rule: 'delivered at' (evidence time) lies a median "
        f"{median_lead_min(ev):.1f} min before the report that decided"
    )
    ok_false = ev.false_per_tracker_week <= 0.05
    ok_2h = ev.within(7200) >= 0.99
    ok_med = ev.delay_quantile(0.5) <= 1800
    print(
        f"targets: false changes/tracker-week {ev.false_per_tracker_week:.3f} <= 0.05 "
        f"{'MET' if ok_false else 'MISSED'}; deliveries within 2 h "
        f"{100 * ev.within(7200):.1f}% >= 99% {'MET' if ok_2h else 'MISSED'}; median delay "
        f"{ev.delay_quantile(0.5) / 60:.1f} min <= 30 {'MET' if ok_med else 'MISSED'}"
    )
    return scores


def noise_settings(base: FleetConfig, trackers: int) -> None:
    print(f"\nother noise settings ({trackers} trackers each; plain vs evidence)")
    settings = {
        "no outliers": dict(outlier_share=0.0),
        "6% outliers": dict(outlier_share=0.06),
        "accuracy median 15 m": dict(accuracy_median_m=15.0),
        "accuracy median 80 m": dict(accuracy_median_m=80.0),
        "a report every 10 min": dict(mean_gap_s=600.0),
        "a report every 90 min": dict(mean_gap_s=5400.0),
    }
    for name, change in settings.items():
        cfg = dataclasses.replace(base, trackers=trackers, **change)  # type: ignore[arg-type]
        fleet = make_fleet(cfg)
        pair = [
            score(f"{name}: plain", fleet, RULES[0][1], cfg.days),
            score(f"{name}: evidence", fleet, RULES[-1][1], cfg.days),
        ]
        print(table(pair).split("\n", 1)[1])
        d = 100 * (pair[1].within(7200) - pair[0].within(7200))
        print(f"{'':34} evidence - plain, within 2 h: {d:+.1f} points")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=1000, help="fleet trackers (quality)")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--noise-trackers", type=int, default=200, help="0: skip other settings")
    ap.add_argument("--step-trackers", type=int, default=50_000, help="0: skip the speed part")
    ap.add_argument("--batch", type=int, default=25_000)
    a = ap.parse_args()
    base = FleetConfig(trackers=a.trackers, days=a.days, seed=a.seed)
    quality(base)
    if a.noise_trackers:
        noise_settings(base, a.noise_trackers)
    if a.step_trackers:
        # the speed part is bench.status_step (several sizes: run it on its own)
        asyncio.run(status_step.main_async([a.step_trackers], a.batch, 1, True))


if __name__ == "__main__":
    main()
