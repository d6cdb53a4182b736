"""Devices and firmware: the catalogue of device types, releases and known-good
combinations; configuration profiles; device registration and check-in; rollouts.

Lock order of a check-in (no deadlock by construction): the device row, then its rollout's
row, then rollout-device rows. Operators' pause/resume/abort lock only the rollout row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from domain.access import Principal, require_manage, require_read
from domain.devices import (
    CheckIn,
    Device,
    DeviceProfile,
    DeviceRolloutState,
    ProfileScope,
    ResolvedProfile,
    Rollout,
    RolloutDevice,
    RolloutPolicy,
    RolloutState,
    StepOutcome,
    abort,
    after_outcome,
    check_group_key,
    check_profile_entries,
    fail_step,
    finish,
    give_up,
    judge,
    pause,
    resolve_profile,
    resume,
    settle_step,
    start_step,
)
from domain.errors import FailedPrecondition, InvalidArgument, NotFound
from domain.firmware import (
    Combination,
    CombinationState,
    DeviceType,
    NoUpgradePath,
    Release,
    Step,
    UpgradePlanner,
    check_components,
    derive_combinations,
    rollout_bucket,
    unmet_constraints,
)
from domain.model import SealedSecret
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.devices import (
    DeviceSelection,
    DevicesUnitOfWork,
    RolloutFilter,
    StoredCombination,
    Visible,
)
from domain.ports.keys import SecretSealer

MAX_ROLLOUT_DEVICES = 1_000_000


def _name(name: str, field_name: str = "name") -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidArgument(field_name, "1 to 200 characters")
    return name


class _Base:
    def __init__(self, uow: UnitOfWorkFactory[DevicesUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def _type(
        self, uow: DevicesUnitOfWork, caller: Principal, type_id: uuid.UUID, manage: bool
    ) -> DeviceType:
        t = await uow.device_types.get(type_id)
        (require_manage if manage else require_read)(caller, t.client_id, t.KIND, type_id)
        return t


class DeviceCatalog(_Base):
    """Device types, their firmware releases and known-good combinations (collector)."""

    async def create_type(
        self, caller: Principal, client_id: uuid.UUID, name: str, components: Sequence[str]
    ) -> DeviceType:
        require_manage(caller, client_id, "client", client_id)
        t = DeviceType(uuid.uuid4(), client_id, _name(name), check_components(components))
        async with self._uow() as uow:
            await uow.device_types.add(t)
            await uow.commit()
        return t

    async def add_release(
        self, caller: Principal, type_id: uuid.UUID, release: Release, notes: str = ""
    ) -> Release:
        async with self._uow() as uow:
            t = await self._type(uow, caller, type_id, manage=True)
            if release.component not in t.components:
                raise InvalidArgument(
                    "release.component",
                    f"the type {t.name!r} has no component {release.component!r}",
                )
            for i, req in enumerate(release.requires):
                if req.component not in t.components:
                    raise InvalidArgument(
                        f"release.requires[{i}].component",
                        f"the type has no component {req.component!r}",
                    )
                if req.component == release.component:
                    raise InvalidArgument(
                        f"release.requires[{i}].component",
                        "a release cannot require its own component",
                    )
            await uow.firmware.add_release(type_id, release, notes[:2000])
            await uow.commit()
        return release

    async def add_combinations(
        self,
        caller: Principal,
        type_id: uuid.UUID,
        combos: Sequence[Combination],
        state: CombinationState,
    ) -> int:
        """Mark combinations known-good (tested), retired, or candidates. Each must run every
        component of the type on released versions that meet all their constraints."""
        if not combos:
            raise InvalidArgument("combinations", "at least one")
        if len(combos) > 10_000:
            raise InvalidArgument("combinations", "at most 10000 per call")
        async with self._uow() as uow:
            t = await self._type(uow, caller, type_id, manage=True)
            releases = await uow.firmware.releases(type_id)
            for i, c in enumerate(combos):
                t.check_combination(c, f"combinations[{i}].versions")
                unmet = unmet_constraints(c, releases)
                if unmet and state is not CombinationState.RETIRED:
                    raise FailedPrecondition(
                        f"combinations[{i}] ({c}) breaks the release constraints: "
                        + "; ".join(unmet),
                        f"combinations[{i}]",
                    )
            n = await uow.firmware.set_combinations(
                type_id, combos, state, False, self._clock.now()
            )
            await uow.commit()
        return n

    async def derive_combinations(self, caller: Principal, type_id: uuid.UUID) -> int:
        """Add every combination the constraints allow as a CANDIDATE (existing ones keep
        their state); an operator tests candidates and marks them known-good."""
        async with self._uow() as uow:
            t = await self._type(uow, caller, type_id, manage=True)
            releases = await uow.firmware.releases(type_id)
            combos = derive_combinations(t.components, releases)
            n = (
                await uow.firmware.set_combinations(
                    type_id, combos, CombinationState.CANDIDATE, True, self._clock.now()
                )
                if combos
                else 0
            )
            await uow.commit()
        return n


@dataclass(frozen=True, slots=True)
class ProfileInput:
    name: str
    scope: ProfileScope
    scope_id: uuid.UUID
    device_type_id: uuid.UUID | None
    values: Mapping[str, str]
    secrets: Mapping[str, str]
    services: Mapping[str, bool]


class DeviceProfiles(_Base):
    """Configuration profiles per client, production run or location (collector)."""

    def __init__(
        self, uow: UnitOfWorkFactory[DevicesUnitOfWork], clock: Clock, sealer: SecretSealer
    ) -> None:
        super().__init__(uow, clock)
        self._sealer = sealer

    def _seal(self, profile_id: uuid.UUID, secrets: Mapping[str, str]) -> dict[str, SealedSecret]:
        return {
            k: self._sealer.seal(v.encode(), secret_context(profile_id, k))
            for k, v in secrets.items()
        }

    async def _scope_client(self, uow: DevicesUnitOfWork, p: ProfileInput) -> uuid.UUID:
        match p.scope:
            case ProfileScope.CLIENT:
                return p.scope_id
            case ProfileScope.PRODUCTION_RUN:
                return (await uow.production_runs.get(p.scope_id)).client_id
            case ProfileScope.LOCATION:
                return (await uow.locations.get(p.scope_id)).client_id
        raise InvalidArgument("scope", "CLIENT, PRODUCTION_RUN or LOCATION")

    async def create(self, caller: Principal, p: ProfileInput) -> DeviceProfile:
        check_profile_entries(p.values, p.secrets, p.services)
        now = self._clock.now()
        async with self._uow() as uow:
            try:
                client_id = await self._scope_client(uow, p)
            except NotFound:
                raise NotFound("scope", str(p.scope_id)) from None
            require_manage(caller, client_id, "scope", p.scope_id)
            if p.device_type_id is not None:
                t = await self._type(uow, caller, p.device_type_id, manage=True)
                if t.client_id != client_id:
                    raise NotFound(t.KIND, str(t.id))
            pid = uuid.uuid4()
            profile = DeviceProfile(
                id=pid,
                client_id=client_id,
                name=_name(p.name),
                scope=p.scope,
                scope_id=p.scope_id,
                device_type_id=p.device_type_id,
                values=dict(p.values),
                secrets=self._seal(pid, p.secrets),
                services=dict(p.services),
                version=1,
                create_time=now,
                update_time=now,
            )
            await uow.device_profiles.add(profile)
            await uow.commit()
        return profile

    async def update(
        self,
        caller: Principal,
        profile_id: uuid.UUID,
        values: Mapping[str, str] | None,
        secrets: Mapping[str, str] | None,
        services: Mapping[str, bool] | None,
        name: str | None = None,
    ) -> DeviceProfile:
        """Replace the given parts (None: keep); the version goes up by one."""
        async with self._uow() as uow:
            old = await uow.device_profiles.get(profile_id)
            require_manage(caller, old.client_id, old.KIND, profile_id)
            new_values = dict(old.values) if values is None else dict(values)
            new_services = dict(old.services) if services is None else dict(services)
            check_profile_entries(
                new_values,
                dict.fromkeys(old.secrets if secrets is None else secrets, ""),
                new_services,
            )
            p = replace(
                old,
                name=old.name if name is None else _name(name),
                values=new_values,
                secrets=old.secrets if secrets is None else self._seal(profile_id, secrets),
                services=new_services,
                version=old.version + 1,
                update_time=self._clock.now(),
            )
            await uow.device_profiles.update(p)
            await uow.commit()
        return p


def secret_context(profile_id: uuid.UUID, key: str) -> bytes:
    return b"device-profile\x00" + profile_id.bytes + key.encode()


@dataclass(frozen=True, slots=True)
class DeviceInput:
    client_id: uuid.UUID
    device_type_id: uuid.UUID
    serial: str
    group_key: str
    production_run_id: uuid.UUID | None = None
    location_id: uuid.UUID | None = None
    tracker_id: uuid.UUID | None = None
    versions: Combination | None = None


@dataclass(frozen=True, slots=True)
class CheckInResult:
    device: Device
    step: Step | None
    """What to do next (None: nothing now)."""
    outcome: StepOutcome | None
    """How this check-in settled the step sent before."""
    rollout: Rollout | None
    rollout_device: RolloutDevice | None
    profile: ResolvedProfile
    profile_changed: bool
    secrets: Mapping[str, str]
    """Unsealed secrets of the profile, only when it changed (only the device gets them)."""


class PlannerCache:
    """One planner per device type, rebuilt when its known-good set changes."""

    def __init__(self) -> None:
        self._planners: dict[uuid.UUID, tuple[tuple[int, datetime | None], UpgradePlanner]] = {}

    def get(self, t: DeviceType, good: list[StoredCombination]) -> UpgradePlanner:
        stamp = (len(good), max((g.update_time for g in good), default=None))
        hit = self._planners.get(t.id)
        if hit is None or hit[0] != stamp:
            hit = (stamp, UpgradePlanner(t.components, [g.combination for g in good]))
            self._planners[t.id] = hit
        return hit[1]


class Devices(_Base):
    """Registering devices and their check-ins (collector)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[DevicesUnitOfWork],
        clock: Clock,
        sealer: SecretSealer,
        planners: PlannerCache | None = None,
    ) -> None:
        super().__init__(uow, clock)
        self._sealer = sealer
        self._planners = planners or PlannerCache()

    async def register(self, caller: Principal, d: DeviceInput) -> Device:
        require_manage(caller, d.client_id, "client", d.client_id)
        serial = _name(d.serial, "serial")
        check_group_key(d.group_key)
        now = self._clock.now()
        async with self._uow() as uow:
            t = await self._type(uow, caller, d.device_type_id, manage=True)
            if t.client_id != d.client_id:
                raise NotFound(t.KIND, str(t.id))
            if d.production_run_id is not None:
                run = await uow.production_runs.get(d.production_run_id)
                if run.client_id != d.client_id:
                    raise NotFound(run.KIND, str(run.id))
            if d.location_id is not None:
                loc = await uow.locations.get(d.location_id)
                if loc.client_id != d.client_id:
                    raise NotFound(loc.KIND, str(loc.id))
            if d.versions is not None:
                t.check_combination(d.versions)
            device = Device(
                id=uuid.uuid4(),
                client_id=d.client_id,
                device_type_id=t.id,
                serial=serial,
                group_key=d.group_key,
                production_run_id=d.production_run_id,
                location_id=d.location_id,
                tracker_id=d.tracker_id,
                versions=d.versions,
                create_time=now,
                update_time=now,
            )
            await uow.devices.add(device)
            await uow.commit()
        return device

    async def check_in(self, caller: Principal, c: CheckIn) -> CheckInResult:
        now = self._clock.now()
        async with self._uow() as uow:
            device = await uow.devices.get(c.device_id, for_update=True)
            require_manage(caller, device.client_id, device.KIND, device.id)
            t = await uow.device_types.get(device.device_type_id)
            t.check_combination(c.versions)
            device = replace(
                device,
                versions=c.versions,
                last_check_in=now,
                health=dict(c.health) if c.health else device.health,
                update_time=now,
            )
            await uow.devices.update(device)
            step, outcome, rollout, rd = await self._rollout_turn(uow, t, c, now)
            profiles = await uow.device_profiles.applicable(
                device.client_id, device.production_run_id, device.location_id
            )
            await uow.commit()
        resolved = resolve_profile(profiles, t.id)
        changed = resolved.digest != c.profile_digest
        secrets = {}
        if changed:
            owners = {k: _owner(profiles, k, t.id) for k in resolved.secrets}
            secrets = {
                k: self._sealer.unseal(s, secret_context(owners[k], k)).decode()
                for k, s in resolved.secrets.items()
            }
        return CheckInResult(device, step, outcome, rollout, rd, resolved, changed, secrets)

    async def _rollout_turn(
        self, uow: DevicesUnitOfWork, t: DeviceType, c: CheckIn, now: datetime
    ) -> tuple[Step | None, StepOutcome | None, Rollout | None, RolloutDevice | None]:
        found = await uow.rollouts.of_device(c.device_id)
        if found is None:
            return None, None, None, None
        rollout = await uow.rollouts.get(found.rollout_id, for_update=True)
        rd = await uow.rollouts.of_device(c.device_id)  # again, under the rollout's lock
        if rd is None or rd.rollout_id != rollout.id:
            return None, None, rollout, rd
        original = rollout
        for stale in await uow.rollouts.expired(rollout.id, now - rollout.policy.step_timeout):
            if stale.device_id == rd.device_id:
                continue  # settled below, with what this check-in says
            await uow.rollouts.save_device(fail_step(stale, "timed out", now, rollout.policy))
            await uow.rollouts.release_slot(rollout.id, stale.group_key)
            rollout = after_outcome(rollout, False)
        before = rd
        rd, outcome = settle_step(rd, c, now, rollout.policy)
        if outcome is not None:
            await uow.rollouts.release_slot(rollout.id, rd.group_key)
            rollout = after_outcome(rollout, outcome.succeeded)
        # Thresholds first: a failure that stops the rollout stops it before a new step.
        counts = await uow.rollouts.phase_counts(rollout.id, rollout.phase_percent)
        rollout = judge(rollout, counts, now)
        step: Step | None = None
        if (
            rd.state in (DeviceRolloutState.PENDING, DeviceRolloutState.IN_PROGRESS)
            and c.versions == rollout.target
        ):
            rd = finish(rd, now)
        if rd.state is DeviceRolloutState.IN_PROGRESS:
            step = rd.step  # not settled yet: the same step again
        elif (
            rd.state is DeviceRolloutState.PENDING
            and rollout.state is RolloutState.RUNNING
            and rollout.admits(rd.bucket)
        ):
            good = await uow.firmware.combinations(t.id, CombinationState.KNOWN_GOOD)
            planner = self._planners.get(t, good)
            try:
                nxt = planner.next_step(c.versions, rollout.target)
            except NoUpgradePath as err:
                rd = give_up(rd, err.reason, now)
            else:
                if nxt is None:
                    rd = finish(rd, now)
                elif await uow.rollouts.acquire_slot(
                    rollout.id, rd.group_key, rollout.policy.max_in_flight_per_group
                ):
                    rd = start_step(rd, nxt, now)
                    step = nxt
        if rd != before:
            await uow.rollouts.save_device(rd)
        counts = await uow.rollouts.phase_counts(rollout.id, rollout.phase_percent)
        rollout = judge(rollout, counts, now)
        if rollout != original:
            await uow.rollouts.update(rollout)
        return step, outcome, rollout, rd


def _owner(profiles: Sequence[DeviceProfile], key: str, type_id: uuid.UUID) -> uuid.UUID:
    """The profile whose sealed secret ``key`` won the merge (the last that has it)."""
    owner: uuid.UUID | None = None
    ordered = sorted(
        (p for p in profiles if p.device_type_id in (None, type_id)),
        key=lambda p: (p.scope.value, p.device_type_id is not None, str(p.id)),
    )
    for p in ordered:
        if key in p.secrets:
            owner = p.id
        elif key in p.values:
            owner = None
    assert owner is not None
    return owner


@dataclass(frozen=True, slots=True)
class RolloutInput:
    name: str
    device_type_id: uuid.UUID
    target: Combination
    policy: RolloutPolicy
    production_run_ids: frozenset[uuid.UUID] = frozenset()
    group_keys: frozenset[str] = frozenset()
    device_ids: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    rollout: Rollout
    devices: Mapping[DeviceRolloutState, int]

    @property
    def total(self) -> int:
        return sum(self.devices.values())


class Rollouts(_Base):
    """Starting and steering rollouts (collector)."""

    async def create(self, caller: Principal, r: RolloutInput) -> RolloutProgress:
        policy = r.policy.check()
        now = self._clock.now()
        async with self._uow() as uow:
            t = await self._type(uow, caller, r.device_type_id, manage=True)
            t.check_combination(r.target, "target")
            good = {
                g.combination
                for g in await uow.firmware.combinations(t.id, CombinationState.KNOWN_GOOD)
            }
            if r.target not in good:
                raise FailedPrecondition(
                    f"the target {r.target} is not a known-good combination", "target"
                )
            for run_id in r.production_run_ids:
                run = await uow.production_runs.get(run_id)
                require_read(caller, run.client_id, run.KIND, run_id)
                if run.client_id != t.client_id:
                    raise NotFound(run.KIND, str(run_id))
            for g in r.group_keys:
                check_group_key(g, "selection.group_keys")
            selected = await uow.devices.select(
                DeviceSelection(t.client_id, t.id, r.production_run_ids, r.group_keys, r.device_ids)
            )
            if not selected:
                raise FailedPrecondition("the selection matches no device", "selection")
            if len(selected) > MAX_ROLLOUT_DEVICES:
                raise FailedPrecondition(
                    f"more than {MAX_ROLLOUT_DEVICES} devices selected", "selection"
                )
            busy = await uow.rollouts.active_devices([d for d, _ in selected])
            if busy:
                raise FailedPrecondition(
                    f"{len(busy)} selected devices are already in a running or paused rollout "
                    "(abort it, or leave them out)",
                    "selection",
                )
            rollout = Rollout(
                id=uuid.uuid4(),
                client_id=t.client_id,
                device_type_id=t.id,
                name=_name(r.name),
                target=r.target,
                policy=policy,
                create_time=now,
                update_time=now,
            )
            records = [
                RolloutDevice(
                    rollout_id=rollout.id,
                    device_id=d,
                    group_key=g,
                    bucket=rollout_bucket(rollout.id, d),
                    update_time=now,
                )
                for d, g in selected
            ]
            await uow.rollouts.add(rollout, records)
            await uow.commit()
        counts = {s: 0 for s in DeviceRolloutState}
        counts[DeviceRolloutState.PENDING] = len(records)
        return RolloutProgress(rollout, counts)

    async def _change(
        self, caller: Principal, rollout_id: uuid.UUID, how: str, reason: str
    ) -> Rollout:
        async with self._uow() as uow:
            r = await uow.rollouts.get(rollout_id, for_update=True)
            require_manage(caller, r.client_id, r.KIND, rollout_id)
            now = self._clock.now()
            new = (
                {"pause": pause, "abort": abort}[how](r, reason, now)
                if how != "resume"
                else resume(r, now)
            )
            if new != r:
                await uow.rollouts.update(new)
            await uow.commit()
        return new

    async def pause(self, caller: Principal, rollout_id: uuid.UUID, reason: str = "") -> Rollout:
        return await self._change(caller, rollout_id, "pause", reason)

    async def resume(self, caller: Principal, rollout_id: uuid.UUID) -> Rollout:
        return await self._change(caller, rollout_id, "resume", "")

    async def abort(self, caller: Principal, rollout_id: uuid.UUID, reason: str = "") -> Rollout:
        return await self._change(caller, rollout_id, "abort", reason)


class DeviceQueries(_Base):
    """Reading the catalogue, devices, profiles and rollouts (query server)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[DevicesUnitOfWork],
        clock: Clock,
        planners: PlannerCache | None = None,
    ) -> None:
        super().__init__(uow, clock)
        self._planners = planners or PlannerCache()

    async def get_type(self, caller: Principal, type_id: uuid.UUID) -> DeviceType:
        async with self._uow() as uow:
            return await self._type(uow, caller, type_id, manage=False)

    async def list_types(
        self, caller: Principal, client_id: uuid.UUID | None, page: PageRequest
    ) -> Page[DeviceType]:
        async with self._uow() as uow:
            return await uow.device_types.list(Visible(caller.readable_clients(), client_id), page)

    async def releases(self, caller: Principal, type_id: uuid.UUID) -> list[Release]:
        async with self._uow() as uow:
            await self._type(uow, caller, type_id, manage=False)
            return sorted(
                await uow.firmware.releases(type_id), key=lambda r: (r.component, r.version)
            )

    async def combinations(
        self, caller: Principal, type_id: uuid.UUID, state: CombinationState | None
    ) -> list[StoredCombination]:
        async with self._uow() as uow:
            await self._type(uow, caller, type_id, manage=False)
            return await uow.firmware.combinations(type_id, state)

    async def plan(
        self,
        caller: Principal,
        type_id: uuid.UUID | None,
        device_id: uuid.UUID | None,
        current: Combination | None,
        target: Combination,
    ) -> list[Step]:
        """The shortest upgrade path of a device (or from ``current``) to ``target``."""
        async with self._uow() as uow:
            if device_id is not None:
                d = await uow.devices.get(device_id)
                require_read(caller, d.client_id, d.KIND, device_id)
                if d.versions is None:
                    raise FailedPrecondition(
                        "the device has not said which versions it runs", "device"
                    )
                type_id, current = d.device_type_id, d.versions
            if type_id is None or current is None:
                raise InvalidArgument(
                    "device_id", "a device, or a device type and current versions"
                )
            t = await self._type(uow, caller, type_id, manage=False)
            t.check_combination(current, "current")
            t.check_combination(target, "target")
            good = await uow.firmware.combinations(t.id, CombinationState.KNOWN_GOOD)
        return self._planners.get(t, good).plan(current, target)

    async def get_device(self, caller: Principal, device_id: uuid.UUID) -> Device:
        async with self._uow() as uow:
            d = await uow.devices.get(device_id)
        require_read(caller, d.client_id, d.KIND, device_id)
        return d

    async def list_devices(
        self,
        caller: Principal,
        client_id: uuid.UUID | None,
        type_id: uuid.UUID | None,
        page: PageRequest,
    ) -> Page[Device]:
        async with self._uow() as uow:
            return await uow.devices.list(
                Visible(caller.readable_clients(), client_id), type_id, page
            )

    async def resolved_profile(self, caller: Principal, device_id: uuid.UUID) -> ResolvedProfile:
        """What the device runs with; secrets are named, never shown here."""
        async with self._uow() as uow:
            d = await uow.devices.get(device_id)
            require_read(caller, d.client_id, d.KIND, device_id)
            profiles = await uow.device_profiles.applicable(
                d.client_id, d.production_run_id, d.location_id
            )
        return resolve_profile(profiles, d.device_type_id)

    async def get_profile(self, caller: Principal, profile_id: uuid.UUID) -> DeviceProfile:
        async with self._uow() as uow:
            p = await uow.device_profiles.get(profile_id)
        require_read(caller, p.client_id, p.KIND, profile_id)
        return p

    async def list_profiles(
        self, caller: Principal, client_id: uuid.UUID | None, page: PageRequest
    ) -> Page[DeviceProfile]:
        async with self._uow() as uow:
            return await uow.device_profiles.list(
                Visible(caller.readable_clients(), client_id), page
            )

    async def rollout(self, caller: Principal, rollout_id: uuid.UUID) -> RolloutProgress:
        async with self._uow() as uow:
            r = await uow.rollouts.get(rollout_id)
            require_read(caller, r.client_id, r.KIND, rollout_id)
            counts = await uow.rollouts.device_counts(rollout_id)
        return RolloutProgress(r, {s: counts.get(s, 0) for s in DeviceRolloutState})

    async def list_rollouts(
        self,
        caller: Principal,
        client_id: uuid.UUID | None,
        state: RolloutState | None,
        page: PageRequest,
    ) -> Page[Rollout]:
        async with self._uow() as uow:
            return await uow.rollouts.list(
                RolloutFilter(Visible(caller.readable_clients(), client_id), state), page
            )

    async def rollout_devices(
        self,
        caller: Principal,
        rollout_id: uuid.UUID | None,
        state: DeviceRolloutState | None,
        page: PageRequest,
    ) -> Page[RolloutDevice]:
        async with self._uow() as uow:
            if rollout_id is not None:
                r = await uow.rollouts.get(rollout_id)
                require_read(caller, r.client_id, r.KIND, rollout_id)
            return await uow.rollouts.devices(
                rollout_id, Visible(caller.readable_clients()), state, page
            )

    async def watch_rollout(
        self, caller: Principal, rollout_id: uuid.UUID, poll_s: float = 1.0
    ) -> AsyncIterator[RolloutProgress]:
        """The rollout's progress now, then each time it changes, until it ends."""
        last: RolloutProgress | None = None
        while True:
            now = await self.rollout(caller, rollout_id)
            if last is None or now != last:
                yield now
                last = now
            if now.rollout.state in (RolloutState.ABORTED, RolloutState.COMPLETED):
                return
            await asyncio.sleep(poll_s)
