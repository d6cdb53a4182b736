"""Firmware domain: semantic versions, ranges, constraints, and the upgrade planner checked
against a brute-force search on random release graphs."""

from __future__ import annotations

import itertools
import uuid
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import FailedPrecondition, InvalidArgument
from domain.firmware import (
    Combination,
    NoUpgradePath,
    Release,
    Requirement,
    UpgradePlanner,
    Version,
    VersionRange,
    derive_combinations,
    rollout_bucket,
    unmet_constraints,
)

V = Version.parse


def test_semver_precedence_follows_the_spec() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.2.0",
        "1.10.0",
        "2.0.0",
    ]
    assert sorted(V(x) for x in reversed(ordered)) == [V(x) for x in ordered]
    assert V("1.0.0+build.5") == V("1.0.0")
    assert str(V("1.2.3-rc.1+b7")) == "1.2.3-rc.1+b7"


@pytest.mark.parametrize("bad", ["1.2", "01.2.3", "1.2.3-", "v1", "", "1.2.3.4", "a.b.c"])
def test_a_malformed_version_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Version.parse(bad, "release.version")
    assert err.value.violations[0].field == "release.version"


@pytest.mark.parametrize(
    ("text", "yes", "no"),
    [
        (">=1.4", ["1.4.0", "1.9.9", "2.0.0"], ["1.3.9", "1.4.0-rc.1"]),
        (">=1.4 <2", ["1.4.0", "1.99.0"], ["2.0.0", "2.0.0-rc.1", "1.3.0"]),
        (">=1.4, <2.0.0", ["1.5.0"], ["2.0.0"]),
        ("2.x", ["2.0.0", "2.7.1"], ["1.9.0", "3.0.0"]),
        ("2.*", ["2.3.0"], ["3.0.0"]),
        ("1.2.x", ["1.2.0", "1.2.9"], ["1.3.0"]),
        ("^1.4", ["1.4.0", "1.9.0"], ["2.0.0", "1.3.0"]),
        ("^0.3", ["0.3.0", "0.3.9"], ["0.4.0"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4"]),
        ("~1.4", ["1.4.0", "1.4.7"], ["1.5.0"]),
        ("=1.2.3", ["1.2.3"], ["1.2.4"]),
        ("1.2.3", ["1.2.3"], ["1.2.4"]),
        ("*", ["0.0.1", "9.9.9"], ["1.0.0-rc.1"]),
        ("<1.x || >=3", ["0.9.0", "3.0.0"], ["1.0.0", "2.5.0"]),
        (">1.x", ["2.0.0"], ["1.9.9"]),
        ("<=1.2", ["1.2.9"], ["1.3.0"]),
        (">=1.4.0-rc.1 <2", ["1.4.0-rc.1", "1.4.0-rc.2", "1.4.0"], ["1.5.0-rc.1"]),
    ],
)
def test_ranges_read_as_npm_does(text: str, yes: list[str], no: list[str]) -> None:
    r = VersionRange.parse(text)
    assert [x for x in yes if not r.admits(V(x))] == []
    assert [x for x in no if r.admits(V(x))] == []


@pytest.mark.parametrize("bad", ["", ">=", "1.2.3.4", ">=abc", "~>1"])
def test_an_unreadable_range_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        VersionRange.parse(bad, "requires[0].range")
    assert err.value.violations[0].field == "requires[0].range"


def _rel(component: str, version: str, *requires: tuple[str, str]) -> Release:
    return Release(
        component,
        V(version),
        tuple(Requirement(c, VersionRange.parse(r)) for c, r in requires),
    )


def _combo(**versions: str) -> Combination:
    return Combination.parse(versions)


RELEASES = [
    _rel("mcu", "1.3.0"),
    _rel("mcu", "1.4.0"),
    _rel("mcu", "2.0.0", ("ble", ">=2")),
    _rel("ble", "1.0.0", ("mcu", "<2")),
    _rel("ble", "2.0.0", ("mcu", ">=1.4")),
]


def test_constraints_name_what_breaks_them() -> None:
    assert unmet_constraints(_combo(mcu="1.3.0", ble="2.0.0"), RELEASES) == [
        "ble 2.0.0 requires mcu >=1.4"
    ]
    assert unmet_constraints(_combo(mcu="1.4.0", ble="2.0.0"), RELEASES) == []
    assert unmet_constraints(_combo(mcu="9.0.0", ble="2.0.0"), RELEASES) == [
        "mcu 9.0.0 is not a release"
    ]


def test_derived_combinations_are_exactly_those_meeting_every_constraint() -> None:
    derived = set(derive_combinations(["mcu", "ble"], RELEASES))
    brute = {
        Combination.of({"mcu": m.version, "ble": b.version})
        for m in RELEASES
        if m.component == "mcu"
        for b in RELEASES
        if b.component == "ble"
    }
    assert derived == {c for c in brute if not unmet_constraints(c, RELEASES)}
    assert _combo(mcu="2.0.0", ble="1.0.0") not in derived


def test_the_seed_example_goes_through_the_intermediate_combination() -> None:
    """ble 2.x requires mcu >= 1.4 and mcu 2 requires ble 2: from mcu 1.3 / ble 1 to mcu 2 /
    ble 2 the only safe order is mcu 1.4, then ble 2, then mcu 2."""
    good = derive_combinations(["mcu", "ble"], RELEASES)
    planner = UpgradePlanner(["mcu", "ble"], good)
    steps = planner.plan(_combo(mcu="1.3.0", ble="1.0.0"), _combo(mcu="2.0.0", ble="2.0.0"))
    assert [(s.component, str(s.to_version)) for s in steps] == [
        ("mcu", "1.4.0"),
        ("ble", "2.0.0"),
        ("mcu", "2.0.0"),
    ]
    assert all(s.result in planner.known_good for s in steps)


def test_no_path_says_why() -> None:
    good = [_combo(mcu="1.3.0", ble="1.0.0"), _combo(mcu="2.0.0", ble="2.0.0")]
    planner = UpgradePlanner(["mcu", "ble"], good)
    with pytest.raises(NoUpgradePath) as err:
        planner.next_step(good[0], good[1])
    assert "every single-component change leaves the known-good set" in err.value.reason
    with pytest.raises(NoUpgradePath) as err2:
        planner.next_step(good[0], _combo(mcu="1.4.0", ble="1.0.0"))
    assert "not a known-good combination" in err2.value.reason
    assert isinstance(err2.value, FailedPrecondition)
    with pytest.raises(InvalidArgument):
        planner.next_step(_combo(mcu="1.3.0"), good[1])


def test_a_device_on_an_untested_combination_is_led_back_into_the_set() -> None:
    good = [_combo(mcu="1.4.0", ble="1.0.0"), _combo(mcu="1.4.0", ble="2.0.0")]
    planner = UpgradePlanner(["mcu", "ble"], good)
    stray = _combo(mcu="1.3.0", ble="1.0.0")
    assert stray not in planner.known_good
    assert [str(s.result) for s in planner.plan(stray, good[1])] == [
        "ble=1.0.0 mcu=1.4.0",
        "ble=2.0.0 mcu=1.4.0",
    ]
    assert planner.steps_needed(stray, good[1]) == 2


# --- property: the planner against brute force on random release graphs -------------------


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], list[Combination], Combination, Combination]:
    n_comp = draw(st.integers(1, 3))
    components = ["c" + str(i) for i in range(n_comp)]
    versions = {c: [V(f"{i}.0.0") for i in range(draw(st.integers(1, 4)))] for c in components}
    universe = [
        Combination.of(dict(zip(components, vs, strict=True)))
        for vs in itertools.product(*(versions[c] for c in components))
    ]
    good = draw(st.lists(st.sampled_from(universe), min_size=1, unique=True))
    current = draw(st.sampled_from(universe))
    target = draw(st.sampled_from(good))
    return components, good, current, target


def _brute_force(good: list[Combination], current: Combination, target: Combination) -> int | None:
    """Shortest number of single-component changes, every intermediate combination known-good:
    breadth-first over ALL sequences, without the planner's index."""
    goodset = set(good)
    seen = {current}
    todo = deque([(current, 0)])
    while todo:
        x, d = todo.popleft()
        if x == target:
            return d
        for y in goodset:
            if y not in seen and len(x.difference(y)) == 1:
                seen.add(y)
                todo.append((y, d + 1))
    return None


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_planner_matches_brute_force(
    g: tuple[list[str], list[Combination], Combination, Combination],
) -> None:
    components, good, current, target = g
    planner = UpgradePlanner(components, good)
    want = _brute_force(good, current, target)
    assert planner.steps_needed(current, target) == want
    if want is None:
        with pytest.raises(NoUpgradePath):
            planner.plan(current, target)
        return
    steps = planner.plan(current, target)
    assert len(steps) == want
    x = current
    for s in steps:
        assert x.difference(s.result) == [s.component]
        assert s.from_version == x.versions[s.component]
        assert s.result in set(good)
        x = s.result
    assert x == target


def test_rollout_buckets_are_stable_and_spread() -> None:
    r = uuid.uuid4()
    devices = [uuid.uuid4() for _ in range(4000)]
    buckets = [rollout_bucket(r, d) for d in devices]
    assert buckets == [rollout_bucket(r, d) for d in devices]
    assert all(0 <= b < 100 for b in buckets)
    share = sum(b < 10 for b in buckets) / len(buckets)
    assert 0.07 < share < 0.13
