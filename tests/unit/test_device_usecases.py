"""Devices and firmware use cases over the in-memory fakes: profiles, check-ins, rollouts,
and a 10,000-device fleet whose cells have a bandwidth limit (seed 004): without a throttle
the rollout fails, with one it completes."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from domain.access import Principal, Role
from domain.devices import (
    CheckIn,
    DeviceRolloutState,
    ProfileScope,
    RolloutPolicy,
    RolloutState,
)
from domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from domain.firmware import (
    Combination,
    CombinationState,
    Release,
    Requirement,
    Version,
    VersionRange,
)
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.devices import FakeDevicesUnitOfWorkFactory
from tests.unit.fakes.keys import FakeSealer
from usecases.devices import (
    DeviceCatalog,
    DeviceInput,
    DeviceProfiles,
    DeviceQueries,
    Devices,
    PlannerCache,
    ProfileInput,
    RolloutInput,
    Rollouts,
)

CLIENT = uuid.uuid4()
OTHER = uuid.uuid4()
ADMIN = Principal.system()


def _principal(client: uuid.UUID, role: Role) -> Principal:
    return Principal(user_id=uuid.uuid4(), admin=False, memberships={client: role})


OWNER = _principal(CLIENT, Role.CLIENT_ADMIN)
VIEWER = _principal(CLIENT, Role.VIEWER)
STRANGER = _principal(OTHER, Role.CLIENT_ADMIN)


def C(**v: str) -> Combination:
    return Combination.parse(v)


START = C(mcu="1.3.0", ble="1.0.0")
TARGET = C(mcu="2.0.0", ble="2.0.0")


@dataclass
class World:
    uow: FakeDevicesUnitOfWorkFactory
    clock: FakeClock
    catalog: DeviceCatalog
    profiles: DeviceProfiles
    devices: Devices
    rollouts: Rollouts
    queries: DeviceQueries
    type_id: uuid.UUID


async def _world() -> World:
    uow = FakeDevicesUnitOfWorkFactory()
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    sealer = FakeSealer()
    planners = PlannerCache()
    w = World(
        uow,
        clock,
        DeviceCatalog(uow, clock),
        DeviceProfiles(uow, clock, sealer),
        Devices(uow, clock, sealer, planners),
        Rollouts(uow, clock),
        DeviceQueries(uow, clock, planners),
        uuid.uuid4(),
    )
    t = await w.catalog.create_type(OWNER, CLIENT, "Gateway G2", ["mcu", "ble"])
    w.type_id = t.id

    def rel(c: str, v: str, *req: tuple[str, str]) -> Release:
        return Release(
            c, Version.parse(v), tuple(Requirement(x, VersionRange.parse(r)) for x, r in req)
        )

    for r in (
        rel("mcu", "1.3.0"),
        rel("mcu", "1.4.0"),
        rel("mcu", "2.0.0", ("ble", ">=2")),
        rel("ble", "1.0.0", ("mcu", "<2")),
        rel("ble", "2.0.0", ("mcu", ">=1.4")),
    ):
        await w.catalog.add_release(OWNER, t.id, r)
    assert await w.catalog.derive_combinations(OWNER, t.id) == 4
    good = [
        c.combination for c in await w.queries.combinations(OWNER, t.id, CombinationState.CANDIDATE)
    ]
    await w.catalog.add_combinations(OWNER, t.id, good, CombinationState.KNOWN_GOOD)
    return w


async def test_catalogue_rules() -> None:
    w = await _world()
    with pytest.raises(AlreadyExists):
        await w.catalog.create_type(OWNER, CLIENT, "Gateway G2", ["mcu"])
    with pytest.raises(InvalidArgument) as e:
        await w.catalog.add_release(OWNER, w.type_id, Release("lte", Version.parse("1.0.0")))
    assert e.value.violations[0].field == "release.component"
    with pytest.raises(FailedPrecondition) as e2:
        await w.catalog.add_combinations(
            OWNER, w.type_id, [C(mcu="1.3.0", ble="2.0.0")], CombinationState.KNOWN_GOOD
        )
    assert "ble 2.0.0 requires mcu >=1.4" in e2.value.reason
    with pytest.raises(NotFound):
        await w.catalog.add_release(STRANGER, w.type_id, Release("mcu", Version.parse("3.0.0")))
    with pytest.raises(PermissionDenied):
        await w.catalog.add_release(VIEWER, w.type_id, Release("mcu", Version.parse("3.0.0")))
    steps = await w.queries.plan(VIEWER, w.type_id, None, START, TARGET)
    assert [(s.component, str(s.to_version)) for s in steps] == [
        ("mcu", "1.4.0"),
        ("ble", "2.0.0"),
        ("mcu", "2.0.0"),
    ]


async def test_profiles_resolve_by_scope_and_secrets_reach_only_the_device() -> None:
    w = await _world()
    run_id, loc_id = uuid.uuid4(), uuid.uuid4()
    from domain.model import GeoPoint, Location, LocationKind, ProductionRun

    now = w.clock.now()
    w.uow.tables.runs[run_id] = ProductionRun(
        id=run_id,
        create_time=now,
        update_time=now,
        brand_id=uuid.uuid4(),
        client_id=CLIENT,
        display_name="Run",
        start_time=now,
        end_time=now + timedelta(days=30),
    )
    w.uow.tables.locations[loc_id] = Location(
        id=loc_id,
        create_time=now,
        update_time=now,
        production_run_id=run_id,
        client_id=CLIENT,
        kind=LocationKind.STORAGE,
        display_name="Site",
        center=GeoPoint(52.0, 4.0),
        radius_m=100,
    )
    await w.profiles.create(
        OWNER,
        ProfileInput(
            "defaults",
            ProfileScope.CLIENT,
            CLIENT,
            None,
            {"interval_s": "900", "ssid": "corp"},
            {},
            {"firmware": True, "lte": False},
        ),
    )
    site = await w.profiles.create(
        OWNER,
        ProfileInput(
            "site",
            ProfileScope.LOCATION,
            loc_id,
            w.type_id,
            {"interval_s": "300"},
            {"wifi_password": "hunter2"},
            {"lte": True},
        ),
    )
    with pytest.raises(NotFound):
        await w.profiles.create(
            STRANGER, ProfileInput("x", ProfileScope.LOCATION, loc_id, None, {}, {}, {})
        )
    d = await w.devices.register(
        OWNER, DeviceInput(CLIENT, w.type_id, "SN-1", "cell-1", run_id, loc_id, None, START)
    )
    r = await w.devices.check_in(OWNER, CheckIn(d.id, START))
    assert r.profile.values == {"interval_s": "300", "ssid": "corp"}
    assert r.profile.services == {"firmware": True, "lte": True}
    assert r.secrets == {"wifi_password": "hunter2"}
    assert r.profile_changed
    assert "hunter2" not in repr(w.uow.tables.profiles)
    again = await w.devices.check_in(OWNER, CheckIn(d.id, START, profile_digest=r.profile.digest))
    assert not again.profile_changed
    assert again.secrets == {}
    await w.profiles.update(OWNER, site.id, {"interval_s": "120"}, None, None)
    changed = await w.devices.check_in(OWNER, CheckIn(d.id, START, profile_digest=r.profile.digest))
    assert changed.profile_changed
    assert changed.profile.values["interval_s"] == "120"
    assert changed.secrets == {"wifi_password": "hunter2"}
    shown = await w.queries.resolved_profile(VIEWER, d.id)
    assert set(shown.secrets) == {"wifi_password"}
    with pytest.raises(PermissionDenied):
        await w.devices.check_in(VIEWER, CheckIn(d.id, START))


async def _fleet(w: World, n: int, groups: int, versions: Combination = START) -> list[uuid.UUID]:
    ids = []
    for i in range(n):
        d = await w.devices.register(
            OWNER,
            DeviceInput(CLIENT, w.type_id, f"SN-{i:05d}", f"cell-{i % groups}", versions=versions),
        )
        ids.append(d.id)
    return ids


async def test_a_device_walks_its_path_one_step_per_check_in_and_failures_are_retried() -> None:
    w = await _world()
    [dev] = await _fleet(w, 1, 1)
    p = await w.rollouts.create(
        OWNER,
        RolloutInput(
            "to 2.0",
            w.type_id,
            TARGET,
            RolloutPolicy(phases=(100.0,), max_attempts=2, min_outcomes=50),
        ),
    )
    r1 = await w.devices.check_in(OWNER, CheckIn(dev, START))
    assert r1.step is not None
    assert (r1.step.component, str(r1.step.to_version)) == ("mcu", "1.4.0")
    # Not done yet: the same step again.
    assert (await w.devices.check_in(OWNER, CheckIn(dev, START))).step == r1.step
    failed = await w.devices.check_in(
        OWNER, CheckIn(dev, START, failed_step=True, failure_reason="crc")
    )
    assert failed.outcome is not None
    assert not failed.outcome.succeeded
    assert failed.rollout_device is not None
    assert failed.rollout_device.attempts == 1
    assert failed.step == r1.step  # retried at once: attempts left
    current = r1.step.result
    while True:
        r = await w.devices.check_in(OWNER, CheckIn(dev, current))
        if r.step is None:
            break
        current = r.step.result
    assert current == TARGET
    prog = await w.queries.rollout(VIEWER, p.rollout.id)
    assert prog.rollout.state is RolloutState.COMPLETED
    assert prog.devices[DeviceRolloutState.DONE] == 1


async def test_a_rollout_needs_a_known_good_target_and_free_devices() -> None:
    w = await _world()
    await _fleet(w, 3, 1)
    with pytest.raises(FailedPrecondition):
        await w.rollouts.create(
            OWNER, RolloutInput("x", w.type_id, C(mcu="1.3.0", ble="2.0.0"), RolloutPolicy())
        )
    await w.rollouts.create(OWNER, RolloutInput("a", w.type_id, TARGET, RolloutPolicy()))
    with pytest.raises(FailedPrecondition) as e:
        await w.rollouts.create(OWNER, RolloutInput("b", w.type_id, TARGET, RolloutPolicy()))
    assert "already in a running or paused rollout" in e.value.reason
    with pytest.raises(InvalidArgument) as e2:
        await w.rollouts.create(
            OWNER, RolloutInput("c", w.type_id, TARGET, RolloutPolicy(phases=(50.0, 10.0)))
        )
    assert e2.value.violations[0].field == "phases"


# --- the seed's rollout: 10,000 devices, cells with limited bandwidth ----------------------

CELLS = 200
BANDWIDTH = 8
"""Concurrent downloads a cell carries; beyond it packets are lost and downloads fail."""
DOWNLOAD_TICKS = 2


async def _simulate(
    max_in_flight: int, seed: int, n: int = 10_000
) -> tuple[RolloutState, dict[DeviceRolloutState, int], int]:
    """Tick = one minute. A device checks in when its download ends (reporting the new
    versions, or a failure when its cell was overloaded during the download) and, when idle,
    with probability 0.5 per tick. Devices outside the open phase, and devices that are done,
    are not simulated: their check-ins would change nothing."""
    rng = random.Random(seed)
    w = await _world()
    start = C(mcu="1.4.0", ble="1.0.0")  # two steps: ble 2.0, then mcu 2.0
    ids = await _fleet(w, n, CELLS, start)
    group = {d: f"cell-{i % CELLS}" for i, d in enumerate(ids)}
    policy = RolloutPolicy(
        phases=(1.0, 10.0, 50.0, 100.0),
        max_in_flight_per_group=max_in_flight,
        pause_failure_rate=0.1,
        abort_failure_rate=0.25,
        min_outcomes=30,
        max_attempts=3,
        step_timeout=timedelta(minutes=30),
    )
    p = await w.rollouts.create(OWNER, RolloutInput("fleet", w.type_id, TARGET, policy))
    rid = p.rollout.id
    versions = dict.fromkeys(ids, start)
    downloading: dict[uuid.UUID, tuple[int, object, bool]] = {}  # device -> (end tick, step, lost)
    bucket = {d: w.uow.tables.records[(rid, d)].bucket for d in ids}
    waiting = sorted(ids, key=bucket.__getitem__, reverse=True)  # not yet in an open phase
    active: set[uuid.UUID] = set()  # in an open phase, neither done nor failed for good
    peak = 0
    for tick in range(2000):
        w.clock.advance(timedelta(minutes=1))
        state = w.uow.tables.rollouts[rid].state
        if state in (RolloutState.ABORTED, RolloutState.COMPLETED, RolloutState.PAUSED):
            break
        # Packet loss: a cell over its bandwidth loses packets of every download in it.
        per_cell: dict[str, int] = {}
        for d in downloading:
            per_cell[group[d]] = per_cell.get(group[d], 0) + 1
        peak = max([peak, *per_cell.values()])
        for d, (end, step, _lost) in list(downloading.items()):
            if per_cell[group[d]] > BANDWIDTH and rng.random() < 0.5:
                downloading[d] = (end, step, True)
        phase_pct = w.uow.tables.rollouts[rid].phase_percent
        while waiting and bucket[waiting[-1]] < phase_pct:
            active.add(waiting.pop())
        for d in sorted(active, key=bucket.__getitem__):
            if d in downloading:
                end, step, lost = downloading[d]
                if tick < end:
                    continue
                del downloading[d]
                if lost:
                    res = await w.devices.check_in(
                        OWNER,
                        CheckIn(d, versions[d], failed_step=True, failure_reason="packet loss"),
                    )
                else:
                    versions[d] = step.result  # type: ignore[attr-defined]
                    res = await w.devices.check_in(OWNER, CheckIn(d, versions[d]))
            elif rng.random() < 0.5:
                res = await w.devices.check_in(OWNER, CheckIn(d, versions[d]))
            else:
                continue
            if res.step is not None and d not in downloading:
                downloading[d] = (tick + DOWNLOAD_TICKS, res.step, False)
            if res.rollout_device is not None and res.rollout_device.state in (
                DeviceRolloutState.DONE,
                DeviceRolloutState.FAILED,
            ):
                active.discard(d)
    prog = await w.queries.rollout(OWNER, rid)
    return prog.rollout.state, dict(prog.devices), peak


async def test_the_throttle_per_cell_is_what_makes_a_10k_rollout_succeed() -> None:
    state, counts, peak = await _simulate(max_in_flight=BANDWIDTH, seed=7)
    assert state is RolloutState.COMPLETED, counts
    assert counts[DeviceRolloutState.DONE] == 10_000
    assert peak <= BANDWIDTH
    state2, counts2, peak2 = await _simulate(max_in_flight=0, seed=7)
    assert state2 in (RolloutState.PAUSED, RolloutState.ABORTED)
    assert peak2 > BANDWIDTH
    assert counts2.get(DeviceRolloutState.DONE, 0) < 10_000
