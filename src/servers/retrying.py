"""Waiting out a dependency outage, as infrastructure: the pauses come from tenacity's
jittered exponential schedule (``wait_exponential_jitter``), so replicas that lost the same
PostgreSQL or Redis do not come back in lockstep. The use cases keep the rule (retry until it
works, nothing fetched is dropped); the processes inject the schedule."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState, wait_exponential_jitter


def jittered_pause(
    max_s: float, initial_s: float = 1.0, jitter_s: float = 1.0
) -> Callable[[int], float]:
    """``n -> seconds`` for the n-th failure in a row: ``initial * 2**(n-1)`` plus up to
    ``jitter_s`` of random jitter, never more than ``max_s``."""
    strategy = wait_exponential_jitter(initial=initial_s, max=max_s, jitter=jitter_s)

    def pause(failures: int) -> float:
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        return float(strategy(state))

    return pause
