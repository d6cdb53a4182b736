"""Reading statuses and histories, and setting a run's status rule: access (another client's
tracker looks missing), limits and validation, with in-memory fakes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.access import Principal, Role
from domain.errors import InvalidArgument, NotFound, PermissionDenied
from domain.history import Granularity
from domain.model import Tracker
from domain.pagination import PageRequest
from domain.status import StatusRule
from servers.parts import setup_usecases
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from tests.unit.fakes.processing import FakeStatusRepository
from usecases.setup import NewBrand, NewClient, NewProductionRun, NewTracker
from usecases.status import HistoryQuery, StatusQueries, StatusRuleUpdates

ADMIN = Principal(uuid.UUID(int=1), admin=True)
T0 = datetime(2026, 11, 20, tzinfo=UTC)


async def world() -> tuple[StatusQueries, FakeStatusRepository, list[Tracker]]:
    uow = FakeUnitOfWorkFactory()
    setup = setup_usecases(uow, FakeClock(T0))
    trackers = []
    for name in ("alpha", "bravo"):
        client = await setup.create_client(ADMIN, NewClient(name))
        brand = await setup.create_brand(ADMIN, NewBrand(client.id, name))
        run = await setup.create_production_run(
            ADMIN, NewProductionRun(brand.id, name, T0, T0 + timedelta(days=30))
        )
        key = uuid.uuid4().bytes + uuid.uuid4().bytes[:12]
        trackers.append(await setup.create_tracker(ADMIN, NewTracker(run.id, key)))
    repo = FakeStatusRepository(uow)
    return StatusQueries(repo, uow), repo, trackers


def member(tracker: Tracker, role: Role = Role.VIEWER) -> Principal:
    return Principal(uuid.uuid4(), memberships={tracker.client_id: role})


async def test_another_clients_tracker_looks_exactly_like_a_missing_one() -> None:
    uc, repo, (a, b) = await world()
    viewer = member(a)
    assert (await uc.get_status(viewer, a.id)).status is None
    with pytest.raises(NotFound) as hidden:
        await uc.get_status(viewer, b.id)
    missing_id = uuid.uuid4()
    with pytest.raises(NotFound) as missing:
        await uc.get_status(viewer, missing_id)
    assert str(hidden.value).replace(str(b.id), "?") == str(missing.value).replace(
        str(missing_id), "?"
    )
    for call in (
        uc.list_status_history(viewer, HistoryQuery(b.id), PageRequest()),
        uc.list_location_history(viewer, HistoryQuery(b.id), Granularity.RAW, 2, PageRequest()),
        uc.batch_get_statuses(viewer, [a.id, b.id]),
        uc.get_status_rule(viewer, b.production_run_id),
    ):
        with pytest.raises(NotFound):
            await call
    assert repo.queries == []


async def test_batch_get_keeps_the_order_asked_and_checks_its_size() -> None:
    uc, _, (a, b) = await world()
    got = await uc.batch_get_statuses(ADMIN, [b.id, a.id, b.id])
    assert [s.tracker_id for s in got] == [b.id, a.id, b.id]
    with pytest.raises(InvalidArgument) as err:
        await uc.batch_get_statuses(ADMIN, [])
    assert err.value.violations[0].field == "tracker_ids"
    with pytest.raises(InvalidArgument):
        await uc.batch_get_statuses(ADMIN, [a.id] * 1001)


async def test_history_lists_are_limited_to_the_callers_clients_and_validated() -> None:
    uc, repo, (a, _) = await world()
    viewer = member(a)
    await uc.list_location_history(viewer, HistoryQuery(), Granularity.AUTO, 0, PageRequest())
    [(f, granularity, confidence)] = repo.queries
    assert f.visible_clients == frozenset({a.client_id})
    assert (granularity, confidence) == (Granularity.AUTO, 2)  # confidence >= 2 by default
    with pytest.raises(InvalidArgument) as err:
        await uc.list_location_history(viewer, HistoryQuery(), Granularity.RAW, 4, PageRequest())
    assert err.value.violations[0].field == "min_confidence"
    with pytest.raises(InvalidArgument) as err:
        await uc.list_status_history(viewer, HistoryQuery(None, T0, T0), PageRequest())
    assert err.value.violations[0].field == "end_time"


async def test_only_client_admins_set_a_runs_rule_and_may_reevaluate_its_history() -> None:
    uc, repo, (a, _) = await world()
    rules = StatusRuleUpdates(repo, uc._uow)
    rule = StatusRule(min_consecutive_reports=3)
    with pytest.raises(PermissionDenied):
        await rules.set_status_rule(member(a), a.production_run_id, rule)
    await rules.set_status_rule(member(a, Role.CLIENT_ADMIN), a.production_run_id, rule)
    assert repo.reevaluated == []
    assert await uc.get_status_rule(member(a), a.production_run_id) == rule
    await rules.set_status_rule(ADMIN, a.production_run_id, StatusRule(), reevaluate=True)
    assert repo.reevaluated == [a.production_run_id]
