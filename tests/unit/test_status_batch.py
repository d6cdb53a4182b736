"""The status step in bulk (domain.status_batch) is the pure replay, exactly: on a noisy
fleet, for every rule kind, from a fresh state, from a checkpoint after some reports and
restarting from a recorded change (as the worker does for late reports)."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from domain.status import (
    Reading,
    RuleKind,
    RuleState,
    StatusRule,
    replay,
)
from domain.status_batch import ReadingColumns, StateColumns, replay_batch
from tests.fleet import FleetConfig, make_fleet, readings_of

PLAIN = StatusRule()
ACCURATE = StatusRule(require_accuracy_within_radius=True, min_confidence=3)
HYSTERESIS = StatusRule(2, 600, True)
EVIDENCE = StatusRule(kind=RuleKind.EVIDENCE)
STRICT = StatusRule(kind=RuleKind.EVIDENCE, min_probability=0.999, outlier_share=0.05)
RULES = [PLAIN, ACCURATE, HYSTERESIS, EVIDENCE, STRICT]


def _fleet(seed: int, trackers: int) -> list[tuple[StatusRule, list[Reading]]]:
    cfg = FleetConfig(trackers=trackers, days=3, seed=seed)
    rng = random.Random(seed)
    out = []
    for t in make_fleet(cfg):
        rule = rng.choice(RULES)
        out.append((rule, [r for r, _ in readings_of(t, rule)]))
    return out


def _starts(
    fleet: list[tuple[StatusRule, list[Reading]]], rng: random.Random
) -> tuple[list[tuple[RuleState, StatusRule]], dict[uuid.UUID, list[Reading]], list[uuid.UUID]]:
    """Per tracker a start (fresh, a checkpoint after a prefix, or right after a recorded
    change) and the readings after it, at most a few (as a worker's batch has)."""
    starts, tails, ids = [], {}, []
    for rule, readings in fleet:
        how = rng.choice(("fresh", "checkpoint", "checkpoint", "change"))
        state, tail = RuleState(), readings
        if how != "fresh" and readings:
            cut = rng.randrange(len(readings))
            state, changes = replay(RuleState(), readings[:cut], rule)
            tail = readings[cut:]
            if how == "change" and changes:
                change = rng.choice(changes)
                state = RuleState.after_change(change)
                tail = [r for r in readings if r.key > change.key]
        tail = tail[: rng.choice((0, 1, 2, 2, 3, 5, 40))]
        t = uuid.uuid4()
        ids.append(t)
        starts.append((state, rule))
        tails[t] = tail
    return starts, tails, ids


@settings(max_examples=25, deadline=None)
@given(hs.integers(0, 10_000))
def test_the_bulk_replay_is_the_pure_replay(seed: int) -> None:
    rng = random.Random(seed)
    fleet = _fleet(seed, 30)
    starts, tails, ids = _starts(fleet, rng)
    columns = ReadingColumns.from_readings(ids, tails)
    assert columns.as_dict() == {t: rs for t, rs in tails.items() if rs}
    stats: dict[str, int] = {}
    got = replay_batch(starts, columns, stats)
    for t, (state, rule), (b_state, b_changes, b_last) in zip(ids, starts, got, strict=True):
        p_state, p_changes = replay(state, tails[t], rule)
        assert b_changes == p_changes
        assert b_state == p_state
        assert b_last == (tails[t][-1] if tails[t] else None)
    assert stats["bulk"] + stats["pure"] == len(ids)


def test_a_batch_at_rest_goes_in_bulk() -> None:
    """Checkpointed trackers with a few new reports, the worker's common case, are not
    replayed one by one (so the bulk path is what the equality above checks)."""
    rng = random.Random(3)
    fleet = _fleet(3, 200)
    starts, tails, ids = [], {}, []
    for rule, readings in fleet:
        if rule.kind is RuleKind.EVIDENCE or rule == PLAIN:
            cut = rng.randrange(len(readings) // 2, len(readings) - 2)
            state, _ = replay(RuleState(), readings[:cut], rule)
            t = uuid.uuid4()
            ids.append(t)
            starts.append((state, rule))
            tails[t] = readings[cut : cut + 2]
    stats: dict[str, int] = {}
    got = replay_batch(starts, ReadingColumns.from_readings(ids, tails), stats)
    assert stats["bulk"] >= 0.8 * len(ids), stats
    for t, (state, rule), (b_state, b_changes, _) in zip(ids, starts, got, strict=True):
        assert (b_state, b_changes) == replay(state, tails[t], rule)


@pytest.mark.parametrize("rule", [PLAIN, EVIDENCE])
def test_reports_at_the_same_time_and_long_gaps(rule: StatusRule) -> None:
    """dt = 0 (two positions at one time) and gaps of weeks go in bulk as in the pure."""
    fleet = _fleet(11, 40)
    starts, tails, ids = [], {}, []
    for _, readings in fleet:
        rs = [r for r, _ in zip(readings, range(12), strict=False)]
        same = [
            Reading(
                type(r.key)(rs[-1].key.report_time, r.key.latitude_e7 + 1, r.key.longitude_e7),
                r.observation,
                r.horizontal_accuracy_m,
                r.confidence,
            )
            for r in rs[-1:]
        ]
        later = [
            Reading(
                type(r.key)(
                    r.key.report_time + timedelta(days=20), r.key.latitude_e7, r.key.longitude_e7
                ),
                r.observation,
                r.horizontal_accuracy_m,
                r.confidence,
            )
            for r in rs[:1]
        ]
        state, _ = replay(RuleState(), rs[:-1], rule)
        t = uuid.uuid4()
        ids.append(t)
        starts.append((state, rule))
        tails[t] = [rs[-1], *same, *later]
    got = replay_batch(starts, ReadingColumns.from_readings(ids, tails))
    for t, (state, r), (b_state, b_changes, _) in zip(ids, starts, got, strict=True):
        assert (b_state, b_changes) == replay(state, tails[t], r)


def test_fresh_trackers_first_seen_far_from_every_fence_go_in_bulk() -> None:
    """The first status needs evidence too: a fresh tracker's belief starts with "inside
    some fence elsewhere" (evidence.ELSEWHERE), which the bulk path carries as well."""
    fleet = _fleet(5, 60)
    starts, tails, ids = [], {}, []
    for rule, readings in fleet:
        if rule.kind is not RuleKind.EVIDENCE:
            continue
        far = [i for i, r in enumerate(readings) if not r.observation.near]
        if not far:
            continue
        t = uuid.uuid4()
        ids.append(t)
        starts.append((RuleState(), rule))
        tails[t] = readings[far[0] : far[0] + 6]
    assert len(ids) >= 5
    stats: dict[str, int] = {}
    got = replay_batch(starts, ReadingColumns.from_readings(ids, tails), stats)
    assert stats["bulk"] >= 1, stats
    for t, (state, rule), (b_state, b_changes, _) in zip(ids, starts, got, strict=True):
        assert (b_state, b_changes) == replay(state, tails[t], rule)


def test_fresh_trackers_first_seen_near_a_fence_go_in_bulk() -> None:
    """A fresh tracker's first report near one fence starts a belief of transit, ELSEWHERE
    and that fence (three hypotheses); the bulk path carries it, exactly."""
    fleet = _fleet(7, 80)
    starts, tails, ids = [], {}, []
    for rule, readings in fleet:
        if rule.kind is not RuleKind.EVIDENCE:
            continue
        at = [i for i, r in enumerate(readings) if len(r.observation.near) == 1]
        if not at:
            continue
        t = uuid.uuid4()
        ids.append(t)
        starts.append((RuleState(), rule))
        tails[t] = readings[at[0] : at[0] + 2]
    assert len(ids) >= 5
    stats: dict[str, int] = {}
    got = replay_batch(starts, ReadingColumns.from_readings(ids, tails), stats)
    assert stats["bulk"] >= 0.8 * len(ids), stats
    for t, (state, rule), (b_state, b_changes, _) in zip(ids, starts, got, strict=True):
        assert (b_state, b_changes) == replay(state, tails[t], rule)


@settings(max_examples=10, deadline=None)
@given(hs.integers(0, 10_000))
def test_states_as_columns_and_back(seed: int) -> None:
    """Every state of the noisy fleet's replays goes into the columns and back unchanged
    (a belief that does not fit the slots stays an object)."""
    rng = random.Random(seed)
    fleet = _fleet(seed, 20)
    starts, _, ids = _starts(fleet, rng)
    cols = StateColumns.of(ids, starts)
    for i, (state, rule) in enumerate(starts):
        if cols.general[i]:
            assert cols.objects[i] == (state, rule)
            assert len(state.belief) > 1
        else:
            assert cols.states.get(i, cols.ids) == state
            assert cols.rule(i) == rule
