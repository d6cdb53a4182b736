"""The reports port's contract, on the fakes and PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import timedelta, timezone

import pytest

from tests.contract.builders import (
    T0,
    a_report,
)
from tests.contract.conftest import Uows
from tests.unit.fakes.common import FakeUnitOfWork
from tests.unit.fakes.reports import FakeReportRepository

# -- reports ---------------------------------------------------------------------------------


def reports_of(uow: FakeUnitOfWork) -> FakeReportRepository:
    assert isinstance(uow.reports, FakeReportRepository)
    return uow.reports


@pytest.mark.postgres_differs("fake-count")
async def test_reports_are_stored_once_and_add_many_counts_the_new_ones(uows: Uows) -> None:
    factory = uows
    tracker, other = uuid.uuid4(), uuid.uuid4()
    first = [a_report(tracker, n) for n in range(3)]
    async with factory() as uow:
        repo = reports_of(uow)
        assert await repo.add_many([]) == 0
        assert await repo.add_many(first) == 3
        assert await repo.add_many(first) == 0
        # Repeats within one call and against stored ones are not new.
        assert await repo.add_many([first[1], a_report(tracker, 3), a_report(tracker, 3)]) == 1
        assert await repo.add_many([a_report(other, 0)]) == 1
        assert (await repo.count(tracker), await repo.count(other)) == (4, 1)
        assert await repo.count(uuid.uuid4()) == 0


async def test_add_new_names_the_tracker_of_each_report_not_stored_before(uows: Uows) -> None:
    """What the fetcher calls news: the insert itself tells, no read of what is held."""
    tracker, other = uuid.uuid4(), uuid.uuid4()
    first = [a_report(tracker, n) for n in range(2)]
    async with uows() as uow:
        assert await uow.reports.add_new([]) == []
        new = await uow.reports.add_new([*first, a_report(other, 0)])
        assert sorted(new, key=str) == sorted([tracker, tracker, other], key=str)
        again = [first[0], a_report(tracker, 2), a_report(tracker, 2), a_report(other, 0)]
        assert await uow.reports.add_new(again) == [tracker]
        assert await uow.reports.add_new(again) == []


@pytest.mark.postgres_differs("fake-count")
async def test_a_report_is_the_same_by_tracker_time_and_position_and_the_first_wins(
    uows: Uows,
) -> None:
    factory = uows
    tracker = uuid.uuid4()
    stored = a_report(tracker, confidence=1, source="findmy")
    plus_two = timezone(timedelta(hours=2))
    same = [
        a_report(tracker, confidence=3, horizontal_accuracy_m=5, status=7, source="push"),
        a_report(tracker, published_time=T0),
        # The same instant in another zone; the position to 1e-7 degree.
        a_report(tracker, report_time=T0.astimezone(plus_two)),
        a_report(tracker, lat=52.5 + 4e-8, lon=13.4 - 4e-8),
    ]
    different = [
        a_report(uuid.uuid4()),
        a_report(tracker, report_time=T0 + timedelta(microseconds=1)),
        a_report(tracker, lat=52.5 + 1e-7),
        a_report(tracker, lon=13.4 - 1e-7),
    ]
    async with factory() as uow:
        repo = reports_of(uow)
        assert await repo.add_many([stored]) == 1
        assert await repo.add_many(same) == 0
        assert await repo.add_many(different) == len(different)
        await uow.commit()
    assert factory.committed.reports[stored.identity] == stored


@pytest.mark.postgres_differs("fake-count")
async def test_reports_follow_commit_and_rollback(uows: Uows) -> None:
    factory = uows
    tracker = uuid.uuid4()
    async with factory() as uow:
        assert await reports_of(uow).add_many([a_report(tracker, 0)]) == 1
    async with factory() as uow:
        # Rolled back: new again.
        assert await reports_of(uow).count(tracker) == 0
        assert await reports_of(uow).add_many([a_report(tracker, 0)]) == 1
        async with factory() as other:
            assert await reports_of(other).count(tracker) == 0
        await uow.commit()
    async with factory() as uow:
        assert await reports_of(uow).count(tracker) == 1
        assert await reports_of(uow).add_many([a_report(tracker, 0), a_report(tracker, 1)]) == 1
    assert list(factory.committed.reports) == [a_report(tracker, 0).identity]
    with pytest.raises(RuntimeError):
        await reports_of(uow).count(tracker)
