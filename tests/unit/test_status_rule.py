"""The status rule (domain.status) and incremental processing with fakes: priorities,
accuracy, hysteresis, and that any arrival order gives the in-order history."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from domain.errors import InvalidArgument
from domain.geo import City, distance_m
from domain.model import GeoPoint, LocationKind
from domain.reports import Report
from domain.status import (
    Fence,
    Observation,
    Reading,
    ReportKey,
    RuleState,
    StatusRule,
    TrackerStatus,
    classify,
    replay,
    resume_point,
)
from tests.unit.fakes_processing import (
    FakeGeocoder,
    FakeProcessingQueue,
    FakeProcessingStore,
    FakeProcessingUnitOfWork,
)
from usecases.processing import ProcessNewReports

STORE = GeoPoint(52.5219, 13.4132)
D, S, T = TrackerStatus.DELIVERED, TrackerStatus.IN_STORAGE, TrackerStatus.IN_TRANSIT
DELIVERY = Fence(uuid.UUID(int=1), LocationKind.DELIVERY, STORE, 150)
STORAGE = Fence(uuid.UUID(int=2), LocationKind.STORAGE, STORE, 400)
FENCES = [DELIVERY, STORAGE]
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def north(p: GeoPoint, metres: float) -> GeoPoint:
    return GeoPoint(p.latitude + metres / 111_195.0, p.longitude)


def reading(minute: int, status: TrackerStatus | None, n: int = 0) -> Reading:
    return Reading(ReportKey(T0 + timedelta(minutes=minute), n, 0), Observation(status), 10, 3)


def test_delivery_wins_over_storage_and_outside_all_is_in_transit() -> None:
    rule = StatusRule()
    assert classify(STORE, 10, FENCES, rule) == Observation(D, DELIVERY.location_id)
    assert classify(north(STORE, 300), 10, FENCES, rule) == Observation(S, STORAGE.location_id)
    assert classify(north(STORE, 500), 10, FENCES, rule) == Observation(T)
    assert classify(north(STORE, 100), 10, [], rule) == Observation(T)


def test_accuracy_rule_needs_the_whole_circle_inside_and_ignores_straddlers() -> None:
    rule = StatusRule(require_accuracy_within_radius=True)
    assert distance_m(STORE, north(STORE, 100)) == pytest.approx(100, abs=0.5)
    assert classify(north(STORE, 100), 40, FENCES, rule).status is D
    # 100 m + 80 m crosses the delivery edge, but lies inside storage.
    assert classify(north(STORE, 100), 80, FENCES, rule).status is S
    # Crossing the storage edge and outside delivery: tells nothing.
    assert classify(north(STORE, 380), 50, FENCES, rule) == Observation(None)
    assert classify(north(STORE, 500), 50, FENCES, rule).status is T
    assert classify(north(STORE, 380), 50, FENCES, StatusRule()).status is S


def test_rule_values_are_checked_with_field_names() -> None:
    with pytest.raises(InvalidArgument) as err:
        StatusRule(min_consecutive_reports=0, min_dwell_s=-1, min_confidence=4)
    assert [v.field for v in err.value.violations] == [
        "min_consecutive_reports",
        "min_dwell_s",
        "min_confidence",
    ]


statuses = hs.lists(hs.sampled_from([D, S, T, None]), max_size=40)


@given(statuses)
def test_default_rule_records_every_change_and_only_changes(
    seq: list[TrackerStatus | None],
) -> None:
    readings = [reading(i, s) for i, s in enumerate(seq)]
    _, changes = replay(RuleState(), readings, StatusRule())
    expected = [k for k, _ in itertools.groupby(s for s in seq if s is not None)]
    assert [c.status for c in changes] == expected
    assert all(c.status is not c.previous for c in changes)


def test_hysteresis_needs_consecutive_reports_and_dwell() -> None:
    rule = StatusRule(min_consecutive_reports=3, min_dwell_s=300)
    readings = [
        reading(0, S),
        reading(1, T),  # noise
        reading(2, S),
        reading(3, T),
        reading(4, T),
        reading(5, T),  # three in a row, but 2 minutes only
        reading(9, T),  # 6 minutes after the first: change here
    ]
    state, changes = replay(RuleState(), readings, rule)
    assert [(c.status, c.key.report_time) for c in changes] == [
        (S, T0),
        (T, T0 + timedelta(minutes=9)),
    ]
    assert state.pending is None


@settings(max_examples=300)
@given(
    hs.lists(hs.sampled_from([D, S, T, None]), min_size=1, max_size=30),
    hs.integers(1, 3),
    hs.integers(0, 5),
    hs.data(),
)
def test_resuming_at_the_last_change_before_a_late_report_gives_the_full_replay(
    seq: list[TrackerStatus | None], n: int, dwell_min: int, data: hs.DataObject
) -> None:
    rule = StatusRule(min_consecutive_reports=n, min_dwell_s=60 * dwell_min)
    readings = [reading(i, s) for i, s in enumerate(seq)]
    full_state, full = replay(RuleState(), readings, rule)
    late = data.draw(hs.integers(0, len(readings) - 1))
    since = readings[late].key.report_time
    before = [c for c in full if c.key.report_time < since]
    rp = resume_point(since, None, before[-1] if before else None)
    tail = [r for r in readings if rp.after is None or r.key > rp.after]
    state, changes = replay(rp.state, tail, rule)
    assert before + changes == full
    assert state == full_state


places = hs.sampled_from(
    [STORE, north(STORE, 300), north(STORE, 2000), north(STORE, 140), north(STORE, 390)]
)


@settings(max_examples=60, deadline=None)
@given(
    hs.lists(
        hs.tuples(
            hs.integers(0, 3 * 24 * 60), places, hs.sampled_from([5, 30, 120]), hs.integers(1, 3)
        ),
        min_size=1,
        max_size=25,
        unique_by=lambda x: x[0],
    ),
    hs.randoms(use_true_random=False),
    hs.sampled_from(
        [
            StatusRule(),
            StatusRule(min_consecutive_reports=2),
            StatusRule(min_consecutive_reports=2, min_dwell_s=1800, min_confidence=1),
            StatusRule(require_accuracy_within_radius=True),
        ]
    ),
)
async def test_any_arrival_order_gives_the_in_order_history(
    plan: list[tuple[int, GeoPoint, int, int]], rnd: object, rule: StatusRule
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    store = FakeProcessingStore()
    berlin = City(2950159, "Berlin", "DE", GeoPoint(52.52, 13.405))
    process = ProcessNewReports(
        FakeProcessingQueue(store),
        lambda: FakeProcessingUnitOfWork(store),
        FakeGeocoder([berlin]),
        batch_size=2,
    )
    trackers = [uuid.uuid4(), uuid.uuid4()]
    for tracker in trackers:
        store.fences[tracker] = FENCES
        store.rules[tracker] = rule
    for n, tracker in enumerate(trackers):
        reports = [
            Report(
                tracker_id=tracker,
                report_time=T0 + timedelta(minutes=m),
                position=p,
                confidence=conf,
                horizontal_accuracy_m=acc,
            )
            for m, p, acc, conf in sorted(plan, key=lambda x: x[0])
        ]
        if n:
            rnd.shuffle(reports)
        cuts = sorted(rnd.sample(range(len(reports) + 1), k=min(3, len(reports) + 1)))
        for i, j in itertools.pairwise([0, *cuts, len(reports)]):
            store.add_reports(reports[i:j])
            while (await process()).claimed:
                pass
    assert not store.queue
    first, second = (store.changes(t) for t in trackers)
    assert second == first
    assert store.checkpoints.get(trackers[1]) == store.checkpoints.get(trackers[0])
