"""Issue 14: the worker waits out a failed batch with the retry library (exponential pauses
with jitter), counting each failure, and carries on with the batch once it works."""

from __future__ import annotations

from adapters import prometheus as m
from domain.errors import DependencyUnavailable
from servers.config import Settings
from servers.worker import WorkerLoop


async def test_a_failing_batch_is_retried_and_each_failure_counted() -> None:
    loop = WorkerLoop(Settings(worker_idle_s=0.001))
    calls: list[int] = []
    failures = [DependencyUnavailable("postgres", "down"), RuntimeError("defect")]

    async def batch() -> str:
        calls.append(len(calls))
        if failures:
            raise failures.pop(0)
        return "done"

    unavailable = m.WORKER_ERRORS.labels("unavailable")._value.get()
    errors = m.WORKER_ERRORS.labels("error")._value.get()
    assert await loop._retrying()(batch) == "done"
    assert calls == [0, 1, 2]
    assert m.WORKER_ERRORS.labels("unavailable")._value.get() == unavailable + 1
    assert m.WORKER_ERRORS.labels("error")._value.get() == errors + 1


def test_pauses_grow_with_jitter_up_to_the_cap() -> None:
    retrying = WorkerLoop(Settings(worker_idle_s=1.0))._retrying()
    wait = retrying.wait

    class State:
        def __init__(self, n: int) -> None:
            self.attempt_number = n

    for n in range(1, 12):
        pause = wait(State(n))  # type: ignore[arg-type]
        assert min(2.0 ** (n - 1), 30.0) <= pause <= 30.0
