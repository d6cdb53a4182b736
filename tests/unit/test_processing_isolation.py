"""Failure isolation of ProcessNewReports over the in-memory fakes: a failing tracker is
found by splitting and quarantined while the rest is processed; retries back off."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as s

from domain.errors import DependencyUnavailable
from domain.geo import NearestCity
from domain.model import GeoPoint
from domain.processing import MAX_REASON_LENGTH, RetryPolicy, failure_reason
from domain.reports import Report
from tests.unit.fakes.processing import (
    FakeGeocoder,
    FakeProcessingQueue,
    FakeProcessingStore,
    FakeProcessingUnitOfWork,
)
from usecases.processing import ProcessNewReports

T0 = datetime(2026, 11, 20, 8, tzinfo=UTC)


class PickyGeocoder(FakeGeocoder):
    def __init__(self, bad: set[GeoPoint], unavailable: bool = False) -> None:
        super().__init__()
        self.bad, self.unavailable, self.calls = bad, unavailable, 0

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        self.calls += 1
        if self.unavailable:
            raise DependencyUnavailable("postgres", "down")
        if self.bad & set(points):
            raise ValueError("year 0 is out of range")
        return await super().nearest(points)


def world(n: int, bad: set[int]) -> tuple[FakeProcessingStore, list[uuid.UUID]]:
    store = FakeProcessingStore()
    trackers = [uuid.uuid4() for _ in range(n)]
    store.add_reports(
        [
            Report(
                tracker_id=t,
                report_time=T0,
                position=GeoPoint(float(i % 80), 1.0) if i not in bad else GeoPoint(-1.0, -1.0),
                confidence=3,
                horizontal_accuracy_m=10,
            )
            for i, t in enumerate(trackers)
        ]
    )
    return store, trackers


def process(store: FakeProcessingStore, geocoder: FakeGeocoder, **kw: object) -> ProcessNewReports:
    return ProcessNewReports(
        FakeProcessingQueue(store),
        lambda: FakeProcessingUnitOfWork(store),
        geocoder,
        **kw,  # type: ignore[arg-type]
    )


async def test_one_failing_tracker_is_quarantined_and_the_rest_processed() -> None:
    store, trackers = world(64, {17})
    geocoder = PickyGeocoder({GeoPoint(-1.0, -1.0)})
    batch = await process(store, geocoder)()
    assert (batch.claimed, batch.trackers, batch.quarantined) == (64, 63, 1)
    assert list(store.queue) == [trackers[17]]
    q = store.queue[trackers[17]]
    assert (q.attempts, q.last_error, q.token) == (1, "ValueError: year 0 is out of range", None)
    assert len(store.checkpoints) == 63
    # Bisection: about 2 log2(64) transactions, far fewer than one per tracker.
    assert geocoder.calls <= 2 * 6 + 1


async def test_a_batch_that_cannot_go_on_hands_everything_back() -> None:
    store, _ = world(5, set())
    with pytest.raises(DependencyUnavailable):
        await process(store, PickyGeocoder(set(), unavailable=True))()
    assert all(q.token is None and not q.attempts for q in store.queue.values())
    assert (await process(store, PickyGeocoder(set()))()).trackers == 5


@given(s.integers(1, 80), s.floats(0.1, 100), s.floats(100, 10_000))
def test_retry_delay_doubles_up_to_its_cap(attempts: int, base: float, cap: float) -> None:
    policy = RetryPolicy(base, cap)
    assert policy.delay_s(1) == base
    assert policy.delay_s(attempts) <= cap
    assert policy.delay_s(attempts + 1) >= policy.delay_s(attempts)
    if policy.delay_s(attempts + 1) < cap:
        assert policy.delay_s(attempts + 1) == 2 * policy.delay_s(attempts)


def test_failure_reason_is_bounded_and_names_the_kind() -> None:
    assert failure_reason(KeyError()) == "KeyError"
    assert len(failure_reason(ValueError("x" * 10_000))) == MAX_REASON_LENGTH
