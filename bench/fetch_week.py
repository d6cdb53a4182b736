"""A week of a fleet on a fake clock, before and after issue 11: what the fetch policy spends
of Apple's budget on healthy and on silent trackers.

The model is event-driven and uses the domain's own rules (``FetchState.after``,
``FetchPolicy.window``, ``turn_results``); only Apple is modelled: it answers a key's
reports whose location time lies in the window, the newest ``PER_ENTRY``, so the newest one
comes back again as long as the window includes it. Healthy tags are seen by a passing
iPhone at random (one report every ``--seen-min`` minutes on average); silent ones reported
once, at the start, and never again. Requests leave as the queue's claim makes them: at the
earliest due time, paced per account.

- before: a turn counts as reported whenever a report comes back (the newest one we hold
  returned again, too), the window starts at the newest report we hold, a request takes
  only the trackers due now;
- after: only a report we did not hold counts, the window reaches back by the overlap, a
  request is filled with trackers due within the horizon.

    .venv/bin/python -m bench.fetch_week --trackers 10000 --days 7 --silent 0.3
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.scheduling import (
    AccountPolicy,
    FetchPolicy,
    FetchResult,
    FetchState,
    capacity,
    turn_results,
)

START = datetime(2026, 12, 1, tzinfo=UTC)
PER_ENTRY = 20


@dataclass
class Tag:
    id: uuid.UUID
    silent: bool
    seen: list[float]
    """Location times of every report Apple has of it (seconds from START), sorted; each is
    visible to a fetch from its location time on."""
    fetched_upto: int = 0
    """Reports ``seen[:fetched_upto]`` are held (every window reaches back past them)."""
    last_held: float | None = None
    state: FetchState = field(default_factory=FetchState)
    turns: int = 0


@dataclass
class Result:
    requests: int = 0
    keys: int = 0
    fetched: int = 0
    decrypted: int = 0
    """Fetched minus those dated at a time we hold (left out before decryption, after)."""
    stored: int = 0
    wall_s: float = 0.0


def make_fleet(n: int, silent: float, days: float, seen_min: float, seed: int) -> list[Tag]:
    rng = random.Random(seed)
    horizon_s = days * 86400
    tags = []
    for i in range(n):
        quiet = i < n * silent
        if quiet:
            seen = [-3600.0]  # one report before the week; then nothing
        else:
            seen, t = [], -rng.expovariate(1 / (seen_min * 60))
            while t < horizon_s:
                seen.append(t)
                t += rng.expovariate(1 / (seen_min * 60))
        tags.append(Tag(uuid.UUID(int=rng.getrandbits(128)), quiet, seen))
    return tags


def week(
    tags: list[Tag],
    policy: FetchPolicy,
    *,
    after: bool,
    days: float,
    per_request: int,
    pace_s: float,
) -> Result:
    """One week of fetching; returns what it cost. ``pace_s``: the fleet's accounts together
    send at most one request this often."""
    t0 = time.perf_counter()
    res = Result()
    end = days * 86400
    run_start = START - timedelta(hours=2)
    queue = [(policy.first_due(tag.id, START), i) for i, tag in enumerate(tags)]
    heapq.heapify(queue)
    horizon = policy.horizon if after else timedelta(0)
    clock = START
    while queue:
        now = max(clock, queue[0][0])
        if (now - START).total_seconds() >= end:
            break
        batch = []
        while queue and queue[0][0] <= now + horizon and len(batch) < per_request:
            batch.append(heapq.heappop(queue))
        res.requests += 1
        res.keys += len(batch)
        t_now = (now - START).total_seconds()
        new: set[uuid.UUID] = set()
        answered: set[uuid.UUID] = set()
        for _, i in batch:
            tag = tags[i]
            last = None if tag.last_held is None else START + timedelta(seconds=tag.last_held)
            if after:
                w = policy.window(last, now, run_start)
                since = (w.since - START).total_seconds()
            else:  # the old window: from the newest report we hold, 7 days back at most
                since = max(t_now - policy.max_report_age.total_seconds(), tag.last_held or -1e18)
            lo = bisect.bisect_left(tag.seen, since)
            hi = bisect.bisect_right(tag.seen, t_now)
            first = max(lo, hi - PER_ENTRY)
            res.fetched += hi - first
            held = max(0, min(hi, tag.fetched_upto) - first) if after else 0
            res.decrypted += hi - first - held
            if hi > first:
                answered.add(tag.id)
            fresh = hi - max(first, tag.fetched_upto)
            if fresh > 0:
                new.add(tag.id)
                res.stored += fresh
                tag.fetched_upto = hi
                tag.last_held = tag.seen[hi - 1]
        ids = [tags[i].id for _, i in batch]
        results = (
            turn_results(ids, new)
            if after
            else {t: FetchResult.REPORTED if t in answered else FetchResult.NO_REPORTS for t in ids}
        )
        for due, i in batch:
            tag = tags[i]
            tag.turns += 1
            tag.state = tag.state.after(results[tag.id], now, policy, due=due if after else None)
            heapq.heappush(queue, (tag.state.next_due or now, i))
        clock = now + timedelta(seconds=pace_s)
    res.wall_s = time.perf_counter() - t0
    return res


def report(name: str, tags: list[Tag], res: Result, days: float) -> None:
    healthy = [t for t in tags if not t.silent]
    silent = [t for t in tags if t.silent]

    def per_day(group: list[Tag]) -> float:
        return sum(t.turns for t in group) / max(len(group), 1) / days

    x1 = sum(1 for t in silent if t.state.factor == 1)
    print(
        f"{name:12}: {res.requests:>9,} requests ({res.requests / days:,.0f}/day), "
        f"{res.keys / max(res.requests, 1):5.1f} keys/request; turns per tracker-day: healthy "
        f"{per_day(healthy):5.1f}, silent {per_day(silent):5.1f}; silent at x1 at the end: "
        f"{x1}/{len(silent)}; reports fetched {res.fetched:,} "
        f"({res.fetched / max(res.stored, 1):.1f} per stored one), decrypted "
        f"{res.decrypted:,} ({res.decrypted / max(res.stored, 1):.1f} per stored one) for "
        f"{res.stored:,} stored [{res.wall_s:.1f}s]"
    )


def keys_figure(args: argparse.Namespace) -> None:
    """Mean keys per request over two simulated hours, before and after, by fleet size."""
    interval = timedelta(hours=args.interval_h)
    hours = 2.0
    for n in (300, 10_000, 250_000):
        line = []
        for name, after in (("before", False), ("after", True)):
            tags = make_fleet(n, args.silent, hours / 24, args.seen_min, seed=5)
            policy = FetchPolicy(interval=interval, fill_horizon=0.25 if after else 0.0)
            res = week(
                tags,
                policy,
                after=after,
                days=hours / 24,
                per_request=64,
                pace_s=args.fetch_interval_s / args.accounts,
            )
            line.append(
                f"{name} {res.keys / max(res.requests, 1):4.1f} keys/request "
                f"({res.requests:,} requests)"
            )
        print(f"{n:>7,} trackers, {hours:g} h: " + "; ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument(
        "--before-days",
        type=float,
        help="days of the old policy (default --days; its per-day rate is the same every day "
        "of the week, and it sends ~100x the requests, so a shorter run keeps the bench short)",
    )
    ap.add_argument("--silent", type=float, default=0.3)
    ap.add_argument("--interval-h", type=float, default=0.25)
    ap.add_argument("--seen-min", type=float, default=10, help="mean minutes between reports")
    ap.add_argument("--accounts", type=int, default=4)
    ap.add_argument("--fetch-interval-s", type=float, default=1.0)
    ap.add_argument("--budget", type=float, default=4.0, help="requests/hour per account")
    ap.add_argument(
        "--keys-figure",
        action="store_true",
        help="only the mean keys per request of 300, 10,000 and 250,000 trackers (2 hours)",
    )
    args = ap.parse_args()
    if args.keys_figure:
        keys_figure(args)
        return
    interval = timedelta(hours=args.interval_h)
    print(
        f"{args.trackers:,} trackers, {args.silent:.0%} silent, {args.days:g} days, interval "
        f"{interval}, {args.accounts} accounts paced {args.fetch_interval_s:g}s (the budget "
        f"is left out of both runs so that the policies compare, see the capacity line)"
    )
    results = {}
    for name, after in (("before", False), ("after", True)):
        days = args.days if after or args.before_days is None else args.before_days
        tags = make_fleet(args.trackers, args.silent, days, args.seen_min, seed=11)
        policy = FetchPolicy(interval=interval, fill_horizon=0.25 if after else 0.0)
        res = week(
            tags,
            policy,
            after=after,
            days=days,
            per_request=64,
            pace_s=args.fetch_interval_s / args.accounts,
        )
        report(f"{name} ({days:g} d)", tags, res, days)
        res.requests = round(res.requests / days * args.days)  # per week, for the ratio
        results[name] = res
    ratio = results["before"].requests / max(results["after"].requests, 1)
    print(f"ratio       : the old policy sends {ratio:.1f}x the requests of the new one per day")
    cap = capacity(
        args.trackers, args.accounts, 64, interval, AccountPolicy(budget_per_hour=args.budget)
    )
    after_per_interval = results["after"].requests / (args.days * 86400 / interval.total_seconds())
    print(
        f"capacity at {args.budget:g} requests/hour/account: the fleet at x1 needs "
        f"{cap.needed_per_interval} requests per interval, {args.accounts} accounts allow "
        f"{cap.allowed_per_interval:g}; {cap.accounts_needed} accounts needed "
        f"(the new policy actually sent {after_per_interval:.0f} per interval: "
        f"{math.ceil(after_per_interval / (args.budget * args.interval_h))} accounts)"
    )


if __name__ == "__main__":
    main()
