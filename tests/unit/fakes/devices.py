"""In-memory fake of the devices capability's ports (``domain.ports.devices``), with its own
unit of work: writes are kept aside and published on ``commit`` (a unit of work that is left
without committing leaves nothing), so it stays fast for a 10,000-device rollout simulation
(no copy of the whole state per transaction). Behaves like ``adapters.postgres.devices``:
unique names/serials/versions (AlreadyExists), NotFound for missing rows, keyset pages by
id, lists narrowed to the visible clients. Production runs and locations come from a plain
dict given by the test (``runs``/``locations``), as the setup capability owns them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from domain.devices import (
    Device,
    DeviceProfile,
    DeviceRolloutState,
    PhaseCounts,
    ProfileScope,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from domain.errors import AlreadyExists, NotFound, TransientError
from domain.firmware import Combination, CombinationState, DeviceType, Release
from domain.model import Location, ProductionRun
from domain.pagination import Page, PageRequest, cursor_id, cursor_parts
from domain.ports.devices import DeviceSelection, RolloutFilter, StoredCombination, Visible

T = TypeVar("T")
_ACTIVE = (RolloutState.RUNNING, RolloutState.PAUSED)
_STATES = {s: i for i, s in enumerate(DeviceRolloutState)}


@dataclass
class DeviceTables:
    types: dict[uuid.UUID, DeviceType] = field(default_factory=dict)
    releases: dict[tuple[uuid.UUID, str, str], Release] = field(default_factory=dict)
    combos: dict[tuple[uuid.UUID, Combination], StoredCombination] = field(default_factory=dict)
    profiles: dict[uuid.UUID, DeviceProfile] = field(default_factory=dict)
    devices: dict[uuid.UUID, Device] = field(default_factory=dict)
    rollouts: dict[uuid.UUID, Rollout] = field(default_factory=dict)
    records: dict[tuple[uuid.UUID, uuid.UUID], RolloutDevice] = field(default_factory=dict)
    slots: dict[tuple[uuid.UUID, str], int] = field(default_factory=dict)
    runs: dict[uuid.UUID, ProductionRun] = field(default_factory=dict)
    locations: dict[uuid.UUID, Location] = field(default_factory=dict)
    # Indexes: a device's record in its active rollout; per rollout, its records.
    by_device: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    by_rollout: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=lambda: defaultdict(list))
    # Per rollout: records by whole-percent bucket bin (phase counts without a scan), and the
    # devices with a step in flight (timeouts without a scan).
    bins: dict[uuid.UUID, list[list[uuid.UUID]]] = field(default_factory=dict)
    bin_counts: dict[uuid.UUID, list[list[int]]] = field(default_factory=dict)
    """Per rollout and whole-percent bin: devices per state (in ``_STATES`` order)."""
    step_times: dict[uuid.UUID, deque[tuple[datetime, uuid.UUID]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    """Per rollout, steps in the order they were sent (stale entries skipped when read)."""
    serials: set[tuple[uuid.UUID, str]] = field(default_factory=set)


class _Overlay:
    """Reads see this transaction's writes first; ``publish`` applies them."""

    def __init__(self, t: DeviceTables) -> None:
        self.t = t
        self.writes: dict[str, dict[Any, Any]] = defaultdict(dict)

    def get(self, table: str, key: Any) -> Any:
        w = self.writes.get(table)
        if w is not None and key in w:
            return w[key]
        return getattr(self.t, table).get(key)

    def put(self, table: str, key: Any, value: Any) -> None:
        self.writes[table][key] = value

    def rows(self, table: str) -> dict[Any, Any]:
        merged = dict(getattr(self.t, table))
        merged.update(self.writes.get(table, {}))
        return merged

    def publish(self) -> None:
        for table, w in self.writes.items():
            target = getattr(self.t, table)
            for k, v in w.items():
                if table == "devices":
                    self.t.serials.add((v.client_id, v.serial))
                if table == "records":
                    old = target.get(k)
                    counts = self.t.bin_counts.get(k[0])
                    if counts is None:
                        counts = self.t.bin_counts[k[0]] = [[0] * 4 for _ in range(100)]
                    if old is not None:
                        counts[min(99, int(old.bucket))][_STATES[old.state]] -= 1
                    counts[min(99, int(v.bucket))][_STATES[v.state]] += 1
                    if v.step_time is not None and (old is None or old.step_time != v.step_time):
                        self.t.step_times[k[0]].append((v.step_time, k[1]))
                    if k not in target:
                        self.t.by_device[k[1]].append(k)
                        self.t.by_rollout[k[0]].append(k[1])
                        bins = self.t.bins.get(k[0])
                        if bins is None:
                            bins = self.t.bins[k[0]] = [[] for _ in range(100)]
                        bins[min(99, int(v.bucket))].append(k[1])
                target[k] = v
        for rid, q in self.t.step_times.items():
            while q:
                rd = self.t.records.get((rid, q[0][1]))
                if (
                    rd is not None
                    and rd.state is DeviceRolloutState.IN_PROGRESS
                    and rd.step_time == q[0][0]
                ):
                    break
                q.popleft()
        self.writes.clear()


def _page(rows: list[Any], page: PageRequest) -> Page[Any]:
    rows.sort(key=lambda r: r.id)
    if page.after is not None:
        after = cursor_id(page.after)
        rows = [r for r in rows if r.id > after]
    items = rows[: page.size]
    return Page(items, str(items[-1].id) if len(rows) > page.size else None)


def _visible(client_id: uuid.UUID, v: Visible) -> bool:
    return (v.clients is None or client_id in v.clients) and (
        v.client_id is None or client_id == v.client_id
    )


class _Repo:
    def __init__(self, o: _Overlay) -> None:
        self.o = o


class FakeDeviceTypes(_Repo):
    async def add(self, t: DeviceType) -> None:
        for x in self.o.rows("types").values():
            if x.client_id == t.client_id and x.name == t.name:
                raise AlreadyExists(t.KIND, "name", t.name)
        self.o.put("types", t.id, t)

    async def get(self, type_id: uuid.UUID) -> DeviceType:
        t = self.o.get("types", type_id)
        if t is None:
            raise NotFound(DeviceType.KIND, str(type_id))
        return t  # type: ignore[no-any-return]

    async def list(self, visible: Visible, page: PageRequest) -> Page[DeviceType]:
        return _page(
            [t for t in self.o.rows("types").values() if _visible(t.client_id, visible)], page
        )


class FakeFirmware(_Repo):
    async def add_release(self, type_id: uuid.UUID, release: Release, notes: str) -> None:
        key = (type_id, release.component, str(release.version))
        if any(
            k[:2] == key[:2] and r.version == release.version
            for k, r in self.o.rows("releases").items()
        ):
            raise AlreadyExists("firmware release", "version", str(release.version))
        self.o.put("releases", key, release)

    async def releases(self, type_id: uuid.UUID) -> list[Release]:
        return [r for k, r in self.o.rows("releases").items() if k[0] == type_id]

    async def set_combinations(
        self,
        type_id: uuid.UUID,
        combos: Sequence[Combination],
        state: CombinationState,
        only_new: bool,
        now: datetime,
    ) -> int:
        n = 0
        for c in dict.fromkeys(combos):
            old = self.o.get("combos", (type_id, c))
            if old is not None and (only_new or old.state is state):
                continue
            self.o.put("combos", (type_id, c), StoredCombination(c, state, now))
            n += 1
        return n

    async def combinations(
        self, type_id: uuid.UUID, state: CombinationState | None
    ) -> list[StoredCombination]:
        out = [
            s
            for (tid, _), s in self.o.rows("combos").items()
            if tid == type_id and (state is None or s.state is state)
        ]
        return sorted(out, key=lambda s: s.combination.items)


class FakeDeviceProfiles(_Repo):
    async def add(self, p: DeviceProfile) -> None:
        for x in self.o.rows("profiles").values():
            if (x.scope, x.scope_id, x.device_type_id) == (p.scope, p.scope_id, p.device_type_id):
                raise AlreadyExists(p.KIND, "scope", str(p.scope_id))
        self.o.put("profiles", p.id, p)

    async def get(self, profile_id: uuid.UUID) -> DeviceProfile:
        p = self.o.get("profiles", profile_id)
        if p is None:
            raise NotFound(DeviceProfile.KIND, str(profile_id))
        return p  # type: ignore[no-any-return]

    async def update(self, p: DeviceProfile) -> None:
        await self.get(p.id)
        self.o.put("profiles", p.id, p)

    async def applicable(
        self,
        client_id: uuid.UUID,
        production_run_id: uuid.UUID | None,
        location_id: uuid.UUID | None,
    ) -> list[DeviceProfile]:
        want = {(ProfileScope.CLIENT, client_id)}
        if production_run_id:
            want.add((ProfileScope.PRODUCTION_RUN, production_run_id))
        if location_id:
            want.add((ProfileScope.LOCATION, location_id))
        return [p for p in self.o.rows("profiles").values() if (p.scope, p.scope_id) in want]

    async def list(self, visible: Visible, page: PageRequest) -> Page[DeviceProfile]:
        return _page(
            [p for p in self.o.rows("profiles").values() if _visible(p.client_id, visible)], page
        )


class FakeDevices(_Repo):
    async def add(self, d: Device) -> None:
        pending = self.o.writes.get("devices", {}).values()
        if (d.client_id, d.serial) in self.o.t.serials or any(
            (x.client_id, x.serial) == (d.client_id, d.serial) for x in pending
        ):
            raise AlreadyExists(d.KIND, "serial", d.serial)
        self.o.put("devices", d.id, d)

    async def get(self, device_id: uuid.UUID, *, for_update: bool = False) -> Device:
        d = self.o.get("devices", device_id)
        if d is None:
            raise NotFound(Device.KIND, str(device_id))
        return d  # type: ignore[no-any-return]

    async def update(self, d: Device) -> None:
        await self.get(d.id)
        self.o.put("devices", d.id, d)

    async def list(
        self, visible: Visible, device_type_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Device]:
        return _page(
            [
                d
                for d in self.o.rows("devices").values()
                if _visible(d.client_id, visible)
                and (device_type_id is None or d.device_type_id == device_type_id)
            ],
            page,
        )

    async def select(self, s: DeviceSelection) -> list[tuple[uuid.UUID, str]]:
        return sorted(
            (d.id, d.group_key)
            for d in self.o.rows("devices").values()
            if d.client_id == s.client_id
            and d.device_type_id == s.device_type_id
            and (not s.production_run_ids or d.production_run_id in s.production_run_ids)
            and (not s.group_keys or d.group_key in s.group_keys)
            and (not s.device_ids or d.id in s.device_ids)
        )


class FakeRollouts(_Repo):
    async def add(self, r: Rollout, devices: Sequence[RolloutDevice]) -> None:
        self.o.put("rollouts", r.id, r)
        for rd in devices:
            self.o.put("records", (r.id, rd.device_id), rd)

    async def get(self, rollout_id: uuid.UUID, *, for_update: bool = False) -> Rollout:
        r = self.o.get("rollouts", rollout_id)
        if r is None:
            raise NotFound(Rollout.KIND, str(rollout_id))
        return r  # type: ignore[no-any-return]

    async def update(self, r: Rollout) -> None:
        await self.get(r.id)
        self.o.put("rollouts", r.id, r)

    async def list(self, f: RolloutFilter, page: PageRequest) -> Page[Rollout]:
        return _page(
            [
                r
                for r in self.o.rows("rollouts").values()
                if _visible(r.client_id, f.visible) and (f.state is None or r.state is f.state)
            ],
            page,
        )

    def _keys_of_device(self, device_id: uuid.UUID) -> list[tuple[uuid.UUID, uuid.UUID]]:
        keys = list(self.o.t.by_device.get(device_id, []))
        keys += [k for k in self.o.writes.get("records", {}) if k[1] == device_id and k not in keys]
        return keys

    async def active_devices(self, device_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        out = set()
        for d in device_ids:
            for rid, _ in self._keys_of_device(d):
                if self.o.get("rollouts", rid).state in _ACTIVE:
                    out.add(d)
        return out

    async def of_device(self, device_id: uuid.UUID) -> RolloutDevice | None:
        for k in self._keys_of_device(device_id):
            if self.o.get("rollouts", k[0]).state in _ACTIVE:
                return self.o.get("records", k)  # type: ignore[no-any-return]
        return None

    async def save_device(self, rd: RolloutDevice) -> None:
        self.o.put("records", (rd.rollout_id, rd.device_id), rd)

    def _records(self, rollout_id: uuid.UUID) -> list[RolloutDevice]:
        ids = self.o.t.by_rollout.get(rollout_id, [])
        out = [self.o.get("records", (rollout_id, d)) for d in ids]
        out += [
            v
            for k, v in self.o.writes.get("records", {}).items()
            if k[0] == rollout_id and k not in self.o.t.records
        ]
        return out

    async def phase_counts(self, rollout_id: uuid.UUID, percent: float) -> PhaseCounts:
        """Whole bins below ``percent`` from the counters, the bin it cuts by a scan, and
        this transaction's own writes on top."""
        t = self.o.t
        whole = min(100, int(percent))
        n = [0, 0, 0, 0]
        for b in t.bin_counts.get(rollout_id, [])[:whole]:
            for i in range(4):
                n[i] += b[i]
        if whole < 100:
            for d in t.bins.get(rollout_id, [[]] * 100)[whole]:
                rd = t.records[(rollout_id, d)]
                if rd.bucket < percent:
                    n[_STATES[rd.state]] += 1
        for k, rd in self.o.writes.get("records", {}).items():
            if k[0] != rollout_id:
                continue
            old = t.records.get(k)
            if old is not None and old.bucket < percent:
                n[_STATES[old.state]] -= 1
            if rd.bucket < percent:
                n[_STATES[rd.state]] += 1
        done, failed = _STATES[DeviceRolloutState.DONE], _STATES[DeviceRolloutState.FAILED]
        return PhaseCounts(sum(n), n[done], n[failed])

    async def acquire_slot(self, rollout_id: uuid.UUID, group_key: str, limit: int) -> bool:
        n = self.o.get("slots", (rollout_id, group_key)) or 0
        if limit and n >= limit:
            return False
        self.o.put("slots", (rollout_id, group_key), n + 1)
        return True

    async def release_slot(self, rollout_id: uuid.UUID, group_key: str) -> None:
        n = self.o.get("slots", (rollout_id, group_key)) or 0
        self.o.put("slots", (rollout_id, group_key), max(0, n - 1))

    async def expired(self, rollout_id: uuid.UUID, before: datetime) -> list[RolloutDevice]:
        out: dict[uuid.UUID, RolloutDevice] = {}
        for when, d in self.o.t.step_times.get(rollout_id, ()):
            if when >= before:
                break
            rd = self.o.get("records", (rollout_id, d))
            if (
                rd.state is DeviceRolloutState.IN_PROGRESS
                and rd.step_time
                and rd.step_time < before
            ):
                out[d] = rd
        for k, rd in self.o.writes.get("records", {}).items():
            in_flight = rd.state is DeviceRolloutState.IN_PROGRESS
            if k[0] == rollout_id and in_flight and rd.step_time and rd.step_time < before:
                out[k[1]] = rd
        return list(out.values())

    async def device_counts(self, rollout_id: uuid.UUID) -> dict[DeviceRolloutState, int]:
        out: dict[DeviceRolloutState, int] = defaultdict(int)
        for rd in self._records(rollout_id):
            out[rd.state] += 1
        return dict(out)

    async def devices(
        self,
        rollout_id: uuid.UUID | None,
        visible: Visible,
        state: DeviceRolloutState | None,
        page: PageRequest,
    ) -> Page[RolloutDevice]:
        rollouts = self.o.rows("rollouts")
        rows = sorted(
            (
                rd
                for k, rd in self.o.rows("records").items()
                if (rollout_id is None or k[0] == rollout_id)
                and _visible(rollouts[k[0]].client_id, visible)
                and (state is None or rd.state is state)
            ),
            key=lambda rd: (rd.rollout_id, rd.device_id),
        )
        if page.after is not None:
            rid, did = cursor_parts(page.after, 2)
            after = (cursor_id(rid), cursor_id(did))
            rows = [r for r in rows if (r.rollout_id, r.device_id) > after]
        items = rows[: page.size]
        nxt = f"{items[-1].rollout_id}|{items[-1].device_id}" if len(rows) > page.size else None
        return Page(items, nxt)


class _Setup(_Repo):
    def __init__(self, o: _Overlay, table: str, kind: str) -> None:
        super().__init__(o)
        self.table, self.kind = table, kind

    async def get(self, entity_id: uuid.UUID) -> Any:
        x = self.o.get(self.table, entity_id)
        if x is None:
            raise NotFound(self.kind, str(entity_id))
        return x


class FakeDevicesUnitOfWork:
    def __init__(self, factory: FakeDevicesUnitOfWorkFactory) -> None:
        self._factory = factory

    async def __aenter__(self) -> Self:
        o = self._overlay = _Overlay(self._factory.tables)
        self.device_types = FakeDeviceTypes(o)
        self.firmware = FakeFirmware(o)
        self.device_profiles = FakeDeviceProfiles(o)
        self.devices = FakeDevices(o)
        self.rollouts = FakeRollouts(o)
        self.production_runs: Any = _Setup(o, "runs", "production run")
        self.locations: Any = _Setup(o, "locations", "location")
        return self

    async def commit(self) -> None:
        self._overlay.publish()
        self._factory.commits += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._overlay.writes.clear()


class FakeDevicesUnitOfWorkFactory:
    def __init__(self) -> None:
        self.tables = DeviceTables()
        self.commits = 0

    def __call__(self) -> FakeDevicesUnitOfWork:
        return FakeDevicesUnitOfWork(self)

    async def retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(3):
            try:
                return await work()
            except TransientError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
