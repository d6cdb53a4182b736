"""Issue 14: the worker waits out a failed batch with the retry library (exponential pauses
with jitter), counting each failure, and carries on with the batch once it works."""

from __future__ import annotations

from domain.errors import DependencyUnavailable
from domain.processing import ProcessingBacklog
from servers.config import Settings
from servers.worker import WorkerLoop
from usecases.processing import BatchSummary


class RecordingMetrics:
    """``WorkerMetrics`` that remembers what it was told."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def batch(self, summary: BatchSummary, seconds: float) -> None:
        pass

    def backlog(self, backlog: ProcessingBacklog) -> None:
        pass

    def error(self, kind: str) -> None:
        self.errors.append(kind)


async def test_a_failing_batch_is_retried_and_each_failure_counted() -> None:
    loop = WorkerLoop(Settings(worker_idle_s=0.001))
    calls: list[int] = []
    failures = [DependencyUnavailable("postgres", "down"), RuntimeError("defect")]

    async def batch() -> str:
        calls.append(len(calls))
        if failures:
            raise failures.pop(0)
        return "done"

    metrics = RecordingMetrics()
    assert await loop._retrying(metrics)(batch) == "done"
    assert calls == [0, 1, 2]
    assert metrics.errors == ["unavailable", "error"]


def test_pauses_grow_with_jitter_up_to_the_cap() -> None:
    retrying = WorkerLoop(Settings(worker_idle_s=1.0))._retrying(RecordingMetrics())
    wait = retrying.wait

    class State:
        def __init__(self, n: int) -> None:
            self.attempt_number = n

    for n in range(1, 12):
        pause = wait(State(n))  # type: ignore[arg-type]
        assert min(2.0 ** (n - 1), 30.0) <= pause <= 30.0
