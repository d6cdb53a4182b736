"""IngestReports against the in-memory fakes: trackers by hashed key or id, who may push
reports for which tracker, per-report rejection, and idempotency within and across calls."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.access import Principal, Role
from domain.errors import FieldViolation, InvalidArgument
from domain.model import AdvertisementKey, Client, Tracker
from domain.reports import IngestResult, Report, e7
from servers.parts import setup_usecases
from tests.unit.fakes.base import FakeClock, ReportIdentity
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from tests.unit.fakes.reports import FakeReportRepository
from usecases.reports import MAX_CLOCK_SKEW, MAX_REPORTS_PER_CALL, IngestReports, NewReport
from usecases.setup import NewBrand, NewClient, NewProductionRun, NewTracker

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
T = NOW - timedelta(hours=1)
ADMIN = Principal(uuid.UUID(int=1), admin=True)
UNKNOWN = "unknown tracker"
NEEDS_ADMIN = "needs CLIENT_ADMIN of its client"


# -- world -----------------------------------------------------------------------------------


@dataclass
class World:
    ingest: IngestReports
    uow: FakeUnitOfWorkFactory
    clock: FakeClock
    a: Client
    b: Client
    ta: Tracker
    ta2: Tracker
    tb: Tracker

    def stored(self) -> dict[ReportIdentity, Report]:
        return dict(self.uow.committed.reports)

    async def count(self, tracker: Tracker) -> int:
        async with self.uow() as uow:
            assert isinstance(uow.reports, FakeReportRepository)
            return await uow.reports.count(tracker.id)


async def make_world() -> World:
    uow, clock = FakeUnitOfWorkFactory(), FakeClock(NOW - timedelta(days=30))
    setup = setup_usecases(uow, clock)

    async def client_with_trackers(name: str, keys: list[bytes]) -> tuple[Client, list[Tracker]]:
        client = await setup.create_client(ADMIN, NewClient(name))
        brand = await setup.create_brand(ADMIN, NewBrand(client.id, f"{name} brand"))
        run = await setup.create_production_run(
            ADMIN, NewProductionRun(brand.id, "R", NOW - timedelta(days=60), NOW)
        )
        trackers = [await setup.create_tracker(ADMIN, NewTracker(run.id, key)) for key in keys]
        return client, trackers

    a, (ta, ta2) = await client_with_trackers("A", [b"\x01" * 28, b"\x02" * 28])
    b, (tb,) = await client_with_trackers("B", [b"\x03" * 28])
    clock.set(NOW)
    return World(IngestReports(uow, clock), uow, clock, a, b, ta, ta2, tb)


@pytest.fixture
async def w() -> World:
    return await make_world()


def by_key(tracker: Tracker, minute: int = 0, lat: float = 52.5, **kw: Any) -> NewReport:
    fields: dict[str, Any] = dict(
        hashed_advertisement_key=tracker.hashed_advertisement_key,
        report_time=T + timedelta(minutes=minute),
        latitude=lat,
        longitude=13.4,
        confidence=2,
        horizontal_accuracy_m=25,
    )
    fields.update(kw)
    return NewReport(**fields)


def by_id(tracker: Tracker, minute: int = 0, lat: float = 52.5, **kw: Any) -> NewReport:
    return by_key(tracker, minute, lat, tracker_id=tracker.id, hashed_advertisement_key=b"", **kw)


def counts(result: IngestResult) -> tuple[int, int, int, int]:
    return (result.received, result.stored, result.duplicates, result.rejected_count)


def identity(tracker: Tracker, item: NewReport) -> ReportIdentity:
    assert item.report_time is not None
    return (tracker.id, item.report_time, e7(item.latitude), e7(item.longitude))


CALLERS: dict[str, Callable[[World], Principal]] = {
    "admin": lambda w: ADMIN,
    "client_admin_a": lambda w: Principal(uuid.uuid4(), memberships={w.a.id: Role.CLIENT_ADMIN}),
    "client_admin_a_viewer_b": lambda w: Principal(
        uuid.uuid4(), memberships={w.a.id: Role.CLIENT_ADMIN, w.b.id: Role.VIEWER}
    ),
    "viewer_a": lambda w: Principal(uuid.uuid4(), memberships={w.a.id: Role.VIEWER}),
    "viewer_a_client_admin_b": lambda w: Principal(
        uuid.uuid4(), memberships={w.a.id: Role.VIEWER, w.b.id: Role.CLIENT_ADMIN}
    ),
    "client_admin_b": lambda w: Principal(uuid.uuid4(), memberships={w.b.id: Role.CLIENT_ADMIN}),
    "viewer_b": lambda w: Principal(uuid.uuid4(), memberships={w.b.id: Role.VIEWER}),
    "nobody": lambda w: Principal(uuid.uuid4()),
}
# Pushing a report of client A's tracker: None (stored) or the reason it is rejected.
OUTCOME_FOR_A: dict[str, str | None] = {
    "admin": None,
    "client_admin_a": None,
    "client_admin_a_viewer_b": None,
    "viewer_a": NEEDS_ADMIN,
    "viewer_a_client_admin_b": NEEDS_ADMIN,
    "client_admin_b": UNKNOWN,
    "viewer_b": UNKNOWN,
    "nobody": UNKNOWN,
}
HOW = {"by_key": by_key, "by_id": by_id}


# -- resolving trackers and who may push -----------------------------------------------------


@pytest.mark.parametrize("how", HOW)
async def test_reports_are_stored_for_the_tracker_by_hashed_key_or_id(w: World, how: str) -> None:
    items = [HOW[how](w.ta, 0), HOW[how](w.ta, 1, published_time=T, status=3, source="x")]
    result = await w.ingest(ADMIN, items)
    assert result == IngestResult(received=2, stored=2, duplicates=0, rejected_count=0, rejected=())
    stored = w.stored()
    assert set(stored) == {identity(w.ta, i) for i in items}
    first, second = (stored[identity(w.ta, i)] for i in items)
    assert (first.tracker_id, first.report_time, first.source) == (w.ta.id, T, "push")
    assert (first.position.latitude, first.position.longitude) == (52.5, 13.4)
    assert (first.confidence, first.horizontal_accuracy_m, first.status) == (2, 25, 0)
    assert (second.published_time, second.status, second.source) == (T, 3, "x")
    assert (await w.count(w.ta), await w.count(w.ta2), await w.count(w.tb)) == (2, 0, 0)


async def test_the_id_wins_when_both_id_and_hashed_key_are_given(w: World) -> None:
    item = by_key(w.ta, tracker_id=w.ta2.id)
    assert counts(await w.ingest(ADMIN, [item])) == (1, 1, 0, 0)
    assert (await w.count(w.ta), await w.count(w.ta2)) == (0, 1)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("who", CALLERS)
async def test_only_who_manages_the_trackers_client_stores_its_reports(
    w: World, who: str, how: str
) -> None:
    result = await w.ingest(CALLERS[who](w), [HOW[how](w.ta)])
    reason = OUTCOME_FOR_A[who]
    if reason is None:
        assert counts(result) == (1, 1, 0, 0)
        assert result.rejected == ()
        assert await w.count(w.ta) == 1
    else:
        assert counts(result) == (1, 0, 0, 1)
        assert result.rejected == (FieldViolation("reports[0]", reason),)
        assert w.stored() == {}


async def test_another_clients_tracker_reads_exactly_like_an_unknown_one(w: World) -> None:
    caller = CALLERS["client_admin_b"](w)
    missing = replace(w.ta, id=uuid.uuid4())  # never stored
    foreign = [by_key(w.ta), by_id(w.ta2)]
    unknown = [
        by_key(w.ta, hashed_advertisement_key=b"\x00" * 32),
        by_key(w.ta, hashed_advertisement_key=w.ta.advertisement_key.value),  # not hashed
        by_id(missing),
        by_key(w.ta, hashed_advertisement_key=b""),  # neither id nor key
    ]
    of_foreign = await w.ingest(caller, foreign)
    of_unknown = await w.ingest(caller, unknown)
    assert {v.reason for v in of_foreign.rejected + of_unknown.rejected} == {UNKNOWN}
    assert of_foreign.rejected == of_unknown.rejected[: len(foreign)]
    assert [v.field for v in of_unknown.rejected] == [f"reports[{i}]" for i in range(4)]
    assert counts(of_foreign)[1:] == (0, 0, 2)
    assert counts(of_unknown)[1:] == (0, 0, 4)
    assert w.stored() == {}


async def test_an_unknown_or_unmanaged_tracker_hides_the_reports_other_faults(w: World) -> None:
    bad: dict[str, Any] = {
        "confidence": 0,
        "latitude": 91.0,
        "report_time": NOW + timedelta(days=1),
    }
    result = await w.ingest(
        CALLERS["viewer_a_client_admin_b"](w),
        [
            by_key(w.ta, **bad),
            by_key(w.tb, hashed_advertisement_key=b"?", **bad),
            by_key(w.tb, confidence=0),
        ],
    )
    assert result.rejected == (
        FieldViolation("reports[0]", NEEDS_ADMIN),
        FieldViolation("reports[1]", UNKNOWN),
        FieldViolation("reports[2].confidence", "must be 1, 2 or 3"),
    )
    assert counts(result) == (3, 0, 0, 3)


async def test_reports_for_several_trackers_are_judged_one_by_one(w: World) -> None:
    caller = CALLERS["client_admin_a_viewer_b"](w)
    items = [by_key(w.ta), by_key(w.tb), by_id(w.ta2), by_key(w.ta, confidence=9), by_id(w.tb)]
    result = await w.ingest(caller, items)
    assert counts(result) == (5, 2, 0, 3)
    assert result.rejected == (
        FieldViolation("reports[1]", NEEDS_ADMIN),
        FieldViolation("reports[3].confidence", "must be 1, 2 or 3"),
        FieldViolation("reports[4]", NEEDS_ADMIN),
    )
    assert (await w.count(w.ta), await w.count(w.ta2), await w.count(w.tb)) == (1, 1, 0)


# -- invalid reports -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"confidence": 0}, ["confidence"]),
        ({"horizontal_accuracy_m": -1}, ["horizontal_accuracy_m"]),
        ({"status": 256}, ["status"]),
        ({"source": "s" * 65}, ["source"]),
        ({"source": "a\x00b"}, ["source"]),
        ({"latitude": 90.5}, ["latitude"]),
        ({"longitude": -180.5}, ["longitude"]),
        ({"latitude": float("nan"), "longitude": float("inf")}, ["latitude", "longitude"]),
        (
            {"confidence": 4, "horizontal_accuracy_m": 10**9, "status": -1},
            ["confidence", "horizontal_accuracy_m", "status"],
        ),
        ({"report_time": None}, ["report_time"]),
        ({"report_time": datetime(2025, 6, 1, 11)}, ["report_time"]),
        ({"report_time": NOW + MAX_CLOCK_SKEW + timedelta(microseconds=1)}, ["report_time"]),
        ({"report_time": NOW + timedelta(days=400)}, ["report_time"]),
    ],
)
async def test_invalid_reports_are_rejected_naming_every_field(
    w: World, fields: dict[str, Any], expected: list[str]
) -> None:
    items = [by_key(w.ta, 0), by_key(w.ta, 1, **fields), by_key(w.ta, 2)]
    result = await w.ingest(ADMIN, items)
    assert [v.field for v in result.rejected] == [f"reports[1].{f}" for f in expected]
    assert counts(result) == (3, 2, 0, 1)
    assert await w.count(w.ta) == 2


async def test_the_reasons_are_the_domains(w: World) -> None:
    items = [
        by_key(w.ta, report_time=None),
        by_key(w.ta, report_time=NOW + timedelta(hours=1)),
        by_key(w.ta, confidence=0),
    ]
    result = await w.ingest(ADMIN, items)
    assert result.rejected == (
        FieldViolation("reports[0].report_time", "required"),
        FieldViolation(
            "reports[1].report_time",
            "in the future (after 2025-06-01T12:05:00Z: now plus 300 s)",
        ),
        FieldViolation("reports[2].confidence", "must be 1, 2 or 3"),
    )


async def test_up_to_the_clock_skew_ahead_of_the_clock_is_accepted(w: World) -> None:
    edge = NOW + MAX_CLOCK_SKEW
    result = await w.ingest(ADMIN, [by_key(w.ta, report_time=edge)])
    assert counts(result) == (1, 1, 0, 0)
    late = by_key(w.ta, report_time=edge + timedelta(seconds=1))
    assert counts(await w.ingest(ADMIN, [late])) == (1, 0, 0, 1)
    # The limit moves with the clock.
    w.clock.advance(timedelta(seconds=1))
    assert counts(await w.ingest(ADMIN, [late])) == (1, 1, 0, 0)


async def test_old_reports_are_stored(w: World) -> None:
    old = [by_key(w.ta, report_time=NOW - timedelta(days=d)) for d in (1, 35, 400)]
    assert counts(await w.ingest(ADMIN, old)) == (3, 3, 0, 0)


@pytest.mark.parametrize("offset", [0, 1, 250])
async def test_offset_shifts_the_indices_of_rejections(w: World, offset: int) -> None:
    items = [by_key(w.ta, 0), by_key(w.ta, 1, confidence=0), by_id(w.tb)]
    result = await w.ingest(CALLERS["client_admin_a"](w), items, offset)
    assert result.rejected == (
        FieldViolation(f"reports[{offset + 1}].confidence", "must be 1, 2 or 3"),
        FieldViolation(f"reports[{offset + 2}]", UNKNOWN),
    )
    assert counts(result) == (3, 1, 0, 2)


# -- duplicates ------------------------------------------------------------------------------


async def test_duplicates_inside_one_call_are_stored_once(w: World) -> None:
    one, two = by_key(w.ta, 0), by_key(w.ta, 1)
    # The same report by id, with other non-identifying fields, or within 1e-7 degree.
    same = [
        one,
        by_id(w.ta, 0),
        by_key(w.ta, 0, confidence=3, status=1, source="other"),
        by_key(w.ta, 0, lat=52.5 + 4e-8),
    ]
    result = await w.ingest(ADMIN, [*same, two, two])
    assert counts(result) == (6, 2, 4, 0)
    assert set(w.stored()) == {identity(w.ta, one), identity(w.ta, two)}
    # The first one wins.
    assert w.stored()[identity(w.ta, one)].confidence == 2


async def test_duplicates_across_calls_are_counted_not_stored(w: World) -> None:
    batch = [by_key(w.ta, m) for m in range(3)]
    assert counts(await w.ingest(ADMIN, batch)) == (3, 3, 0, 0)
    again = [*reversed(batch), by_key(w.ta, 3), by_id(w.ta, 1)]
    assert counts(await w.ingest(ADMIN, again)) == (5, 1, 4, 0)
    assert counts(await w.ingest(ADMIN, batch)) == (3, 0, 3, 0)
    assert await w.count(w.ta) == 4


async def test_rejected_reports_are_neither_stored_nor_duplicates(w: World) -> None:
    good, bad = by_key(w.ta), by_key(w.ta, 1, confidence=0)
    result = await w.ingest(ADMIN, [good, bad, good, bad])
    assert counts(result) == (4, 1, 1, 2)
    assert [v.field for v in result.rejected] == ["reports[1].confidence", "reports[3].confidence"]


async def test_the_same_time_and_place_of_two_trackers_are_two_reports(w: World) -> None:
    assert counts(await w.ingest(ADMIN, [by_key(w.ta), by_key(w.ta2)])) == (2, 2, 0, 0)


async def test_an_empty_call_stores_nothing(w: World) -> None:
    assert await w.ingest(ADMIN, []) == IngestResult(0, 0, 0, 0, ())
    assert w.stored() == {}


# -- limits ----------------------------------------------------------------------------------


async def test_at_most_ten_thousand_reports_per_call(w: World) -> None:
    too_many = [
        by_key(w.ta, report_time=T - timedelta(seconds=n)) for n in range(MAX_REPORTS_PER_CALL + 1)
    ]
    opened = len(w.uow.opened)
    with pytest.raises(InvalidArgument) as exc:
        await w.ingest(ADMIN, too_many)
    assert [v.field for v in exc.value.violations] == ["reports"]
    assert len(w.uow.opened) == opened
    assert w.stored() == {}
    result = await w.ingest(ADMIN, too_many[:MAX_REPORTS_PER_CALL])
    assert counts(result) == (MAX_REPORTS_PER_CALL, MAX_REPORTS_PER_CALL, 0, 0)


# -- any order, any repetition ---------------------------------------------------------------

# (tracker, minute, latitude step): tracker 0 and 1 are client A's, 2 client B's (the caller
# only views B), 3 is unknown.
distinct_reports = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)),
    min_size=1,
    max_size=12,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(pool=distinct_reports, data=st.data())
async def test_any_order_and_repetition_stores_exactly_the_distinct_reports(
    pool: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    w = await make_world()
    caller = CALLERS["client_admin_a_viewer_b"](w)
    unknown = Tracker(
        id=uuid.uuid4(),
        create_time=NOW,
        update_time=NOW,
        client_id=w.a.id,
        production_run_id=w.ta.production_run_id,
        advertisement_key=AdvertisementKey(b"\x09" * 28),
    )
    trackers = [w.ta, w.ta2, w.tb, unknown]
    sent = data.draw(st.permutations(pool + data.draw(st.lists(st.sampled_from(pool)))))
    via_id = data.draw(st.lists(st.booleans(), min_size=len(sent), max_size=len(sent)))
    items = [
        (by_id if i else by_key)(trackers[t], minute, 52.5 + step * 1e-4)
        for (t, minute, step), i in zip(sent, via_id, strict=True)
    ]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=4)))
    chunks = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]

    totals = [0, 0, 0, 0]
    rejected: list[str] = []
    offset = 0
    for chunk in chunks:
        result = await w.ingest(caller, chunk, offset)
        assert result.received == len(chunk)
        assert result.stored + result.duplicates + result.rejected_count == result.received
        assert len(result.rejected) == result.rejected_count  # one reason per bad report
        totals = [x + y for x, y in zip(totals, counts(result), strict=True)]
        rejected += [v.field for v in result.rejected]
        offset += len(chunk)

    valid = {(t, m, s) for t, m, s in pool if t in (0, 1)}
    expected = {identity(trackers[t], by_key(trackers[t], m, 52.5 + s * 1e-4)) for t, m, s in valid}
    assert set(w.stored()) == expected
    received, stored, duplicates, rejected_count = totals
    assert received == len(items)
    assert stored == len(valid)
    assert rejected_count == sum(1 for t, _, _ in sent if t not in (0, 1))
    assert duplicates == received - stored - rejected_count
    assert rejected == [f"reports[{n}]" for n, (t, _, _) in enumerate(sent) if t not in (0, 1)]


# -- the tracker cache -----------------------------------------------------------------------


async def test_known_trackers_are_remembered_for_the_ttl_and_unknown_ones_not(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.fakes.setup import FakeTrackerRepository
    from usecases.reports import TrackerRefCache

    lookups: list[tuple[list[uuid.UUID], list[bytes]]] = []
    real = FakeTrackerRepository.refs

    async def counting(self: FakeTrackerRepository, ids: Any, hashed: Any) -> Any:
        lookups.append((ids, hashed))
        return await real(self, ids, hashed)

    monkeypatch.setattr(FakeTrackerRepository, "refs", counting)
    ingest = IngestReports(w.uow, w.clock, TrackerRefCache(w.clock, timedelta(seconds=10)))
    assert counts(await ingest(ADMIN, [by_key(w.ta, 0), by_id(w.ta2, 0)])) == (2, 2, 0, 0)
    assert len(lookups) == 1  # both trackers in one query
    assert counts(await ingest(ADMIN, [by_key(w.ta, 1), by_id(w.ta2, 1)])) == (2, 2, 0, 0)
    assert len(lookups) == 1  # remembered
    # An unknown key is asked for every time (a tracker made meanwhile is found at once).
    unknown = by_key(w.ta, 2, hashed_advertisement_key=b"\x07" * 32)
    assert counts(await ingest(ADMIN, [unknown]))[3] == 1
    assert counts(await ingest(ADMIN, [unknown]))[3] == 1
    assert len(lookups) == 3
    w.clock.advance(timedelta(seconds=11))
    assert counts(await ingest(ADMIN, [by_key(w.ta, 3)])) == (1, 1, 0, 0)
    assert len(lookups) == 4  # forgotten after the TTL
    # Access is still decided per call, from the caller: a cached tracker is no shortcut.
    result = await ingest(CALLERS["client_admin_b"](w), [by_key(w.ta, 4)])
    assert result.rejected == (FieldViolation("reports[0]", UNKNOWN),)
