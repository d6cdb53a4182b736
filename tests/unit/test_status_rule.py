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
    RuleKind,
    RuleState,
    StatusRule,
    TrackerStatus,
    classify,
    replay,
    resume_point,
)
from tests.unit.fakes.processing import (
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
        reading(10, S),
        reading(11, S),
        reading(16, S),
    ]
    state, changes = replay(RuleState(), readings, rule)
    # The first status needs the rule too (it used to be the first reading's, at once).
    assert [(c.status, c.key.report_time, c.evidence_since) for c in changes] == [
        (T, T0 + timedelta(minutes=9), T0 + timedelta(minutes=3)),
        (S, T0 + timedelta(minutes=16), T0 + timedelta(minutes=10)),
    ]
    assert all(c.probability is None for c in changes)
    assert state.pending is None


def test_the_plain_rule_decides_the_first_status_at_once() -> None:
    _, changes = replay(RuleState(), [reading(0, S)], StatusRule())
    assert [(c.status, c.previous, c.evidence_since) for c in changes] == [(S, None, T0)]


def test_a_dwell_needs_at_least_two_reports_and_the_rule_says_so() -> None:
    with pytest.raises(InvalidArgument) as err:
        StatusRule(min_consecutive_reports=1, min_dwell_s=600)
    assert [v.field for v in err.value.violations] == ["min_consecutive_reports"]
    rule = StatusRule(min_consecutive_reports=2, min_dwell_s=600)
    _, changes = replay(RuleState(), [reading(0, S), reading(5, S), reading(10, S)], rule)
    assert [(c.status, c.key.report_time) for c in changes] == [(S, T0 + timedelta(minutes=10))]


def test_evidence_rule_values_are_checked_with_field_names() -> None:
    with pytest.raises(InvalidArgument) as err:
        StatusRule(
            kind=RuleKind.EVIDENCE,
            min_consecutive_reports=2,
            min_probability=0.4,
            outlier_share=0.0,
        )
    assert sorted(v.field for v in err.value.violations) == [
        "min_consecutive_reports",
        "min_probability",
        "outlier_share",
    ]


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
    rule = StatusRule(min_consecutive_reports=n, min_dwell_s=60 * dwell_min if n > 1 else 0)
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
            StatusRule(kind=RuleKind.EVIDENCE),
            StatusRule(kind=RuleKind.EVIDENCE, min_probability=0.9, outlier_share=0.1),
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


# --- the evidence rule -----------------------------------------------------------------

EVIDENCE = StatusRule(kind=RuleKind.EVIDENCE)
# as in the fleet: a delivery fence of 100 m, a storage fence of 150 m 3 km away
WAREHOUSE = north(STORE, 3000)
EV_FENCES = [
    Fence(uuid.UUID(int=1), LocationKind.DELIVERY, STORE, 100),
    Fence(uuid.UUID(int=2), LocationKind.STORAGE, WAREHOUSE, 150),
]


def seen(
    minute: int, p: GeoPoint, accuracy_m: int, confidence: int = 3, fences: list[Fence] = EV_FENCES
) -> Reading:
    key = ReportKey(T0 + timedelta(minutes=minute), round(p.latitude * 1e7), 0)
    return Reading(key, classify(p, accuracy_m, fences, EVIDENCE), accuracy_m, confidence)


ROAD = north(STORE, -5000)


def test_one_precise_report_deep_inside_decides_at_once_after_travelling() -> None:
    travel = [seen(m, north(STORE, -5000 + 40 * m), 35) for m in range(0, 100, 30)]
    state, changes = replay(RuleState(), travel, EVIDENCE)
    assert [c.status for c in changes] == [T]
    state, changes = replay(state, [seen(130, north(STORE, 10), 10)], EVIDENCE)
    assert [(c.status, c.location_id) for c in changes] == [(D, DELIVERY.location_id)]
    (c,) = changes
    assert c.probability is not None
    assert c.probability >= EVIDENCE.min_probability
    assert c.evidence_since == c.key.report_time


def test_vague_reports_take_longer_and_date_the_arrival_from_the_first_of_them() -> None:
    state, _ = replay(RuleState(), [seen(m, ROAD, 35) for m in (0, 30, 60)], EVIDENCE)
    vague = [seen(90 + 20 * i, north(STORE, 30), 600, 2) for i in range(8)]
    first = 0
    state, changes = replay(state, vague[:1], EVIDENCE)
    assert changes == []
    state, changes = replay(state, vague[1:], EVIDENCE)
    assert [c.status for c in changes] == [D]
    (c,) = changes
    assert c.key.report_time > vague[first].key.report_time
    assert c.evidence_since == vague[first].key.report_time


def test_an_outlier_alone_never_moves_a_settled_status() -> None:
    settled = [seen(30 * i, north(STORE, 20), 35) for i in range(6)]
    state, changes = replay(RuleState(), settled, EVIDENCE)
    assert [c.status for c in changes] == [D]
    for far, accuracy in ((north(STORE, -2000), 10), (north(STORE, 600), 35), (ROAD, 5)):
        after, changes = replay(state, [seen(200, far, accuracy, 2)], EVIDENCE)
        assert changes == [], (far, accuracy)
        _, changes = replay(after, [seen(230, north(STORE, 20), 60)], EVIDENCE)
        assert changes == []
    # a string of far-off reports does move it (a delivered parcel rarely leaves: in 2 h)
    away = [seen(200 + 30 * i, ROAD, 20) for i in range(5)]
    _, changes = replay(state, away, EVIDENCE)
    assert [c.status for c in changes] == [T]
    assert changes[0].key.report_time > away[1].key.report_time


def test_the_first_status_needs_evidence_too() -> None:
    # far from every fence, as an outlier of a stored tracker would be: not at once
    state, changes = replay(RuleState(), [seen(0, ROAD, 35, 2)], EVIDENCE)
    assert changes == []
    assert state.status is None
    _, changes = replay(state, [seen(30, ROAD, 35, 2)], EVIDENCE)
    assert [(c.status, c.previous) for c in changes] == [(T, None)]
    # one vague report inside storage is not enough either; one precise one is
    _, changes = replay(RuleState(), [seen(0, north(WAREHOUSE, 50), 600, 2)], EVIDENCE)
    assert changes == []
    _, changes = replay(RuleState(), [seen(0, north(WAREHOUSE, 50), 10)], EVIDENCE)
    assert [(c.status, c.location_id) for c in changes] == [(S, EV_FENCES[1].location_id)]


def test_nested_fences_settle_on_the_delivery_fence_in_a_few_reports() -> None:
    # delivery (150 m) inside storage (400 m): both explain a report at the centre, the
    # smaller one better, so the evidence for it grows with each report
    state, _ = replay(RuleState(), [seen(m, ROAD, 35, fences=FENCES) for m in (0, 30)], EVIDENCE)
    inside = [seen(60 + 20 * i, north(STORE, 10), 10, fences=FENCES) for i in range(4)]
    _, changes = replay(state, inside, EVIDENCE)
    assert [(c.status, c.location_id) for c in changes] == [(D, DELIVERY.location_id)]


evidence_places = hs.sampled_from(
    [
        STORE,
        north(STORE, 90),
        north(STORE, 160),
        north(STORE, 900),
        WAREHOUSE,
        north(WAREHOUSE, 140),
        north(WAREHOUSE, 200),
        ROAD,
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    hs.lists(
        hs.tuples(evidence_places, hs.sampled_from([5, 35, 120, 400]), hs.integers(1, 3)),
        min_size=1,
        max_size=40,
    ),
    hs.lists(hs.integers(1, 240), min_size=40, max_size=40),
    hs.data(),
)
def test_evidence_resuming_at_the_last_change_before_a_late_report_gives_the_full_replay(
    plan: list[tuple[GeoPoint, int, int]], gaps: list[int], data: hs.DataObject
) -> None:
    minutes = list(itertools.accumulate(gaps))
    readings = [seen(m, p, a, c) for m, (p, a, c) in zip(minutes, plan, strict=False)]
    full_state, full = replay(RuleState(), readings, EVIDENCE)
    for c in full:
        assert c.probability is not None
        assert c.probability >= EVIDENCE.min_probability
        assert c.evidence_since is not None
        assert c.evidence_since <= c.key.report_time
    late = data.draw(hs.integers(0, len(readings) - 1))
    since = readings[late].key.report_time
    before = [c for c in full if c.key.report_time < since]
    rp = resume_point(since, None, before[-1] if before else None)
    tail = [r for r in readings if rp.after is None or r.key > rp.after]
    state, changes = replay(rp.state, tail, EVIDENCE)
    assert before + changes == full
    assert state == full_state
    # and in pieces, from each checkpoint
    cut = data.draw(hs.integers(0, len(readings)))
    mid, head = replay(RuleState(), readings[:cut], EVIDENCE)
    end, rest = replay(mid, readings[cut:], EVIDENCE)
    assert head + rest == full
    assert end == full_state


def test_on_a_noisy_fleet_the_evidence_rule_is_rarely_wrong_and_finds_every_delivery() -> None:
    from tests.fleet import FleetConfig, make_fleet, score

    cfg = FleetConfig(trackers=40, days=4, seed=7)
    fleet = make_fleet(cfg)
    plain = score("plain", fleet, StatusRule(), cfg.days)
    weighed = score("evidence", fleet, EVIDENCE, cfg.days)
    assert plain.deliveries == weighed.deliveries > 30
    assert plain.false_changes > 20 * max(weighed.false_changes, 1)
    assert weighed.wrong_report_share < plain.wrong_report_share / 4
    assert weighed.deliveries_detected == weighed.deliveries
    assert weighed.within(7200) >= 0.95


@settings(max_examples=300)
@given(
    hs.floats(0.0, 1.0),
    hs.sampled_from([LocationKind.DELIVERY, LocationKind.STORAGE]),
    hs.floats(0.0, 3000.0),
    hs.floats(0.0, 86400.0),
    hs.integers(0, 5000),
    hs.integers(1, 3),
)
def test_the_settled_shortcut_is_the_general_step_bit_for_bit(
    p: float, kind: LocationKind, d: float, dt: float, accuracy: int, confidence: int
) -> None:
    from domain import evidence as ev

    fence = ev.NearFence(uuid.UUID(int=5), kind, 100.0, d)
    belief: ev.Belief = ((None, None, 1.0 - p), (fence.location_id, kind, p))
    args = (belief, (fence,), dt, accuracy, confidence, 0.02)
    assert ev._step_settled(belief, fence, dt, accuracy, confidence, 0.02) == (
        ev._step_general(*args)
    )
