"""Retention policy (domain) and the pruning turn (use case) over an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidArgument
from domain.retention import DEFAULT_KEEP, Prunable, RetentionPolicy
from usecases.maintenance import PruneExpired

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)


class Fixed:
    def now(self) -> datetime:
        return NOW


class Rows:
    """An in-memory RetentionStore: rows per kind by age; records each call."""

    def __init__(self, times: dict[Prunable, list[datetime]]) -> None:
        self.times = {k: sorted(v) for k, v in times.items()}
        self.calls: list[tuple[Prunable, datetime, int]] = []

    async def prune(self, kind: Prunable, before: datetime, limit: int) -> int:
        self.calls.append((kind, before, limit))
        rows = self.times.get(kind, [])
        old = [t for t in rows if t < before][:limit]
        for t in old:
            rows.remove(t)
        return len(old)


def test_the_default_keeps_and_cutoffs() -> None:
    policy = RetentionPolicy()
    assert dict(policy.keep) == dict(DEFAULT_KEEP)
    cut = policy.cutoffs(NOW)
    assert cut[Prunable.EVENTS] == NOW - 30 * DAY
    assert cut[Prunable.SIGHTINGS] == NOW - 90 * DAY


def test_kept_forever_has_no_cutoff() -> None:
    policy = RetentionPolicy({Prunable.SIGHTINGS: None, Prunable.EVENTS: 2 * DAY})
    assert policy.cutoffs(NOW) == {Prunable.EVENTS: NOW - 2 * DAY}


@pytest.mark.parametrize(
    ("kind", "keep"),
    [(Prunable.EVENTS, timedelta(hours=23)), (Prunable.SIGHTINGS, timedelta(minutes=59))],
)
def test_too_short_a_keep_is_refused_naming_the_kind(kind: Prunable, keep: timedelta) -> None:
    with pytest.raises(InvalidArgument) as err:
        RetentionPolicy({kind: keep})
    assert err.value.violations[0].field == f"retention_{kind.value}"


async def test_a_turn_deletes_in_chunks_until_a_short_one() -> None:
    store = Rows({Prunable.SIGHTINGS: [NOW - (100 + i) * DAY for i in range(7)] + [NOW]})
    prune = PruneExpired(store, Fixed(), RetentionPolicy({Prunable.SIGHTINGS: 90 * DAY}), 3)
    assert await prune() == {Prunable.SIGHTINGS: 7}
    assert [c[2] for c in store.calls] == [3, 3, 3]  # 3 + 3 + 1: the short chunk ends it
    assert store.times[Prunable.SIGHTINGS] == [NOW]


async def test_a_turn_stops_after_max_chunks_and_the_next_goes_on() -> None:
    store = Rows({Prunable.EVENTS: [NOW - (40 + i) * DAY for i in range(10)]})
    policy = RetentionPolicy({Prunable.EVENTS: 30 * DAY})
    prune = PruneExpired(store, Fixed(), policy, chunk=2, max_chunks=3)
    assert await prune() == {Prunable.EVENTS: 6}
    assert await prune() == {Prunable.EVENTS: 4}
    assert await prune() == {Prunable.EVENTS: 0}


def test_chunk_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PruneExpired(Rows({}), Fixed(), RetentionPolicy(), chunk=0)


def test_the_collector_setting_names_itself_when_too_short() -> None:
    from pydantic import ValidationError

    from servers.config.components import CollectorSettings

    with pytest.raises(ValidationError, match="retention_events_days must be at least 1 day"):
        CollectorSettings(retention_events_days=0.5)
    kept_forever = CollectorSettings(retention_events_days=0).retention_policy()
    assert Prunable.EVENTS not in kept_forever.cutoffs(NOW)
