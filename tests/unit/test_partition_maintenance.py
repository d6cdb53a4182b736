"""The collector's partition maintenance: a turn at start, then one per interval; a failed
turn (database down, lock timeout) is retried and never stops the process."""

from __future__ import annotations

import asyncio
from typing import Any

from domain.errors import DependencyUnavailable
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


class FakeContainer:
    def __init__(self, turn: FlakyTurn) -> None:
        self.maintain_report_partitions = self
        self._turn = turn

    async def async_(self) -> FlakyTurn:
        return self._turn


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
