"""Benchmark of the status rules (issue 12), in one run:

1. Quality on a noisy fleet with ground truth (tests/fleet.py): the plain rule, the README's
   hysteresis rule, the best count-only setting and the evidence rule side by side: false
   status changes per tracker-week, share of reports with a wrong status, deliveries and
   storage arrivals detected, delay from the first report truly inside to detection. Then
   the plain and the evidence rule on other noise settings.
2. Speed of the worker's status step (PostgreSQL classification + replay + save) for
   trackers with 2 new reports each, plain rule and evidence rule on the same reports in the
   same run; figures are extrapolated to 250,000 trackers when fewer are measured.

Targets (printed, not asserted): <= 0.05 false changes per tracker-week, >= 99 % of
deliveries detected within 2 h (median <= 30 min); the status step of 250,000 trackers in
<= 5 s.

    .venv/bin/python -m bench.status --trackers 1000 --step-trackers 50000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import time
import uuid

import asyncpg
from tests.fleet import FleetConfig, Score, make_fleet, median_lead_min, score, table

from adapters.postgres.pool import open_pool
from adapters.postgres.processing import PostgresProcessingQueue, PostgresProcessingUnitOfWork
from adapters.postgres.reports import PostgresReportRepository
from bench.processing import make_world, new_reports
from bench.throwaway import throwaway_database
from domain.ports.processing import Claim, Evaluation
from domain.status import RuleKind, StatusRule, resume_point
from domain.status_batch import replay_batch

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


PHASES = ("inputs", "readings", "replay", "save")

STATS: dict[str, int] = {}  # trackers replayed in bulk / one by one


async def evaluate(
    uow: PostgresProcessingUnitOfWork, claims: list[Claim], spent: dict[str, float]
) -> int:
    """The status step of ProcessNewReports for a batch of claims, timed by phase."""
    t0 = time.perf_counter()
    since = {c.tracker_id: c.since for c in claims}
    inputs = await uow.status_inputs(claims)
    resumes = {
        i.tracker_id: resume_point(since[i.tracker_id], i.checkpoint, i.last_change_before_since)
        for i in inputs
    }
    t1 = time.perf_counter()
    columns = await uow.readings({t: r.after for t, r in resumes.items()})
    t2 = time.perf_counter()
    rules = {i.tracker_id: i.rule for i in inputs}
    outcomes = replay_batch(
        [(resumes[t].state, rules[t]) for t in columns.trackers], columns, STATS
    )
    evaluations = [
        Evaluation(t, resumes[t], state, ch, last)
        for t, (state, ch, last) in zip(columns.trackers, outcomes, strict=True)
    ]
    changes = sum(len(e.changes) for e in evaluations)
    t3 = time.perf_counter()
    await uow.save_statuses(evaluations)
    t4 = time.perf_counter()
    for name, a, b in zip(PHASES, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
        spent[name] += b - a
    return changes


async def step_speed(n: int, batch: int, rounds: int) -> None:
    print(f"\nstatus step: {n} trackers with 2 new reports each, batches of {batch}")
    rng = random.Random(1)
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        trackers = await make_world(conn, n)
        reports = new_reports(trackers, rng)
        repo = PostgresReportRepository(conn)
        for i in range(0, len(reports), 50_000):
            async with conn.transaction():
                await repo.add_many(reports[i : i + 50_000])
        await conn.execute("DELETE FROM processing_queue")
        await conn.execute("ANALYZE")
        await conn.close()
        pool = await open_pool(url, max_size=4)
        queue = PostgresProcessingQueue(pool)
        took: dict[str, list[float]] = {"plain": [], "evidence": []}
        for _ in range(rounds):
            for name, kind in (("plain", RuleKind.CONSECUTIVE), ("evidence", RuleKind.EVIDENCE)):
                async with pool.acquire() as c:
                    await c.execute("TRUNCATE tracker_status, status_history")
                    await c.execute(
                        """INSERT INTO status_rules (production_run_id, kind)
                           SELECT id, $1 FROM production_runs
                           ON CONFLICT (production_run_id) DO UPDATE SET kind = excluded.kind""",
                        kind.value,
                    )
                    await c.execute(
                        """INSERT INTO processing_queue (tracker_id, since, hours)
                           SELECT id, '0001-01-01T00:00:00Z', '{}' FROM trackers"""
                    )
                    await c.execute("VACUUM ANALYZE processing_queue")
                spent = 0.0
                changes = 0
                phases = dict.fromkeys(PHASES, 0.0)
                while True:
                    token = uuid.uuid4()
                    claims = await queue.claim(token, batch, 600)
                    if not claims:
                        break
                    async with PostgresProcessingUnitOfWork(pool) as uow:
                        mine = await uow.lock(token, claims)
                        t = time.perf_counter()
                        changes += await evaluate(uow, mine, phases)
                        await uow.complete(token, mine, claims)
                        await uow.commit()
                        spent += time.perf_counter() - t
                took[name].append(spent)
                detail = ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
                print(f"  {name:9} {spent:6.2f} s for {n} trackers ({changes} changes; {detail})")
        await pool.close()
    plain, ev = min(took["plain"]), min(took["evidence"])
    scale = 250_000 / n
    print(
        f"best of {rounds}: plain {plain:.2f} s, evidence {ev:.2f} s, ratio {ev / plain:.2f}x; "
        f"extrapolated to 250,000 trackers: plain {plain * scale:.1f} s, evidence "
        f"{ev * scale:.1f} s (target <= 5 s: {'MET' if ev * scale <= 5 else 'MISSED'})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=1000, help="fleet trackers (quality)")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--noise-trackers", type=int, default=200, help="0: skip other settings")
    ap.add_argument("--step-trackers", type=int, default=50_000, help="0: skip the speed part")
    ap.add_argument("--batch", type=int, default=25_000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    base = FleetConfig(trackers=a.trackers, days=a.days, seed=a.seed)
    quality(base)
    if a.noise_trackers:
        noise_settings(base, a.noise_trackers)
    if a.step_trackers:
        asyncio.run(step_speed(a.step_trackers, a.batch, a.rounds))


if __name__ == "__main__":
    main()
