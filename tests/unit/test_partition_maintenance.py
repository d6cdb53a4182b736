"""The collector's maintenance: a turn at start, then one per interval, each making report
partitions and then deleting rows past their retention; a failed turn (database down, lock
timeout) is retried and never stops the process."""

from __future__ import annotations

import asyncio
from typing import Any

from domain.errors import DependencyUnavailable
from domain.retention import Prunable
from servers.config import Settings
from servers.maintenance import PartitionMaintenance


class FlakyTurn:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise DependencyUnavailable("postgres", "down")
        if self.calls == 2:
            raise RuntimeError("lock timeout")
        return ["reports_2027_01"] if self.calls == 3 else []


class CountingPrune:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> dict[Prunable, int]:
        self.calls += 1
        return {Prunable.SIGHTINGS: 3 if self.calls == 1 else 0}


class Provider:
    def __init__(self, value: object) -> None:
        self._value = value

    async def async_(self) -> object:
        return self._value


class FakeContainer:
    def __init__(self, turn: FlakyTurn, prune: CountingPrune | None = None) -> None:
        self.maintain_report_partitions = Provider(turn)
        self.prune_expired = Provider(prune or CountingPrune())


async def test_a_failing_turn_is_retried_and_the_loop_goes_on() -> None:
    turn = FlakyTurn()
    task = PartitionMaintenance(Settings(report_partitions_interval_s=0.01))
    await task.start(FakeContainer(turn))  # type: ignore[arg-type]
    for _ in range(200):
        if turn.calls >= 4:
            break
        await asyncio.sleep(0.01)
    await task.stop()
    assert turn.calls >= 4
    calls: Any = turn.calls
    await asyncio.sleep(0.05)
    assert turn.calls == calls  # stopped


async def test_each_good_turn_also_prunes_after_the_partitions() -> None:
    turn, prune = FlakyTurn(), CountingPrune()
    task = PartitionMaintenance(Settings(report_partitions_interval_s=0.01))
    await task.start(FakeContainer(turn, prune))  # type: ignore[arg-type]
    for _ in range(200):
        if prune.calls >= 2:
            break
        await asyncio.sleep(0.01)
    await task.stop()
    # the two failing partition turns pruned nothing; every good one did
    assert prune.calls >= 2
    assert prune.calls == turn.calls - 2
