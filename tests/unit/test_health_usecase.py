"""CheckDependencies: every probe answers, fails or times out, concurrently and in bounded time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.unit.fakes.common import FakeProbe
from usecases.health import CheckDependencies, DependencyStatus

TIMEOUT_S = 0.2


async def check(
    probes: Sequence[FakeProbe], timeout_s: float = TIMEOUT_S
) -> dict[str, DependencyStatus]:
    """Run the use case; if it fails to bound a hanging probe, fail instead of hanging too."""
    return await asyncio.wait_for(CheckDependencies(probes, timeout_s)(), timeout_s + 2.0)


async def test_healthy_probes_report_healthy() -> None:
    probes = [FakeProbe("postgres"), FakeProbe("redis")]
    result = await check(probes)
    assert result == {
        "postgres": DependencyStatus("postgres", True),
        "redis": DependencyStatus("redis", True),
    }
    assert [p.calls for p in probes] == [1, 1]


async def test_raising_probe_is_unhealthy_with_the_error_as_detail() -> None:
    probes = [FakeProbe("postgres", error=ConnectionRefusedError("port 5432")), FakeProbe("redis")]
    result = await check(probes)
    assert result["postgres"] == DependencyStatus(
        "postgres", False, "ConnectionRefusedError: port 5432"
    )
    assert result["redis"].healthy


async def test_error_detail_is_truncated() -> None:
    result = await check([FakeProbe("db", error=RuntimeError("x" * 5000))], 1.0)
    assert not result["db"].healthy
    assert len(result["db"].detail) == 200


async def test_hanging_probe_times_out_unhealthy_and_is_cancelled() -> None:
    # `check` fails the test if the use case does not bound the hang (no wall-clock assert:
    # a busy machine only makes it later).
    hanging = FakeProbe("redis", hang=True)
    result = await check([hanging, FakeProbe("postgres")])
    assert result["redis"].healthy is False
    assert f"no answer within {TIMEOUT_S}s" in result["redis"].detail
    assert result["postgres"].healthy
    assert hanging.cancelled


class RecordingProbe(FakeProbe):
    """A hanging probe that writes when it starts and when it is cancelled into ``events``."""

    def __init__(self, name: str, events: list[tuple[str, str]]) -> None:
        super().__init__(name, hang=True)
        self._events = events

    async def check(self) -> None:
        self._events.append(("start", self.name))
        try:
            await super().check()
        finally:
            self._events.append(("end", self.name))


async def test_probes_run_concurrently_so_hangs_do_not_add_up() -> None:
    """Every probe starts before the first one's timeout ends it: one timeout for all, not
    one after the other (told by order, not by a stopwatch)."""
    events: list[tuple[str, str]] = []
    probes = [RecordingProbe(f"dep{i}", events) for i in range(5)]
    result = await check(probes)
    first_end = next(i for i, (kind, _) in enumerate(events) if kind == "end")
    assert sorted(name for kind, name in events[:first_end] if kind == "start") == [
        f"dep{i}" for i in range(5)
    ]
    assert [s.healthy for s in result.values()] == [False] * 5
    assert all(p.cancelled for p in probes)


async def test_no_probes_means_an_empty_report() -> None:
    assert await check([]) == {}
