"""Outages are waited out on tenacity's jittered exponential schedule (servers/retrying.py),
injected into the fetch worker by the fetcher's container."""

from __future__ import annotations

from servers.config import load
from servers.container import FetcherContainer
from servers.retrying import jittered_pause


def test_pauses_grow_exponentially_with_bounded_jitter_and_a_ceiling() -> None:
    pause = jittered_pause(max_s=30.0, initial_s=1.0, jitter_s=1.0)
    for n in range(1, 8):
        samples = [pause(n) for _ in range(200)]
        base = min(2 ** (n - 1), 30)
        assert all(base <= p <= min(base + 1.0, 30.0) for p in samples), (n, samples[:3])
        if base + 1.0 <= 30.0:
            assert len(set(samples)) > 50  # jittered: replicas do not come back in lockstep
    assert max(pause(40) for _ in range(50)) <= 30.0


def test_the_fetcher_container_injects_the_schedule() -> None:
    c = FetcherContainer(settings=load([], {}))
    kwargs = c.fetch_worker.kwargs
    assert "pause" in kwargs
    made = kwargs["pause"]()
    assert 1.0 <= made(1) <= 2.0
    assert 16.0 <= made(5) <= 17.0
