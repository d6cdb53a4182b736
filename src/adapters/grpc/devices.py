"""Servicers of devices and firmware: changes and check-ins on the collector
(``DeviceService``), reads on the query server (``DeviceQueryService``)."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
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
)
from domain.errors import FieldViolation, InvalidArgument
from domain.firmware import (
    Combination,
    CombinationState,
    DeviceType,
    Release,
    Requirement,
    Step,
    Version,
    VersionRange,
    check_component,
)
from domain.pagination import PageRequest, PageTokens
from tracker.v1 import device_query_service_pb2 as q
from tracker.v1 import device_query_service_pb2_grpc as q_grpc
from tracker.v1 import device_service_pb2 as s
from tracker.v1 import device_service_pb2_grpc as s_grpc
from tracker.v1 import devices_pb2 as pb
from usecases.devices import (
    CheckInResult,
    DeviceCatalog,
    DeviceInput,
    DeviceProfiles,
    DeviceQueries,
    Devices,
    ProfileInput,
    RolloutInput,
    RolloutProgress,
    Rollouts,
)

Ctx = grpc.aio.ServicerContext

_COMBO_STATE = {
    pb.COMBINATION_STATE_CANDIDATE: CombinationState.CANDIDATE,
    pb.COMBINATION_STATE_KNOWN_GOOD: CombinationState.KNOWN_GOOD,
    pb.COMBINATION_STATE_RETIRED: CombinationState.RETIRED,
}
_COMBO_STATE_PB = {v: k for k, v in _COMBO_STATE.items()}
_SCOPE = {
    pb.PROFILE_SCOPE_CLIENT: ProfileScope.CLIENT,
    pb.PROFILE_SCOPE_PRODUCTION_RUN: ProfileScope.PRODUCTION_RUN,
    pb.PROFILE_SCOPE_LOCATION: ProfileScope.LOCATION,
}
_SCOPE_PB = {v: k for k, v in _SCOPE.items()}
_ROLLOUT_STATE = {
    pb.ROLLOUT_STATE_RUNNING: RolloutState.RUNNING,
    pb.ROLLOUT_STATE_PAUSED: RolloutState.PAUSED,
    pb.ROLLOUT_STATE_ABORTED: RolloutState.ABORTED,
    pb.ROLLOUT_STATE_COMPLETED: RolloutState.COMPLETED,
}
_ROLLOUT_STATE_PB = {v: k for k, v in _ROLLOUT_STATE.items()}
_RD_STATE = {
    pb.ROLLOUT_DEVICE_STATE_PENDING: DeviceRolloutState.PENDING,
    pb.ROLLOUT_DEVICE_STATE_IN_PROGRESS: DeviceRolloutState.IN_PROGRESS,
    pb.ROLLOUT_DEVICE_STATE_DONE: DeviceRolloutState.DONE,
    pb.ROLLOUT_DEVICE_STATE_FAILED: DeviceRolloutState.FAILED,
}
_RD_STATE_PB = {v: k for k, v in _RD_STATE.items()}
MAX_ENTRIES = 200
"""Repeated entries of one request field (versions, profile entries, selection ids)."""


def _no_nul(msg: Message, prefix: str = "") -> None:
    """PostgreSQL text and jsonb cannot hold NUL: a string with one is refused, named by its
    path (e.g. ``device_profile.values[2].value``), before it reaches storage."""
    for f, value in msg.ListFields():
        path = f"{prefix}{f.name}"
        items = list(value) if f.is_repeated else [value]
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if f.is_repeated else path
            if isinstance(item, str) and "\x00" in item:
                raise InvalidArgument(where, "must not contain NUL characters")
            if isinstance(item, Message):
                _no_nul(item, where + ".")


def _enum(value: int, table: Mapping[int, Any], field: str, required: bool = True) -> Any:
    if value == 0 and not required:
        return None
    got = table.get(value)
    if got is None:
        raise InvalidArgument(field, "required" if value == 0 else f"unknown value {value}")
    return got


def _many(items: Any, field: str) -> list[Any]:
    out = list(items)
    if len(out) > MAX_ENTRIES:
        raise InvalidArgument(field, f"at most {MAX_ENTRIES} entries")
    return out


def _combo(
    items: Iterable[pb.ComponentVersion], field: str, required: bool = True
) -> Combination | None:
    entries = _many(items, field)
    if not entries:
        if required:
            raise InvalidArgument(field, "required: one entry per component")
        return None
    versions: dict[str, str] = {}
    problems: list[FieldViolation] = []
    for i, e in enumerate(entries):
        if e.component in versions:
            problems.append(FieldViolation(f"{field}[{i}].component", "named twice"))
        versions[e.component] = e.version
    if problems:
        raise InvalidArgument.of(problems)
    for i, e in enumerate(entries):
        check_component(e.component, f"{field}[{i}].component")
        Version.parse(e.version, f"{field}[{i}].version")
    return Combination.parse(versions, field)


def _combo_pb(c: Combination | None) -> list[pb.ComponentVersion]:
    return (
        [] if c is None else [pb.ComponentVersion(component=k, version=str(v)) for k, v in c.items]
    )


def _entries(items: Iterable[pb.ProfileEntry], field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, e in enumerate(_many(items, field)):
        if e.key in out:
            raise InvalidArgument(f"{field}[{i}].key", "named twice")
        out[e.key] = e.value
    return out


def _switches(items: Iterable[pb.ServiceSwitch], field: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for i, e in enumerate(_many(items, field)):
        if e.name in out:
            raise InvalidArgument(f"{field}[{i}].name", "named twice")
        out[e.name] = e.enabled
    return out


def _ids(items: Iterable[str], field: str) -> frozenset[uuid.UUID]:
    return frozenset(cv.parse_id(x, f"{field}[{i}]") for i, x in enumerate(_many(items, field)))


def type_pb(t: DeviceType) -> pb.DeviceType:
    return pb.DeviceType(
        id=str(t.id), client_id=str(t.client_id), name=t.name, components=list(t.components)
    )


def release_pb(type_id: uuid.UUID, r: Release, notes: str = "") -> pb.FirmwareRelease:
    return pb.FirmwareRelease(
        device_type_id=str(type_id),
        component=r.component,
        version=str(r.version),
        requires=[pb.Requirement(component=q.component, range=q.range.text) for q in r.requires],
        notes=notes,
    )


def step_pb(st: Step) -> pb.UpgradeStep:
    return pb.UpgradeStep(
        component=st.component,
        from_version=str(st.from_version),
        to_version=str(st.to_version),
        result=_combo_pb(st.result),
    )


def profile_pb(p: DeviceProfile) -> pb.DeviceProfile:
    return pb.DeviceProfile(
        id=str(p.id),
        client_id=str(p.client_id),
        name=p.name,
        scope=_SCOPE_PB[p.scope],
        scope_id=str(p.scope_id),
        device_type_id=str(p.device_type_id) if p.device_type_id else "",
        values=[pb.ProfileEntry(key=k, value=v) for k, v in sorted(p.values.items())],
        secrets=[pb.ProfileEntry(key=k) for k in sorted(p.secrets)],
        services=[pb.ServiceSwitch(name=k, enabled=v) for k, v in sorted(p.services.items())],
        version=p.version,
        create_time=cv.ts(p.create_time),
        update_time=cv.ts(p.update_time),
    )


def resolved_pb(r: ResolvedProfile, secrets: Mapping[str, str] | None = None) -> pb.ResolvedProfile:
    return pb.ResolvedProfile(
        values=[pb.ProfileEntry(key=k, value=v) for k, v in sorted(r.values.items())],
        secrets=[
            pb.ProfileEntry(key=k, value=(secrets or {}).get(k, "")) for k in sorted(r.secrets)
        ],
        services=[pb.ServiceSwitch(name=k, enabled=v) for k, v in sorted(r.services.items())],
        digest=r.digest,
        profile_ids=[str(pid) for pid, _ in r.sources],
    )


def device_pb(d: Device) -> pb.Device:
    out = pb.Device(
        id=str(d.id),
        client_id=str(d.client_id),
        device_type_id=str(d.device_type_id),
        serial=d.serial,
        group_key=d.group_key,
        production_run_id=str(d.production_run_id) if d.production_run_id else "",
        location_id=str(d.location_id) if d.location_id else "",
        tracker_id=str(d.tracker_id) if d.tracker_id else "",
        versions=_combo_pb(d.versions),
        health=[pb.ProfileEntry(key=k, value=v) for k, v in sorted(d.health.items())],
        create_time=cv.ts(d.create_time),
    )
    if d.last_check_in:
        out.last_check_in_time.CopyFrom(cv.ts(d.last_check_in))
    return out


def _duration(d: timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(d)
    return out


def policy_pb(p: RolloutPolicy) -> pb.RolloutPolicy:
    return pb.RolloutPolicy(
        phases=list(p.phases),
        max_in_flight_per_group=p.max_in_flight_per_group,
        advance_share=p.advance_share,
        pause_failure_rate=p.pause_failure_rate,
        abort_failure_rate=p.abort_failure_rate,
        min_outcomes=p.min_outcomes,
        max_attempts=p.max_attempts,
        step_timeout=_duration(p.step_timeout),
    )


def _policy(m: pb.RolloutPolicy) -> RolloutPolicy:
    d = RolloutPolicy()
    for name in ("advance_share", "pause_failure_rate", "abort_failure_rate"):
        if not math.isfinite(getattr(m, name)):
            raise InvalidArgument(f"rollout.policy.{name}", "a finite number")
    if any(not math.isfinite(x) for x in m.phases):
        raise InvalidArgument("rollout.policy.phases", "finite numbers")
    timeout = d.step_timeout
    if m.HasField("step_timeout"):
        st = m.step_timeout
        if st.seconds < 0 or st.nanos < 0 or st.seconds > 10**9:
            raise InvalidArgument("rollout.policy.step_timeout", "a positive duration")
        timeout = timedelta(seconds=st.seconds, microseconds=st.nanos // 1000) or d.step_timeout
    try:
        return RolloutPolicy(
            phases=tuple(_many(m.phases, "rollout.policy.phases")) or d.phases,
            max_in_flight_per_group=m.max_in_flight_per_group,
            advance_share=m.advance_share or d.advance_share,
            pause_failure_rate=m.pause_failure_rate or d.pause_failure_rate,
            abort_failure_rate=m.abort_failure_rate or d.abort_failure_rate,
            min_outcomes=m.min_outcomes or d.min_outcomes,
            max_attempts=m.max_attempts or d.max_attempts,
            step_timeout=timeout,
        ).check()
    except InvalidArgument as err:
        raise err.prefixed("rollout.policy") from None


def rollout_pb(r: Rollout, counts: Mapping[DeviceRolloutState, int] | None = None) -> pb.Rollout:
    out = pb.Rollout(
        id=str(r.id),
        client_id=str(r.client_id),
        device_type_id=str(r.device_type_id),
        name=r.name,
        target=_combo_pb(r.target),
        policy=policy_pb(r.policy),
        state=_ROLLOUT_STATE_PB[r.state],
        phase=r.phase,
        phase_percent=r.phase_percent,
        phase_succeeded=r.phase_succeeded,
        phase_failed=r.phase_failed,
        reason=r.reason,
        create_time=cv.ts(r.create_time),
        update_time=cv.ts(r.update_time),
    )
    if counts is not None:
        out.pending_count = counts.get(DeviceRolloutState.PENDING, 0)
        out.in_progress_count = counts.get(DeviceRolloutState.IN_PROGRESS, 0)
        out.done_count = counts.get(DeviceRolloutState.DONE, 0)
        out.failed_count = counts.get(DeviceRolloutState.FAILED, 0)
    return out


def progress_pb(p: RolloutProgress) -> pb.Rollout:
    return rollout_pb(p.rollout, p.devices)


def rollout_device_pb(rd: RolloutDevice) -> pb.RolloutDevice:
    out = pb.RolloutDevice(
        rollout_id=str(rd.rollout_id),
        device_id=str(rd.device_id),
        group_key=rd.group_key,
        state=_RD_STATE_PB[rd.state],
        attempts=rd.attempts,
        last_error=rd.last_error,
    )
    if rd.step is not None:
        out.step.CopyFrom(step_pb(rd.step))
    return out


def check_in_pb(r: CheckInResult) -> s.CheckInResponse:
    out = s.CheckInResponse(profile_changed=r.profile_changed)
    if r.step is not None:
        out.next_step.CopyFrom(step_pb(r.step))
    if r.profile_changed:
        out.profile.CopyFrom(resolved_pb(r.profile, r.secrets))
    if r.rollout is not None:
        out.rollout.CopyFrom(rollout_pb(r.rollout))
    if r.rollout_device is not None:
        out.rollout_device.CopyFrom(rollout_device_pb(r.rollout_device))
    return out


_PROFILE_PARTS = ("name", "values", "secrets", "services")


def _mask(msg: Message, field: str) -> set[str]:
    mask = getattr(msg, field)
    paths = set(mask.paths)
    unknown = sorted(paths - set(_PROFILE_PARTS))
    if unknown:
        raise InvalidArgument(
            field, f"unknown path {unknown[0]!r}: one of {', '.join(_PROFILE_PARTS)}"
        )
    return paths


class DeviceServicer(s_grpc.DeviceServiceServicer):
    """Changes and check-ins; served by the collector."""

    def __init__(
        self, catalog: DeviceCatalog, profiles: DeviceProfiles, devices: Devices, rollouts: Rollouts
    ) -> None:
        self._catalog, self._profiles, self._devices, self._rollouts = (
            catalog,
            profiles,
            devices,
            rollouts,
        )

    async def CreateDeviceType(
        self, request: s.CreateDeviceTypeRequest, context: Ctx
    ) -> s.CreateDeviceTypeResponse:
        _no_nul(request)
        t = request.device_type
        created = await self._catalog.create_type(
            caller(),
            cv.parse_id(t.client_id, "device_type.client_id"),
            t.name,
            _many(t.components, "device_type.components"),
        )
        return s.CreateDeviceTypeResponse(device_type=type_pb(created))

    async def CreateFirmwareRelease(
        self, request: s.CreateFirmwareReleaseRequest, context: Ctx
    ) -> s.CreateFirmwareReleaseResponse:
        _no_nul(request)
        r = request.firmware_release
        type_id = cv.parse_id(r.device_type_id, "firmware_release.device_type_id")
        check_component(r.component, "firmware_release.component")
        requires = []
        for i, q_ in enumerate(_many(r.requires, "firmware_release.requires")):
            f = f"firmware_release.requires[{i}]"
            check_component(q_.component, f"{f}.component")
            requires.append(Requirement(q_.component, VersionRange.parse(q_.range, f"{f}.range")))
        release = Release(
            r.component, Version.parse(r.version, "firmware_release.version"), tuple(requires)
        )
        if len(r.notes) > 2000:
            raise InvalidArgument("firmware_release.notes", "at most 2000 characters")
        try:
            await self._catalog.add_release(caller(), type_id, release, r.notes)
        except InvalidArgument as err:
            raise _reprefix(err, "release.", "firmware_release.") from None
        return s.CreateFirmwareReleaseResponse(
            firmware_release=release_pb(type_id, release, r.notes)
        )

    async def SetCombinations(
        self, request: s.SetCombinationsRequest, context: Ctx
    ) -> s.SetCombinationsResponse:
        _no_nul(request)
        type_id = cv.parse_id(request.device_type_id, "device_type_id")
        state = _enum(request.state, _COMBO_STATE, "state")
        if len(request.combinations) > 10_000:
            raise InvalidArgument("combinations", "at most 10000 per call")
        combos = [
            _combo(c.versions, f"combinations[{i}].versions")
            for i, c in enumerate(request.combinations)
        ]
        n = await self._catalog.add_combinations(caller(), type_id, [c for c in combos if c], state)
        return s.SetCombinationsResponse(changed_count=n)

    async def DeriveCombinations(
        self, request: s.DeriveCombinationsRequest, context: Ctx
    ) -> s.DeriveCombinationsResponse:
        _no_nul(request)
        n = await self._catalog.derive_combinations(
            caller(), cv.parse_id(request.device_type_id, "device_type_id")
        )
        return s.DeriveCombinationsResponse(added_count=n)

    async def CreateDeviceProfile(
        self, request: s.CreateDeviceProfileRequest, context: Ctx
    ) -> s.CreateDeviceProfileResponse:
        _no_nul(request)
        p = request.device_profile
        created = await self._profiles.create(
            caller(),
            ProfileInput(
                name=p.name,
                scope=_enum(p.scope, _SCOPE, "device_profile.scope"),
                scope_id=cv.parse_id(p.scope_id, "device_profile.scope_id"),
                device_type_id=cv.optional_id(p.device_type_id, "device_profile.device_type_id"),
                values=_entries(p.values, "device_profile.values"),
                secrets=_entries(p.secrets, "device_profile.secrets"),
                services=_switches(p.services, "device_profile.services"),
            ),
        )
        return s.CreateDeviceProfileResponse(device_profile=profile_pb(created))

    async def UpdateDeviceProfile(
        self, request: s.UpdateDeviceProfileRequest, context: Ctx
    ) -> s.UpdateDeviceProfileResponse:
        _no_nul(request)
        p = request.device_profile
        pid = cv.parse_id(p.id, "device_profile.id")
        masked = request.HasField("update_mask")
        paths = _mask(request, "update_mask") if masked else set()

        def part(name: str, value: Any, given: bool) -> Any:
            return value if (name in paths if masked else given) else None

        updated = await self._profiles.update(
            caller(),
            pid,
            values=part("values", _entries(p.values, "device_profile.values"), bool(p.values)),
            secrets=part("secrets", _entries(p.secrets, "device_profile.secrets"), bool(p.secrets)),
            services=part(
                "services", _switches(p.services, "device_profile.services"), bool(p.services)
            ),
            name=part("name", p.name, bool(p.name)),
        )
        return s.UpdateDeviceProfileResponse(device_profile=profile_pb(updated))

    async def RegisterDevice(
        self, request: s.RegisterDeviceRequest, context: Ctx
    ) -> s.RegisterDeviceResponse:
        _no_nul(request)
        d = request.device
        device = await self._devices.register(
            caller(),
            DeviceInput(
                client_id=cv.parse_id(d.client_id, "device.client_id"),
                device_type_id=cv.parse_id(d.device_type_id, "device.device_type_id"),
                serial=d.serial,
                group_key=d.group_key,
                production_run_id=cv.optional_id(d.production_run_id, "device.production_run_id"),
                location_id=cv.optional_id(d.location_id, "device.location_id"),
                tracker_id=cv.optional_id(d.tracker_id, "device.tracker_id"),
                versions=_combo(d.versions, "device.versions", required=False),
            ),
        )
        return s.RegisterDeviceResponse(device=device_pb(device))

    async def CheckIn(self, request: s.CheckInRequest, context: Ctx) -> s.CheckInResponse:
        _no_nul(request)
        versions = _combo(request.versions, "versions")
        assert versions is not None
        if len(request.profile_digest) > 64:
            raise InvalidArgument("profile_digest", "at most 64 characters")
        health = _entries(request.health, "health")
        for k, v in health.items():
            if len(k) > 64 or len(v) > 256:
                raise InvalidArgument(
                    f"health[{k[:64]}]", "keys at most 64, values at most 256 characters"
                )
        result = await self._devices.check_in(
            caller(),
            CheckIn(
                device_id=cv.parse_id(request.device_id, "device_id"),
                versions=versions,
                failed_step=request.step_failed,
                failure_reason=request.failure_reason[:500],
                health=health,
                profile_digest=request.profile_digest,
            ),
        )
        return check_in_pb(result)

    async def CreateRollout(
        self, request: s.CreateRolloutRequest, context: Ctx
    ) -> s.CreateRolloutResponse:
        _no_nul(request)
        r, sel = request.rollout, request.selection
        target = _combo(r.target, "rollout.target")
        assert target is not None
        progress = await self._rollouts.create(
            caller(),
            RolloutInput(
                name=r.name,
                device_type_id=cv.parse_id(r.device_type_id, "rollout.device_type_id"),
                target=target,
                policy=_policy(r.policy),
                production_run_ids=_ids(sel.production_run_ids, "selection.production_run_ids"),
                group_keys=frozenset(_many(sel.group_keys, "selection.group_keys")),
                device_ids=_ids(sel.device_ids, "selection.device_ids"),
            ),
        )
        return s.CreateRolloutResponse(rollout=progress_pb(progress))

    async def PauseRollout(
        self, request: s.PauseRolloutRequest, context: Ctx
    ) -> s.PauseRolloutResponse:
        _no_nul(request)
        r = await self._rollouts.pause(
            caller(), cv.parse_id(request.rollout_id, "rollout_id"), request.reason[:500]
        )
        return s.PauseRolloutResponse(rollout=rollout_pb(r))

    async def ResumeRollout(
        self, request: s.ResumeRolloutRequest, context: Ctx
    ) -> s.ResumeRolloutResponse:
        _no_nul(request)
        r = await self._rollouts.resume(caller(), cv.parse_id(request.rollout_id, "rollout_id"))
        return s.ResumeRolloutResponse(rollout=rollout_pb(r))

    async def AbortRollout(
        self, request: s.AbortRolloutRequest, context: Ctx
    ) -> s.AbortRolloutResponse:
        _no_nul(request)
        r = await self._rollouts.abort(
            caller(), cv.parse_id(request.rollout_id, "rollout_id"), request.reason[:500]
        )
        return s.AbortRolloutResponse(rollout=rollout_pb(r))


def _reprefix(err: InvalidArgument, old: str, new: str) -> InvalidArgument:
    return InvalidArgument.of(
        [
            FieldViolation(
                new + v.field[len(old) :] if v.field.startswith(old) else v.field, v.reason
            )
            for v in err.violations
        ]
    )


def page_scope(rpc: str, filter: object = "") -> str:
    return f"tracker.v1.DeviceQueryService/{rpc}?{filter}"


class DeviceQueryServicer(q_grpc.DeviceQueryServiceServicer):
    """Reads of devices and firmware; served by the query server."""

    def __init__(self, uc: DeviceQueries, tokens: PageTokens, watch_poll_s: float = 1.0) -> None:
        self._uc, self._tokens, self._poll = uc, tokens, watch_poll_s

    def _page(self, request: Any, scope: str) -> PageRequest:
        return self._tokens.request(request.page_size, request.page_token, scope)

    async def GetDeviceType(
        self, request: q.GetDeviceTypeRequest, context: Ctx
    ) -> q.GetDeviceTypeResponse:
        _no_nul(request)
        return q.GetDeviceTypeResponse(
            device_type=type_pb(await self._uc.get_type(caller(), cv.parse_id(request.id)))
        )

    async def ListDeviceTypes(
        self, request: q.ListDeviceTypesRequest, context: Ctx
    ) -> q.ListDeviceTypesResponse:
        _no_nul(request)
        client = cv.optional_id(request.client_id, "client_id")
        key = page_scope("ListDeviceTypes", client or "")
        page = await self._uc.list_types(caller(), client, self._page(request, key))
        return q.ListDeviceTypesResponse(
            device_types=[type_pb(t) for t in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetFirmwareCatalog(
        self, request: q.GetFirmwareCatalogRequest, context: Ctx
    ) -> q.GetFirmwareCatalogResponse:
        _no_nul(request)
        type_id = cv.parse_id(request.device_type_id, "device_type_id")
        state = _enum(request.state, _COMBO_STATE, "state", required=False)
        releases = await self._uc.releases(caller(), type_id)
        combos = await self._uc.combinations(caller(), type_id, state)
        return q.GetFirmwareCatalogResponse(
            releases=[release_pb(type_id, r) for r in releases],
            combinations=[
                pb.Combination(
                    versions=_combo_pb(c.combination),
                    state=_COMBO_STATE_PB[c.state],
                    update_time=cv.ts(c.update_time),
                )
                for c in combos
            ],
        )

    async def PlanUpgrade(
        self, request: q.PlanUpgradeRequest, context: Ctx
    ) -> q.PlanUpgradeResponse:
        _no_nul(request)
        target = _combo(request.target, "target")
        assert target is not None
        device_id = cv.optional_id(request.device_id, "device_id")
        steps = await self._uc.plan(
            caller(),
            cv.optional_id(request.device_type_id, "device_type_id") if device_id is None else None,
            device_id,
            _combo(request.current, "current", required=device_id is None)
            if device_id is None
            else None,
            target,
        )
        return q.PlanUpgradeResponse(steps=[step_pb(x) for x in steps])

    async def GetDevice(self, request: q.GetDeviceRequest, context: Ctx) -> q.GetDeviceResponse:
        _no_nul(request)
        return q.GetDeviceResponse(
            device=device_pb(await self._uc.get_device(caller(), cv.parse_id(request.id)))
        )

    async def ListDevices(
        self, request: q.ListDevicesRequest, context: Ctx
    ) -> q.ListDevicesResponse:
        _no_nul(request)
        client = cv.optional_id(request.client_id, "client_id")
        type_id = cv.optional_id(request.device_type_id, "device_type_id")
        key = page_scope("ListDevices", f"{client or ''}|{type_id or ''}")
        page = await self._uc.list_devices(caller(), client, type_id, self._page(request, key))
        return q.ListDevicesResponse(
            devices=[device_pb(d) for d in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetDeviceProfile(
        self, request: q.GetDeviceProfileRequest, context: Ctx
    ) -> q.GetDeviceProfileResponse:
        _no_nul(request)
        p = await self._uc.get_profile(caller(), cv.parse_id(request.id))
        return q.GetDeviceProfileResponse(device_profile=profile_pb(p))

    async def ListDeviceProfiles(
        self, request: q.ListDeviceProfilesRequest, context: Ctx
    ) -> q.ListDeviceProfilesResponse:
        _no_nul(request)
        client = cv.optional_id(request.client_id, "client_id")
        key = page_scope("ListDeviceProfiles", client or "")
        page = await self._uc.list_profiles(caller(), client, self._page(request, key))
        return q.ListDeviceProfilesResponse(
            device_profiles=[profile_pb(p) for p in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetResolvedProfile(
        self, request: q.GetResolvedProfileRequest, context: Ctx
    ) -> q.GetResolvedProfileResponse:
        _no_nul(request)
        r = await self._uc.resolved_profile(caller(), cv.parse_id(request.device_id, "device_id"))
        return q.GetResolvedProfileResponse(profile=resolved_pb(r))

    async def GetRollout(self, request: q.GetRolloutRequest, context: Ctx) -> q.GetRolloutResponse:
        _no_nul(request)
        return q.GetRolloutResponse(
            rollout=progress_pb(await self._uc.rollout(caller(), cv.parse_id(request.id)))
        )

    async def ListRollouts(
        self, request: q.ListRolloutsRequest, context: Ctx
    ) -> q.ListRolloutsResponse:
        _no_nul(request)
        client = cv.optional_id(request.client_id, "client_id")
        state = _enum(request.state, _ROLLOUT_STATE, "state", required=False)
        key = page_scope("ListRollouts", f"{client or ''}|{request.state}")
        page = await self._uc.list_rollouts(caller(), client, state, self._page(request, key))
        return q.ListRolloutsResponse(
            rollouts=[rollout_pb(r) for r in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def ListRolloutDevices(
        self, request: q.ListRolloutDevicesRequest, context: Ctx
    ) -> q.ListRolloutDevicesResponse:
        _no_nul(request)
        rid = cv.optional_id(request.rollout_id, "rollout_id")
        state = _enum(request.state, _RD_STATE, "state", required=False)
        key = page_scope("ListRolloutDevices", f"{rid or ''}|{request.state}")
        page = await self._uc.rollout_devices(caller(), rid, state, self._page(request, key))
        return q.ListRolloutDevicesResponse(
            rollout_devices=[rollout_device_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def WatchRollout(
        self, request: q.WatchRolloutRequest, context: Ctx
    ) -> AsyncIterator[q.WatchRolloutResponse]:
        _no_nul(request)
        rid = cv.parse_id(request.rollout_id, "rollout_id")
        async for p in self._uc.watch_rollout(caller(), rid, self._poll):
            yield q.WatchRolloutResponse(rollout=progress_pb(p))
