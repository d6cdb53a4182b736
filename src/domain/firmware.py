"""Firmware of devices with several processors: semantic versions, release constraints,
known-good combinations and the shortest upgrade path between two combinations.

A device type has components (``mcu``, ``ble``, ``lte``...), each running its own firmware.
Only one component can be upgraded at a time, and a device must always run a combination
that is known to work (seed 004). So an upgrade is a path in the graph whose nodes are the
known-good combinations of the type and whose edges join two combinations that differ in
exactly one component; the plan is a shortest such path (each step costs a download and a
reboot on a battery).

``UpgradePlanner`` answers for a whole fleet at once: one breadth-first search backwards from
each target covers every device aiming at it, so planning 250,000 devices costs one search per
distinct target plus a dictionary lookup per device.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import total_ordering
from typing import ClassVar

from domain.errors import FailedPrecondition, FieldViolation, InvalidArgument

COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_COMPONENTS = 8
MAX_COMBINATIONS = 20_000
"""Known-good combinations per device type; derived sets larger than this are refused."""

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    """A semantic version (semver.org 2.0): precedence ignores build metadata, and a
    pre-release sorts before its release (``1.4.0-rc.1 < 1.4.0``)."""

    major: int
    minor: int
    patch: int
    pre: tuple[int | str, ...] = ()
    build: str = field(default="", compare=False)
    _k: tuple[int, int, int, int, tuple[tuple[int, int | str], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Precedence key, computed once: versions are compared and hashed a lot by the planner.
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.pre)
        key = (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)
        object.__setattr__(self, "_k", key)

    @classmethod
    def parse(cls, text: str, field_name: str = "version") -> Version:
        m = _SEMVER.match(text.strip())
        if m is None:
            raise InvalidArgument(
                field_name, f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)"
            )
        pre: tuple[int | str, ...] = ()
        if m.group(4):
            pre = tuple(int(p) if p.isdigit() else p for p in m.group(4).split("."))
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, m.group(5) or "")

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        """A release (no pre-release) sorts after every pre-release of it; numeric
        identifiers sort before alphanumeric ones."""
        return self._k

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(str(p) for p in self.pre)
        return s + (f"+{self.build}" if self.build else "")


_COMPARATOR = re.compile(
    r"^(>=|<=|>|<|==|=|\^|~)?\s*v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(-[0-9A-Za-z.-]+)?$"
)


@dataclass(frozen=True, slots=True)
class _Bound:
    op: str  # one of >= > <= < ==
    version: Version

    def admits(self, v: Version) -> bool:
        match self.op:
            case ">=":
                return v >= self.version
            case ">":
                return v > self.version
            case "<=":
                return v <= self.version
            case "<":
                return v < self.version
            case _:
                return v == self.version


@dataclass(frozen=True, slots=True)
class VersionRange:
    """A set of versions, written as npm/cargo do: comparators joined by spaces or commas
    (all must hold), alternatives joined by ``||``. ``1.x`` / ``1.*`` / ``1`` mean ``>=1.0.0
    <2.0.0``; ``^1.4`` means ``>=1.4.0 <2.0.0`` (``^0.3`` means ``>=0.3.0 <0.4.0``); ``~1.4``
    means ``>=1.4.0 <1.5.0``; ``*`` is every version. Pre-releases are admitted only when a
    comparator names one explicitly, as in npm."""

    text: str
    alternatives: tuple[tuple[_Bound, ...], ...]

    @classmethod
    def parse(cls, text: str, field_name: str = "range") -> VersionRange:
        alternatives = []
        src = text.strip()
        if not src:
            raise InvalidArgument(field_name, "a version range is required (e.g. '>=1.4 <2')")
        for alt in src.split("||"):
            parts = [p for p in re.split(r"[,\s]+", alt.strip()) if p]
            # "> = 1.4" written with spaces: glue a lone operator to what follows it.
            glued: list[str] = []
            for p in parts:
                if glued and glued[-1] in (">=", "<=", ">", "<", "=", "==", "^", "~"):
                    glued[-1] += p
                else:
                    glued.append(p)
            if not glued:
                raise InvalidArgument(field_name, f"{text!r}: empty alternative")
            bounds: list[_Bound] = []
            for p in glued:
                bounds.extend(_comparator(p, text, field_name))
            alternatives.append(tuple(bounds))
        return cls(text.strip(), tuple(alternatives))

    def admits(self, v: Version) -> bool:
        for bounds in self.alternatives:
            if all(b.admits(v) for b in bounds):
                if v.pre and not any(
                    b.version.pre and _triple(b.version) == _triple(v) for b in bounds
                ):
                    continue
                return True
        return False

    def __str__(self) -> str:
        return self.text


def _triple(v: Version) -> tuple[int, int, int]:
    return (v.major, v.minor, v.patch)


def _comparator(p: str, text: str, field_name: str) -> list[_Bound]:
    if p in ("*", "x", "X"):
        return []
    m = _COMPARATOR.match(p)
    if m is None:
        raise InvalidArgument(
            field_name, f"{text!r}: cannot read {p!r} (e.g. '>=1.4', '2.x', '^1.2')"
        )
    op, parts, pre = m.group(1) or "", [m.group(2), m.group(3), m.group(4)], m.group(5)
    wild = [x is None or x in ("x", "X", "*") for x in parts]
    nums = [0 if w else int(x) for w, x in zip(wild, parts, strict=True)]
    if wild[0]:
        return []
    base = Version(nums[0], nums[1], nums[2], Version.parse(f"0.0.0{pre}").pre if pre else ())
    if op in ("", "=", "==") and not any(wild):
        return [_Bound("==", base)]
    if op in ("", "=", "==") or (op == "~" and wild[1]):
        # 1.x, 1.2.x, 1, 1.2: the prefix's whole range.
        if wild[1]:
            return [_Bound(">=", base), _Bound("<", Version(nums[0] + 1, 0, 0, (0,)))]
        return [_Bound(">=", base), _Bound("<", Version(nums[0], nums[1] + 1, 0, (0,)))]
    if op == "~":
        return [_Bound(">=", base), _Bound("<", Version(nums[0], nums[1] + 1, 0, (0,)))]
    if op == "^":
        if nums[0] > 0 or wild[1]:
            upper = Version(nums[0] + 1, 0, 0, (0,))
        elif nums[1] > 0 or wild[2]:
            upper = Version(0, nums[1] + 1, 0, (0,))
        else:
            upper = Version(0, 0, nums[2] + 1, (0,))
        return [_Bound(">=", base), _Bound("<", upper)]
    if op in (">", "<=") and any(wild):
        # ">1.x" is ">=2.0.0"; "<=1.2" is "<1.3.0".
        nxt = (
            Version(nums[0] + 1, 0, 0, (0,)) if wild[1] else Version(nums[0], nums[1] + 1, 0, (0,))
        )
        return [_Bound(">=" if op == ">" else "<", nxt)]
    return [_Bound(op, base)]


def check_component(name: str, field_name: str = "component") -> str:
    if not COMPONENT_NAME.match(name):
        raise InvalidArgument(
            field_name, f"{name!r}: a component is 1-32 of a-z, 0-9, _ starting with a letter"
        )
    return name


@dataclass(frozen=True, slots=True)
class Requirement:
    """``component`` must run a version in ``range`` (e.g. ``mcu >=1.4``)."""

    component: str
    range: VersionRange

    def __str__(self) -> str:
        return f"{self.component} {self.range}"


@dataclass(frozen=True, slots=True)
class Release:
    """One firmware image of one component, and what it needs of the other components."""

    component: str
    version: Version
    requires: tuple[Requirement, ...] = ()

    def unmet(self, combo: Combination) -> list[Requirement]:
        return [
            r
            for r in self.requires
            if r.component in combo.versions and not r.range.admits(combo.versions[r.component])
        ]


@dataclass(frozen=True, slots=True)
class Combination:
    """The version each component of a device runs; hashable, ordered by component name."""

    items: tuple[tuple[str, Version], ...]

    @classmethod
    def of(cls, versions: Mapping[str, Version]) -> Combination:
        return cls(tuple(sorted(versions.items())))

    @classmethod
    def parse(cls, versions: Mapping[str, str], field_name: str = "versions") -> Combination:
        out: dict[str, Version] = {}
        for name, text in versions.items():
            check_component(name, f"{field_name}[{name}]")
            out[name] = Version.parse(text, f"{field_name}[{name}]")
        return cls.of(out)

    @property
    def versions(self) -> dict[str, Version]:
        return dict(self.items)

    def components(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.items)

    def with_(self, component: str, version: Version) -> Combination:
        d = dict(self.items)
        d[component] = version
        return Combination.of(d)

    def without(self, component: str) -> tuple[tuple[str, Version], ...]:
        return tuple(i for i in self.items if i[0] != component)

    def difference(self, other: Combination) -> list[str]:
        a, b = dict(self.items), dict(other.items)
        return sorted(c for c in a.keys() | b.keys() if a.get(c) != b.get(c))

    def __str__(self) -> str:
        return " ".join(f"{c}={v}" for c, v in self.items)


class CombinationState(enum.Enum):
    CANDIDATE = "CANDIDATE"
    """Derived from the release constraints, not yet tested: never planned through."""
    KNOWN_GOOD = "KNOWN_GOOD"
    """Tested: devices may run it, and upgrade paths may pass through it."""
    RETIRED = "RETIRED"
    """Was good, withdrawn (e.g. a bug found later): no longer a step or a target."""


@dataclass(frozen=True, slots=True)
class DeviceType:
    """A hardware type: the components whose firmware is versioned."""

    KIND: ClassVar[str] = "device type"

    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    components: tuple[str, ...]

    def check_combination(self, combo: Combination, field_name: str = "versions") -> None:
        """Every component of the type, and nothing else."""
        have, want = set(combo.components()), set(self.components)
        problems = []
        for c in sorted(want - have):
            problems.append(FieldViolation(f"{field_name}[{c}]", "missing: the type has it"))
        for c in sorted(have - want):
            problems.append(
                FieldViolation(
                    f"{field_name}[{c}]", f"the type {self.name!r} has no such component"
                )
            )
        if problems:
            raise InvalidArgument.of(problems)


def check_components(components: Sequence[str], field_name: str = "components") -> tuple[str, ...]:
    if not components:
        raise InvalidArgument(field_name, "at least one component")
    if len(components) > MAX_COMPONENTS:
        raise InvalidArgument(field_name, f"at most {MAX_COMPONENTS}")
    for i, c in enumerate(components):
        check_component(c, f"{field_name}[{i}]")
    if len(set(components)) != len(components):
        raise InvalidArgument(field_name, "a component is named twice")
    return tuple(sorted(components))


def unmet_constraints(combo: Combination, releases: Iterable[Release]) -> list[str]:
    """Why ``combo`` breaks the constraints of the releases it runs (empty: it does not)."""
    by_key = {(r.component, r.version): r for r in releases}
    out = []
    for component, version in combo.items:
        rel = by_key.get((component, version))
        if rel is None:
            out.append(f"{component} {version} is not a release")
            continue
        out += [f"{component} {version} requires {req}" for req in rel.unmet(combo)]
    return out


def derive_combinations(
    components: Sequence[str], releases: Iterable[Release]
) -> list[Combination]:
    """Every combination of released versions that meets all the constraints of the releases
    it runs (the candidates an operator then tests and marks known-good). Built component by
    component, pruning as soon as a requirement between chosen components fails."""
    by_component: dict[str, list[Release]] = {c: [] for c in components}
    for r in releases:
        if r.component in by_component:
            by_component[r.component].append(r)
    order = sorted(components, key=lambda c: len(by_component[c]))
    out: list[Combination] = []

    def compatible(chosen: dict[str, Release], new: Release) -> bool:
        for req in new.requires:
            if req.component in chosen and not req.range.admits(chosen[req.component].version):
                return False
        for other in chosen.values():
            for req in other.requires:
                if req.component == new.component and not req.range.admits(new.version):
                    return False
        return True

    def walk(i: int, chosen: dict[str, Release]) -> None:
        if len(out) > MAX_COMBINATIONS:
            return
        if i == len(order):
            out.append(Combination.of({c: r.version for c, r in chosen.items()}))
            return
        for rel in sorted(by_component[order[i]], key=lambda r: r.version):
            if compatible(chosen, rel):
                chosen[order[i]] = rel
                walk(i + 1, chosen)
                del chosen[order[i]]

    walk(0, {})
    if len(out) > MAX_COMBINATIONS:
        raise FailedPrecondition(
            f"more than {MAX_COMBINATIONS} combinations meet the constraints: "
            "add them explicitly or constrain the releases",
            "combinations",
        )
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """Upgrade (or downgrade) one component; the device then runs ``result``."""

    component: str
    from_version: Version
    to_version: Version
    result: Combination


class NoUpgradePath(FailedPrecondition):
    """No sequence of single-component changes through known-good combinations exists."""


class UpgradePlanner:
    """Shortest single-component paths through a device type's known-good combinations."""

    def __init__(self, components: Sequence[str], known_good: Iterable[Combination]) -> None:
        self._components = tuple(sorted(components))
        self._good = frozenset(known_good)
        # Neighbours by "everything but one component": two combinations are one step apart
        # exactly when they share such a key (and differ).
        self._by_rest: dict[tuple[str, tuple[tuple[str, Version], ...]], list[Combination]] = {}
        for combo in self._good:
            for c in self._components:
                self._by_rest.setdefault((c, combo.without(c)), []).append(combo)
        self._to_target: dict[Combination, dict[Combination, int]] = {}
        self._next: dict[tuple[Combination, Combination], Step | None] = {}

    @property
    def known_good(self) -> frozenset[Combination]:
        return self._good

    def neighbours(self, combo: Combination) -> Iterable[tuple[str, Combination]]:
        for c in self._components:
            for other in self._by_rest.get((c, combo.without(c)), ()):
                if other != combo:
                    yield c, other

    def _distances(self, target: Combination) -> dict[Combination, int]:
        """Steps from every known-good combination to ``target`` (edges are symmetric, so a
        search outwards from the target)."""
        found = self._to_target.get(target)
        if found is None:
            found = {target: 0}
            todo = deque([target])
            while todo:
                x = todo.popleft()
                for _, y in self.neighbours(x):
                    if y not in found:
                        found[y] = found[x] + 1
                        todo.append(y)
            self._to_target[target] = found
        return found

    def _check(self, current: Combination, target: Combination) -> None:
        if set(current.components()) != set(self._components):
            raise InvalidArgument(
                "current",
                f"runs components {sorted(current.components())}, the type has "
                f"{list(self._components)}",
            )
        if target not in self._good:
            raise NoUpgradePath(f"the target {target} is not a known-good combination", "target")

    def next_step(self, current: Combination, target: Combination) -> Step | None:
        """The first step of a shortest path (None: the device runs the target). Among
        equally short paths: the one that changes the component first in name order, to the
        highest version (deterministic, and an upgrade rather than a downgrade)."""
        key = (current, target)
        if key in self._next:
            return self._next[key]
        self._check(current, target)
        if current == target:
            return None
        step = self._first_step(current, target)
        self._next[key] = step
        return step

    def _first_step(self, current: Combination, target: Combination) -> Step:
        dist = self._distances(target)
        best: tuple[int, str, Combination] | None = None
        for component, nxt in self._candidates(current):
            d = dist.get(nxt)
            if d is None:
                continue
            key_new = (d, component, nxt)
            if best is None or _better(key_new, best):
                best = key_new
        if best is None:
            raise self._no_path(current, target)
        _, component, nxt = best
        return Step(component, current.versions[component], nxt.versions[component], nxt)

    def _candidates(self, current: Combination) -> Iterable[tuple[str, Combination]]:
        """Known-good combinations one step from ``current`` (which need not be good
        itself: a device found running an untested combination is led back into the set)."""
        return self.neighbours(current)

    def plan(self, current: Combination, target: Combination) -> list[Step]:
        """The whole shortest path, step by step."""
        steps: list[Step] = []
        x = current
        while (step := self.next_step(x, target)) is not None:
            steps.append(step)
            x = step.result
        return steps

    def steps_needed(self, current: Combination, target: Combination) -> int | None:
        """Length of a shortest path, or None if there is none."""
        self._check(current, target)
        if current == target:
            return 0
        dist = self._distances(target)
        if current in dist:
            return dist[current]
        ds = [dist[n] for _, n in self._candidates(current) if n in dist]
        return min(ds) + 1 if ds else None

    def _no_path(self, current: Combination, target: Combination) -> NoUpgradePath:
        changed = current.difference(target)
        reachable = {n for _, n in self._candidates(current)}
        if not reachable:
            why = (
                f"no known-good combination is one component away from {current}: "
                "every single-component change leaves the known-good set"
            )
        else:
            why = (
                f"the known-good combinations reachable from {current} never lead to {target} "
                f"(components to change: {', '.join(changed)}): add or test an intermediate "
                "combination"
            )
        return NoUpgradePath(why, "target")


def _better(a: tuple[int, str, Combination], b: tuple[int, str, Combination]) -> bool:
    if a[0] != b[0]:
        return a[0] < b[0]
    if a[1] != b[1]:
        return a[1] < b[1]
    return a[2].versions[a[1]] > b[2].versions[b[1]]


def rollout_bucket(rollout_id: uuid.UUID, device_id: uuid.UUID) -> float:
    """A device's stable place in [0, 100) for a rollout's phases: phase k admits the devices
    below its percentage, so each phase includes the previous one and a device's phase does
    not change when the rollout is resumed."""
    h = hashlib.sha256(rollout_id.bytes + device_id.bytes).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * 100.0
