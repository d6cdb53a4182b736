"""Benchmark of firmware upgrade planning for a fleet: the next step of every device towards
its rollout's target, with ``UpgradePlanner`` (one backward breadth-first search per target,
then a lookup per device), side by side with the plain way in the same run (a fresh
forward search per device, timed on a sample and scaled). Prints devices/s and the ratio.

A device type of 3 components with 8 releases each; constraints in the style of seed 004
(``ble N`` needs ``mcu >= N-1``; ``lte N`` needs ``ble >= N-2``); the known-good set is the
derived set with every 5th combination left untested. Devices run a random known-good
combination (2% an untested one); 3 targets (the newest and two older ones).

    .venv/bin/python -m bench.upgrade_planner --devices 250000
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from domain.firmware import (
    Combination,
    NoUpgradePath,
    Release,
    Requirement,
    UpgradePlanner,
    Version,
    VersionRange,
    derive_combinations,
)

COMPONENTS = ("ble", "lte", "mcu")


def _releases(n: int) -> list[Release]:
    out = []
    for i in range(1, n + 1):
        v = Version(i, 0, 0)
        out.append(Release("mcu", v))
        out.append(
            Release("ble", v, (Requirement("mcu", VersionRange.parse(f">={max(1, i - 1)}")),))
        )
        out.append(
            Release("lte", v, (Requirement("ble", VersionRange.parse(f">={max(1, i - 2)}")),))
        )
    return out


def _plain(good: set[Combination], current: Combination, target: Combination) -> int | None:
    """Forward BFS from the device's combination, neighbours found by scanning the set."""
    seen = {current}
    todo = deque([(current, 0)])
    while todo:
        x, d = todo.popleft()
        if x == target:
            return d
        for y in good:
            if y not in seen and len(x.difference(y)) == 1:
                seen.add(y)
                todo.append((y, d + 1))
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=250_000)
    ap.add_argument("--releases", type=int, default=8)
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(18)
    releases = _releases(args.releases)
    derived = derive_combinations(COMPONENTS, releases)
    good = [c for i, c in enumerate(derived) if i % 5 != 3]
    untested = [c for i, c in enumerate(derived) if i % 5 == 3]
    targets = sorted(good, key=lambda c: [v for _, v in c.items])[-1:]
    targets += rng.sample(good, 2)
    devices = [
        (rng.choice(untested) if rng.random() < 0.02 else rng.choice(good), rng.choice(targets))
        for _ in range(args.devices)
    ]
    print(
        f"type: {len(COMPONENTS)} components x {args.releases} releases; "
        f"{len(derived)} combinations meet the constraints, {len(good)} known-good; "
        f"{args.devices:,} devices, {len(targets)} targets"
    )

    t0 = time.perf_counter()
    planner = UpgradePlanner(COMPONENTS, good)
    steps = no_path = 0
    for current, target in devices:
        try:
            if planner.next_step(current, target) is not None:
                steps += 1
        except NoUpgradePath:
            no_path += 1
    fast = time.perf_counter() - t0

    sample = devices[: args.sample]
    goodset = set(good)
    t1 = time.perf_counter()
    for current, target in sample:
        _plain(goodset, current, target)
    plain_per_device = (time.perf_counter() - t1) / len(sample)
    plain = plain_per_device * len(devices)

    # The two agree on path lengths.
    for current, target in sample[:50]:
        assert planner.steps_needed(current, target) == _plain(goodset, current, target)

    print(
        f"planner: next step of {args.devices:,} devices in {fast:.2f} s "
        f"({args.devices / fast:,.0f} devices/s; {steps:,} with a step, {no_path:,} without a path)"
    )
    print(
        f"plain forward search per device: {plain_per_device * 1e3:.2f} ms each "
        f"(sample of {len(sample)}), {plain:,.0f} s for the fleet"
    )
    print(f"ratio: planner is {plain / fast:,.0f}x the plain search")


if __name__ == "__main__":
    main()
