"""Connected devices: configuration profiles resolved by where a device is, and firmware
rollouts in phases with a throttle per group (seed 004: 10,000 devices upgrading at once
exceeded a cell's bandwidth; limiting concurrent upgrades per cell tower made it work).

Pure rules only; the use cases in ``usecases.devices`` load and store the state.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import ClassVar

from domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from domain.firmware import Combination, Step
from domain.model import SealedSecret

PROFILE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_PROFILE_ENTRIES = 100
MAX_PROFILE_VALUE = 4096
GROUP_KEY = re.compile(r"^[^\x00-\x1f]{1,128}$")


class ProfileScope(enum.Enum):
    """Where a profile applies, from the most general to the most specific: a device's
    resolved profile is the client's, overridden by its production run's, overridden by its
    site's (location)."""

    CLIENT = 1
    PRODUCTION_RUN = 2
    LOCATION = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceProfile:
    KIND: ClassVar[str] = "device profile"

    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    scope: ProfileScope
    scope_id: uuid.UUID
    """The client, production run or location the profile applies to."""
    device_type_id: uuid.UUID | None
    """Only devices of this type; None: every type."""
    values: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, SealedSecret] = field(default_factory=dict)
    """Sealed like tag private keys; unsealed only for the device itself at check-in."""
    services: Mapping[str, bool] = field(default_factory=dict)
    """Which services are enabled (e.g. ``firmware``, ``lte``, ``log_upload``)."""
    version: int = 1
    create_time: datetime
    update_time: datetime


def check_profile_entries(
    values: Mapping[str, str], secrets: Mapping[str, str], services: Mapping[str, bool]
) -> None:
    problems: list[FieldViolation] = []
    total = len(values) + len(secrets) + len(services)
    if total > MAX_PROFILE_ENTRIES:
        problems.append(FieldViolation("values", f"at most {MAX_PROFILE_ENTRIES} entries in all"))
    for name, m in (("values", values), ("secrets", secrets), ("services", services)):
        for k, v in m.items():
            if not PROFILE_KEY.match(k):
                problems.append(
                    FieldViolation(
                        f"{name}[{k}]", "a key is 1-64 of A-Z a-z 0-9 _ . - (a letter first)"
                    )
                )
            if isinstance(v, str) and len(v.encode()) > MAX_PROFILE_VALUE:
                problems.append(
                    FieldViolation(f"{name}[{k}]", f"at most {MAX_PROFILE_VALUE} bytes")
                )
    for k in sorted(set(values) & set(secrets)):
        problems.append(
            FieldViolation(f"secrets[{k}]", "also a plain value: a key is one or the other")
        )
    if problems:
        raise InvalidArgument.of(problems)


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    """What a device runs with: the merged entries, and the profiles (and versions) they came
    from; ``digest`` changes whenever any of them does, so a device that reports the digest
    it has is sent the profile only when it changed."""

    values: Mapping[str, str]
    secrets: Mapping[str, SealedSecret]
    services: Mapping[str, bool]
    sources: tuple[tuple[uuid.UUID, int], ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for pid, version in self.sources:
            h.update(pid.bytes + version.to_bytes(8, "big"))
        return h.hexdigest()[:16]


def resolve_profile(
    profiles: Sequence[DeviceProfile], device_type_id: uuid.UUID
) -> ResolvedProfile:
    """Merge the profiles that apply to a device: general scopes first, so a run's values
    override its client's and a site's override both; within a scope, a type-specific
    profile overrides a type-agnostic one."""
    applicable = [p for p in profiles if p.device_type_id in (None, device_type_id)]
    applicable.sort(key=lambda p: (p.scope.value, p.device_type_id is not None, str(p.id)))
    values: dict[str, str] = {}
    secrets: dict[str, SealedSecret] = {}
    services: dict[str, bool] = {}
    for p in applicable:
        for k, v in p.values.items():
            values[k] = v
            secrets.pop(k, None)
        for k, s in p.secrets.items():
            secrets[k] = s
            values.pop(k, None)
        services.update(p.services)
    return ResolvedProfile(values, secrets, services, tuple((p.id, p.version) for p in applicable))


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """A connected device (gateway, detector, LTE tag) that checks in with its firmware."""

    KIND: ClassVar[str] = "device"

    id: uuid.UUID
    client_id: uuid.UUID
    device_type_id: uuid.UUID
    serial: str
    group_key: str
    """The group whose bandwidth its downloads share (a cell tower, a site); the rollout
    throttle counts concurrent upgrades per group."""
    production_run_id: uuid.UUID | None = None
    location_id: uuid.UUID | None = None
    tracker_id: uuid.UUID | None = None
    versions: Combination | None = None
    last_check_in: datetime | None = None
    health: Mapping[str, str] = field(default_factory=dict)
    create_time: datetime
    update_time: datetime


def check_group_key(key: str, field_name: str = "group") -> str:
    if not GROUP_KEY.match(key):
        raise InvalidArgument(field_name, "1-128 printable characters (e.g. a cell id or a site)")
    return key


class RolloutState(enum.Enum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    """Stopped by the failure threshold or an operator; resume to go on."""
    ABORTED = "ABORTED"
    """Stopped for good (the abort threshold or an operator); in-flight steps may finish."""
    COMPLETED = "COMPLETED"


class DeviceRolloutState(enum.Enum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    """A step was sent and its outcome not yet reported."""
    DONE = "DONE"
    FAILED = "FAILED"
    """Failed ``max_attempts`` times (or no path exists): left out, listed with the reason."""


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """How a rollout proceeds.

    - ``phases``: cumulative percentages of the selected devices, e.g. (1, 10, 50, 100).
    - ``max_in_flight_per_group``: concurrent upgrades per group (cell/site); 0 = no limit.
    - ``advance_share``: the share of a phase's devices that must be done before the next
      phase opens (devices that never check in would otherwise hold it forever).
    - ``pause_failure_rate`` / ``abort_failure_rate``: the share of failed steps among the
      phase's finished steps that pauses / aborts the rollout, once ``min_outcomes`` steps of
      the phase have finished.
    - ``max_attempts``: failed steps per device before it is left out as FAILED.
    - ``step_timeout``: a step without an outcome after this long counts as failed.
    """

    phases: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
    max_in_flight_per_group: int = 0
    advance_share: float = 0.95
    pause_failure_rate: float = 0.05
    abort_failure_rate: float = 0.2
    min_outcomes: int = 20
    max_attempts: int = 3
    step_timeout: timedelta = timedelta(hours=1)

    def check(self) -> RolloutPolicy:
        p: list[FieldViolation] = []
        if not self.phases:
            p.append(FieldViolation("phases", "at least one phase"))
        elif any(not (0 < x <= 100) for x in self.phases):
            p.append(FieldViolation("phases", "each phase is a percentage in (0, 100]"))
        elif list(self.phases) != sorted(set(self.phases)) or self.phases[-1] != 100:
            p.append(FieldViolation("phases", "strictly increasing, the last one 100"))
        if self.max_in_flight_per_group < 0:
            p.append(FieldViolation("max_in_flight_per_group", "0 (no limit) or more"))
        if not (0 < self.advance_share <= 1):
            p.append(FieldViolation("advance_share", "in (0, 1]"))
        if not (0 < self.pause_failure_rate <= 1):
            p.append(FieldViolation("pause_failure_rate", "in (0, 1]"))
        if not (0 < self.abort_failure_rate <= 1):
            p.append(FieldViolation("abort_failure_rate", "in (0, 1]"))
        elif self.abort_failure_rate < self.pause_failure_rate:
            p.append(FieldViolation("abort_failure_rate", "at least pause_failure_rate"))
        if self.min_outcomes < 1:
            p.append(FieldViolation("min_outcomes", "at least 1"))
        if not (1 <= self.max_attempts <= 20):
            p.append(FieldViolation("max_attempts", "1 to 20"))
        if not (timedelta(minutes=1) <= self.step_timeout <= timedelta(days=7)):
            p.append(FieldViolation("step_timeout", "1 minute to 7 days"))
        if p:
            raise InvalidArgument.of(p)
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    KIND: ClassVar[str] = "rollout"

    id: uuid.UUID
    client_id: uuid.UUID
    device_type_id: uuid.UUID
    name: str
    target: Combination
    policy: RolloutPolicy
    state: RolloutState = RolloutState.RUNNING
    phase: int = 0
    phase_succeeded: int = 0
    phase_failed: int = 0
    reason: str = ""
    create_time: datetime
    update_time: datetime

    @property
    def phase_percent(self) -> float:
        return self.policy.phases[self.phase]

    def admits(self, bucket: float) -> bool:
        return bucket < self.phase_percent


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutDevice:
    """A device's progress in a rollout."""

    rollout_id: uuid.UUID
    device_id: uuid.UUID
    group_key: str
    bucket: float
    state: DeviceRolloutState = DeviceRolloutState.PENDING
    attempts: int = 0
    step: Step | None = None
    step_time: datetime | None = None
    last_error: str = ""
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class PhaseCounts:
    """The devices of the current phase (bucket below its percentage) by state."""

    admitted: int
    done: int
    failed: int


def after_outcome(r: Rollout, succeeded: bool) -> Rollout:
    if succeeded:
        return replace(r, phase_succeeded=r.phase_succeeded + 1)
    return replace(r, phase_failed=r.phase_failed + 1)


def judge(r: Rollout, counts: PhaseCounts, now: datetime) -> Rollout:
    """The rollout after its phase's numbers: completed when every device of the last phase
    is settled; paused or aborted when, after ``min_outcomes`` finished steps in the phase,
    too many of them failed; the next phase opened when enough devices are done."""
    if r.state is not RolloutState.RUNNING:
        return r
    settled = counts.done + counts.failed
    last = r.phase + 1 == len(r.policy.phases)
    if last and counts.admitted and settled == counts.admitted:
        reason = f"{counts.failed} devices failed" if counts.failed else ""
        return replace(r, state=RolloutState.COMPLETED, reason=reason, update_time=now)
    finished = r.phase_succeeded + r.phase_failed
    if finished >= r.policy.min_outcomes:
        rate = r.phase_failed / finished
        for limit, state, word in (
            (r.policy.abort_failure_rate, RolloutState.ABORTED, "abort"),
            (r.policy.pause_failure_rate, RolloutState.PAUSED, "pause"),
        ):
            if rate >= limit:
                return replace(
                    r,
                    state=state,
                    reason=f"{r.phase_failed} of {finished} steps failed in phase {r.phase + 1} "
                    f"({rate:.0%} >= {word} threshold {limit:.0%})",
                    update_time=now,
                )
    if counts.admitted == 0 or settled < r.policy.advance_share * counts.admitted:
        return r
    if counts.done == 0 or last:
        return r  # never widen a phase on failures alone
    return replace(
        r, phase=r.phase + 1, phase_succeeded=0, phase_failed=0, reason="", update_time=now
    )


def resume(r: Rollout, now: datetime) -> Rollout:
    if r.state is RolloutState.RUNNING:
        return r
    if r.state is not RolloutState.PAUSED:
        raise FailedPrecondition(f"a {r.state.value.lower()} rollout cannot be resumed", "state")
    # The failures that paused it were looked at by whoever resumes: count afresh.
    return replace(
        r, state=RolloutState.RUNNING, phase_succeeded=0, phase_failed=0, reason="", update_time=now
    )


def pause(r: Rollout, reason: str, now: datetime) -> Rollout:
    if r.state is RolloutState.PAUSED:
        return r
    if r.state is not RolloutState.RUNNING:
        raise FailedPrecondition(f"a {r.state.value.lower()} rollout cannot be paused", "state")
    return replace(
        r, state=RolloutState.PAUSED, reason=reason or "paused by an operator", update_time=now
    )


def abort(r: Rollout, reason: str, now: datetime) -> Rollout:
    if r.state is RolloutState.ABORTED:
        return r
    if r.state is RolloutState.COMPLETED:
        raise FailedPrecondition("a completed rollout cannot be aborted", "state")
    return replace(
        r, state=RolloutState.ABORTED, reason=reason or "aborted by an operator", update_time=now
    )


@dataclass(frozen=True, slots=True)
class CheckIn:
    """What a device says when it checks in: the versions it runs, optionally the outcome of
    the step it was sent (a failure with its reason; success is also seen in ``versions``),
    its health, and the digest of the profile it has."""

    device_id: uuid.UUID
    versions: Combination
    failed_step: bool = False
    failure_reason: str = ""
    health: Mapping[str, str] = field(default_factory=dict)
    profile_digest: str = ""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How a check-in settled the device's step in flight (if it had one)."""

    succeeded: bool
    reason: str = ""


def settle_step(
    rd: RolloutDevice, c: CheckIn, now: datetime, policy: RolloutPolicy
) -> tuple[RolloutDevice, StepOutcome | None]:
    """The device's rollout record after a check-in, and the outcome of its step in flight:
    success when it runs the step's result, failure when it says so or the step timed out;
    otherwise still in progress."""
    if rd.state is not DeviceRolloutState.IN_PROGRESS or rd.step is None:
        return rd, None
    if c.versions == rd.step.result:
        return replace(
            rd,
            state=DeviceRolloutState.PENDING,
            step=None,
            step_time=None,
            last_error="",
            update_time=now,
        ), StepOutcome(True)
    timed_out = rd.step_time is not None and now - rd.step_time >= policy.step_timeout
    if c.failed_step or timed_out or c.versions != _before(rd.step):
        reason = (
            c.failure_reason or "failed"
            if c.failed_step
            else "timed out"
            if timed_out
            else f"device runs {c.versions}, neither before nor after the step"
        )
        return fail_step(rd, reason, now, policy), StepOutcome(False, reason)
    return rd, None


def _before(step: Step) -> Combination:
    return step.result.with_(step.component, step.from_version)


def fail_step(
    rd: RolloutDevice, reason: str, now: datetime, policy: RolloutPolicy
) -> RolloutDevice:
    attempts = rd.attempts + 1
    return replace(
        rd,
        state=DeviceRolloutState.FAILED
        if attempts >= policy.max_attempts
        else DeviceRolloutState.PENDING,
        attempts=attempts,
        step=None,
        step_time=None,
        last_error=reason[:500],
        update_time=now,
    )


def start_step(rd: RolloutDevice, step: Step, now: datetime) -> RolloutDevice:
    return replace(
        rd, state=DeviceRolloutState.IN_PROGRESS, step=step, step_time=now, update_time=now
    )


def finish(rd: RolloutDevice, now: datetime) -> RolloutDevice:
    return replace(
        rd, state=DeviceRolloutState.DONE, step=None, step_time=None, last_error="", update_time=now
    )


def give_up(rd: RolloutDevice, reason: str, now: datetime) -> RolloutDevice:
    return replace(
        rd,
        state=DeviceRolloutState.FAILED,
        step=None,
        step_time=None,
        last_error=reason[:500],
        update_time=now,
    )
