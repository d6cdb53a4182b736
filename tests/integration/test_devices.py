"""Devices and firmware over real gRPC and PostgreSQL: the seed's upgrade path, a throttled
rollout whose devices check in all at once (the per-group limit holds under the race),
profiles with sealed secrets, the rollout watch stream, and the errors a client sees."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from tests.integration.conftest import Stack
from tracker.v1 import device_query_service_pb2 as q
from tracker.v1 import device_query_service_pb2_grpc as q_grpc
from tracker.v1 import device_service_pb2 as s
from tracker.v1 import device_service_pb2_grpc as s_grpc
from tracker.v1 import devices_pb2 as pb
from tracker.v1 import resources_pb2 as rpb
from tracker.v1 import setup_service_pb2 as setup

pytestmark = pytest.mark.integration

CELLS = 3
PER_CELL = 8
LIMIT = 2


def V(**versions: str) -> list[pb.ComponentVersion]:
    return [pb.ComponentVersion(component=c, version=v) for c, v in sorted(versions.items())]


def as_dict(items: list[pb.ComponentVersion]) -> dict[str, str]:
    return {x.component: x.version for x in items}


async def _catalogue(
    stack: Stack,
) -> tuple[s_grpc.DeviceServiceStub, q_grpc.DeviceQueryServiceStub, str, str]:
    dev = s_grpc.DeviceServiceStub(stack.collector_channel)
    devq = q_grpc.DeviceQueryServiceStub(stack.query_channel)
    client = (
        await stack.setup.CreateClient(
            setup.CreateClientRequest(client=rpb.Client(display_name="Fleet Co"))
        )
    ).client
    dtype = (
        await dev.CreateDeviceType(
            s.CreateDeviceTypeRequest(
                device_type=pb.DeviceType(
                    client_id=client.id, name="Gateway G2", components=["mcu", "ble"]
                )
            )
        )
    ).device_type
    for component, version, requires in (
        ("mcu", "1.3.0", []),
        ("mcu", "1.4.0", []),
        ("mcu", "2.0.0", [("ble", ">=2")]),
        ("ble", "1.0.0", [("mcu", "<2")]),
        ("ble", "2.0.0", [("mcu", ">=1.4")]),
    ):
        await dev.CreateFirmwareRelease(
            s.CreateFirmwareReleaseRequest(
                firmware_release=pb.FirmwareRelease(
                    device_type_id=dtype.id,
                    component=component,
                    version=version,
                    requires=[pb.Requirement(component=c, range=r) for c, r in requires],
                )
            )
        )
    added = await dev.DeriveCombinations(s.DeriveCombinationsRequest(device_type_id=dtype.id))
    assert added.added_count == 4
    catalog = await devq.GetFirmwareCatalog(
        q.GetFirmwareCatalogRequest(device_type_id=dtype.id, state=pb.COMBINATION_STATE_CANDIDATE)
    )
    tested = await dev.SetCombinations(
        s.SetCombinationsRequest(
            device_type_id=dtype.id,
            combinations=list(catalog.combinations),
            state=pb.COMBINATION_STATE_KNOWN_GOOD,
        )
    )
    assert tested.changed_count == 4
    return dev, devq, client.id, dtype.id


async def test_plan_and_its_errors(stack: Stack) -> None:
    dev, devq, _, type_id = await _catalogue(stack)
    plan = await devq.PlanUpgrade(
        q.PlanUpgradeRequest(
            device_type_id=type_id,
            current=V(mcu="1.3.0", ble="1.0.0"),
            target=V(mcu="2.0.0", ble="2.0.0"),
        )
    )
    assert [(x.component, x.to_version) for x in plan.steps] == [
        ("mcu", "1.4.0"),
        ("ble", "2.0.0"),
        ("mcu", "2.0.0"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await devq.PlanUpgrade(
            q.PlanUpgradeRequest(
                device_type_id=type_id,
                current=V(mcu="1.3.0", ble="1.0.0"),
                target=V(mcu="2.0.0", ble="1.0.0"),
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not a known-good combination" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err2:
        await devq.PlanUpgrade(
            q.PlanUpgradeRequest(
                device_type_id=type_id, current=V(mcu="1.3", ble="1.0.0"), target=V(mcu="2.0.0")
            )
        )
    assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "current[1].version" in str(err2.value.trailing_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as err3:
        await dev.SetCombinations(
            s.SetCombinationsRequest(
                device_type_id=type_id,
                combinations=[pb.Combination(versions=V(mcu="1.3.0", ble="2.0.0"))],
                state=pb.COMBINATION_STATE_KNOWN_GOOD,
            )
        )
    assert err3.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ble 2.0.0 requires mcu >=1.4" in (err3.value.details() or "")


async def test_a_throttled_rollout_over_grpc_to_completion(stack: Stack) -> None:
    dev, devq, client_id, type_id = await _catalogue(stack)
    await dev.CreateDeviceProfile(
        s.CreateDeviceProfileRequest(
            device_profile=pb.DeviceProfile(
                name="fleet",
                scope=pb.PROFILE_SCOPE_CLIENT,
                scope_id=client_id,
                values=[pb.ProfileEntry(key="interval_s", value="300")],
                secrets=[pb.ProfileEntry(key="wifi_password", value="correct horse")],
                services=[pb.ServiceSwitch(name="firmware", enabled=True)],
            )
        )
    )
    start = V(mcu="1.4.0", ble="1.0.0")
    devices = []
    for i in range(CELLS * PER_CELL):
        d = await dev.RegisterDevice(
            s.RegisterDeviceRequest(
                device=pb.Device(
                    client_id=client_id,
                    device_type_id=type_id,
                    serial=f"G2-{i:03d}",
                    group_key=f"cell-{i % CELLS}",
                    versions=start,
                )
            )
        )
        devices.append(d.device)
    rollout = (
        await dev.CreateRollout(
            s.CreateRolloutRequest(
                rollout=pb.Rollout(
                    device_type_id=type_id,
                    name="ble 2 then mcu 2",
                    target=V(mcu="2.0.0", ble="2.0.0"),
                    policy=pb.RolloutPolicy(
                        phases=[50, 100], max_in_flight_per_group=LIMIT, min_outcomes=100
                    ),
                )
            )
        )
    ).rollout
    assert rollout.pending_count == CELLS * PER_CELL
    watch = devq.WatchRollout(q.WatchRolloutRequest(rollout_id=rollout.id))
    first = await watch.read()
    assert first.rollout.state == pb.ROLLOUT_STATE_RUNNING

    versions = {d.id: start for d in devices}
    digests = dict.fromkeys(versions, "")
    group = {d.id: d.group_key for d in devices}
    rounds = 0
    while True:
        rounds += 1
        assert rounds < 60
        # Every device checks in at the same moment: the group limit must hold anyway.
        answers = await asyncio.gather(
            *(
                dev.CheckIn(
                    s.CheckInRequest(device_id=d, versions=versions[d], profile_digest=digests[d])
                )
                for d in versions
            )
        )
        in_flight = Counter(
            group[d] for d, a in zip(versions, answers, strict=True) if a.HasField("next_step")
        )
        assert all(n <= LIMIT for n in in_flight.values()), in_flight
        for d, a in zip(list(versions), answers, strict=True):
            if a.profile_changed:
                assert {e.key: e.value for e in a.profile.secrets} == {
                    "wifi_password": "correct horse"
                }
                digests[d] = a.profile.digest
            if a.HasField("next_step"):
                versions[d] = list(a.next_step.result)  # the device installs it
        state = (await devq.GetRollout(q.GetRolloutRequest(id=rollout.id))).rollout
        if state.state != pb.ROLLOUT_STATE_RUNNING:
            break
    assert state.state == pb.ROLLOUT_STATE_COMPLETED, state
    assert state.done_count == CELLS * PER_CELL
    assert all(as_dict(v) == {"mcu": "2.0.0", "ble": "2.0.0"} for v in versions.values())
    seen = [first.rollout]
    async for update in watch:
        seen.append(update.rollout)
    assert seen[-1].state == pb.ROLLOUT_STATE_COMPLETED
    assert [x.phase for x in seen] == sorted(x.phase for x in seen)
    # The secret is sealed: the query server names it, never shows it.
    resolved = await devq.GetResolvedProfile(q.GetResolvedProfileRequest(device_id=devices[0].id))
    assert [(e.key, e.value) for e in resolved.profile.secrets] == [("wifi_password", "")]
    assert resolved.profile.digest == digests[devices[0].id]
    got = await devq.GetDevice(q.GetDeviceRequest(id=devices[0].id))
    assert as_dict(list(got.device.versions)) == {"mcu": "2.0.0", "ble": "2.0.0"}
    assert got.device.HasField("last_check_in_time")


async def test_failures_pause_and_abort_frees_the_devices(stack: Stack) -> None:
    dev, devq, client_id, type_id = await _catalogue(stack)
    start = V(mcu="1.4.0", ble="1.0.0")
    ids = []
    for i in range(4):
        d = await dev.RegisterDevice(
            s.RegisterDeviceRequest(
                device=pb.Device(
                    client_id=client_id,
                    device_type_id=type_id,
                    serial=f"D{i}",
                    group_key="site",
                    versions=start,
                )
            )
        )
        ids.append(d.device.id)
    policy = pb.RolloutPolicy(
        phases=[100], min_outcomes=2, pause_failure_rate=0.5, abort_failure_rate=0.9
    )
    target = V(mcu="1.4.0", ble="2.0.0")
    r = (
        await dev.CreateRollout(
            s.CreateRolloutRequest(
                rollout=pb.Rollout(device_type_id=type_id, name="ble", target=target, policy=policy)
            )
        )
    ).rollout
    for d in ids[:2]:
        a = await dev.CheckIn(s.CheckInRequest(device_id=d, versions=start))
        assert a.next_step.to_version == "2.0.0"
    await dev.CheckIn(
        s.CheckInRequest(
            device_id=ids[0], versions=start, step_failed=True, failure_reason="flash write error"
        )
    )
    await dev.CheckIn(s.CheckInRequest(device_id=ids[1], versions=target))
    now = (await devq.GetRollout(q.GetRolloutRequest(id=r.id))).rollout
    assert now.state == pb.ROLLOUT_STATE_PAUSED
    assert "1 of 2 steps failed" in now.reason
    # Paused: no new steps.
    assert not (await dev.CheckIn(s.CheckInRequest(device_id=ids[3], versions=start))).HasField(
        "next_step"
    )
    failed = await devq.ListRolloutDevices(q.ListRolloutDevicesRequest(rollout_id=r.id))
    assert {x.last_error for x in failed.rollout_devices if x.attempts} == {"flash write error"}
    resumed = await dev.ResumeRollout(s.ResumeRolloutRequest(rollout_id=r.id))
    assert resumed.rollout.state == pb.ROLLOUT_STATE_RUNNING
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await dev.CreateRollout(
            s.CreateRolloutRequest(
                rollout=pb.Rollout(device_type_id=type_id, name="again", target=target)
            )
        )
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await dev.AbortRollout(s.AbortRolloutRequest(rollout_id=r.id, reason="bad image"))
    again = await dev.CreateRollout(
        s.CreateRolloutRequest(
            rollout=pb.Rollout(device_type_id=type_id, name="again", target=target)
        )
    )
    assert again.rollout.pending_count == 4
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await dev.ResumeRollout(s.ResumeRolloutRequest(rollout_id=r.id))
    assert gone.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_nul_characters_are_refused_by_field_not_stored(stack: Stack) -> None:
    """PostgreSQL text and jsonb cannot hold NUL: the fuzz suite found one reaching storage
    as INTERNAL; every request is checked first, the offending field named."""
    dev, _, client_id, _ = await _catalogue(stack)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await dev.CreateDeviceProfile(
            s.CreateDeviceProfileRequest(
                device_profile=pb.DeviceProfile(
                    name="p",
                    scope=pb.PROFILE_SCOPE_CLIENT,
                    scope_id=client_id,
                    values=[
                        pb.ProfileEntry(key="ok", value="a"),
                        pb.ProfileEntry(key="k", value="a\x00b"),
                    ],
                )
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "device_profile.values[1].value" in str(err.value.trailing_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as err2:
        await dev.PauseRollout(s.PauseRolloutRequest(rollout_id=client_id, reason="x\x00"))
    assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
